/// Windows path names stored in VHD and VHDX parent locators, converted to what can be tried on this machine.
enum WindowsPath {
    /// A stored path name, classified.
    struct Converted: Sendable, Equatable {
        /// A path usable here: relative (`/`-separated, `.` components dropped) or POSIX absolute; nil when the
        /// name only means something on Windows (drive letter, UNC share, volume GUID).
        var localPath: String?
        /// True for a drive-letter, UNC, `\\?\`, volume-GUID or root-relative Windows path.
        var isWindowsAbsolute: Bool
        /// The last path component (`parent.vhdx`), empty when there is none.
        var fileName: String
    }

    /// Converts a stored name: `\\?\` and `\\.\` prefixes are stripped, `\` becomes `/`, `.\` components are
    /// dropped. `..` components are kept (the reference policy decides about them).
    static func convert(_ stored: String) -> Converted {
        var name = stored
        while name.hasSuffix("\0") { name.removeLast() }
        var windowsAbsolute = false
        for prefix in ["\\\\?\\", "\\\\.\\", "//?/", "//./"] where name.hasPrefix(prefix) {
            name.removeFirst(prefix.count)
            windowsAbsolute = true
            break
        }
        if name.hasPrefix("\\") || name.lowercased().hasPrefix("volume{") || name.hasPrefix("UNC\\") {
            windowsAbsolute = true
        }
        var pathPart = Substring(name)
        if let first = name.unicodeScalars.first, name.unicodeScalars.count >= 2, first.isASCII,
           first.properties.isAlphabetic, name.unicodeScalars.dropFirst().first == ":" {
            windowsAbsolute = true  // C:\dir\file or C:file
            pathPart = name.dropFirst(2)
        }
        let components = pathPart.split(omittingEmptySubsequences: true) { $0 == "\\" || $0 == "/" }.map(String.init)
        let fileName = components.last ?? ""
        if windowsAbsolute {
            return Converted(localPath: nil, isWindowsAbsolute: true, fileName: fileName)
        }
        if name.hasPrefix("/") {
            return Converted(localPath: "/" + components.joined(separator: "/"), isWindowsAbsolute: false, fileName: fileName)
        }
        let kept = components.filter { $0 != "." }
        return Converted(localPath: kept.isEmpty ? nil : kept.joined(separator: "/"), isWindowsAbsolute: false,
                         fileName: fileName)
    }

    /// The POSIX path of a `file://` URL (`file://localhost/Users/a%20b/p.vhd` → `/Users/a b/p.vhd`), or nil.
    static func pathFromFileURL(_ url: String) -> String? {
        guard url.lowercased().hasPrefix("file://") else { return nil }
        let rest = url.dropFirst("file://".count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let encoded = Array(rest[slash...].utf8)
        var bytes: [UInt8] = []
        var i = 0
        while i < encoded.count {
            if encoded[i] == UInt8(ascii: "%"), i + 2 < encoded.count,
               let value = UInt8(String(decoding: encoded[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) {
                bytes.append(value)
                i += 3
            } else {
                bytes.append(encoded[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// One name under which an image says its parent can be found.
struct ParentCandidate: Sendable, Equatable {
    /// Where the name comes from (`W2ru locator`, `relative_path`, `parent name`...).
    var source: String
    /// The name exactly as stored in the image.
    var stored: String
    /// The path tried on this machine, nil when the stored name cannot name a local file.
    var path: String?
    /// Why a name cannot be tried, when `path` is nil.
    var unusableReason: String?

    /// A candidate tried as `path`.
    init(source: String, stored: String, path: String?, unusableReason: String? = nil) {
        self.source = source
        self.stored = stored
        self.path = path
        self.unusableReason = unusableReason
    }

    /// Candidates for stored names in priority order: each name converted (Windows paths as described in
    /// `WindowsPath`), then, for every name that has directories or is absolute, its bare file name (looked for
    /// in the directory of the child), duplicates dropped.
    static func list(_ names: [(source: String, stored: String, isPOSIX: Bool)]) -> [ParentCandidate] {
        var primary: [ParentCandidate] = []
        var fallback: [ParentCandidate] = []
        for (source, stored, isPOSIX) in names where !stored.isEmpty {
            let converted: WindowsPath.Converted
            if isPOSIX {
                let components = stored.split(separator: "/").map(String.init)
                converted = WindowsPath.Converted(localPath: stored, isWindowsAbsolute: false,
                                                  fileName: components.last ?? "")
            } else {
                converted = WindowsPath.convert(stored)
            }
            if let path = converted.localPath {
                primary.append(ParentCandidate(source: source, stored: stored, path: path))
            } else {
                primary.append(ParentCandidate(source: source, stored: stored, path: nil,
                                               unusableReason: converted.isWindowsAbsolute
                                                   ? "a Windows absolute path, meaningless on this machine"
                                                   : "an empty path"))
            }
            if !converted.fileName.isEmpty, converted.fileName != converted.localPath {
                fallback.append(ParentCandidate(source: "file name of \(source)", stored: stored, path: converted.fileName))
            }
        }
        var seen = Set<String>()
        var seenUnusable = Set<String>()
        var result: [ParentCandidate] = []
        for candidate in primary + fallback {
            if let path = candidate.path {
                if seen.contains(path) { continue }
                seen.insert(path)
            } else {
                if seenUnusable.contains(candidate.stored) { continue }
                seenUnusable.insert(candidate.stored)
            }
            result.append(candidate)
        }
        return result
    }
}

/// Finds and opens the parent of a differencing disk from its candidate names, under the reference policy.
enum ParentFinder {
    /// Tries `candidates` in order through `context` (reference policy, chain depth, loop checks) and returns the
    /// first that opens and passes `verify` (nil: accepted; otherwise the reason it is not the parent).
    ///
    /// When none does, the error names the parent (`parentName`) and every candidate with its outcome: kind
    /// `notFound` when no candidate exists, `referenceRefused` when one exists but the policy refused it, and
    /// `corrupt` when files were found but none is the parent the child was made from.
    static func open(_ candidates: [ParentCandidate], parentName: String, imagePath: String, context: OpenContext,
                     format: ImageFormat, verify: (any BlockDevice) -> String?) throws
        -> (device: any BlockDevice, candidate: ParentCandidate, resolvedPath: String) {
        var attempts: [String] = []
        var refusedExisting = false
        var mismatched = false
        let directory = FilePaths.directory(of: imagePath)
        for candidate in candidates {
            let label = "\(candidate.source) \"\(candidate.stored)\""
            guard let path = candidate.path else {
                attempts.append("\(label): \(candidate.unusableReason ?? "unusable")")
                continue
            }
            let shown = path == candidate.stored ? "" : " as \(path)"
            let resolved: String
            do {
                guard let found = try context.resolveReference(path, kind: .parent, from: imagePath) else {
                    throw KDCTError(.invalidArgument, "references are not opened")
                }
                resolved = found
            } catch let error as KDCTError {
                if error.code == .referenceRefused, FilePaths.exists(FilePaths.join(directory, path)) {
                    refusedExisting = true
                }
                attempts.append("\(label)\(shown): \(error.message)")
                continue
            }
            let device = try context.openResolved(resolved, kind: .parent, from: imagePath, format: format)
            if let mismatch = verify(device) {
                mismatched = true
                attempts.append("\(label)\(shown): \(resolved) is not the parent (\(mismatch))")
                continue
            }
            return (device, candidate, resolved)
        }
        let kind: KDCTError.Code
        if mismatched {
            kind = .corrupt
        } else if refusedExisting || context.options.effectiveReferencePolicy == .none {
            kind = .referenceRefused
        } else {
            kind = .notFound
        }
        let what = kind == .corrupt ? "no file found is the parent disk" : "parent disk not found"
        let tried = attempts.isEmpty ? "the image names no parent location" : "tried " + attempts.joined(separator: "; ")
        throw KDCTError(kind, "\(what) \"\(parentName)\": \(tried)", file: imagePath, field: "parent")
    }
}
