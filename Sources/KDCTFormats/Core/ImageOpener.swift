/// State carried while opening an image and the files it references: options, chain depth, files already open.
final class OpenContext: Sendable {
    /// The options the outermost open was called with.
    let options: OpenOptions
    /// How many references were followed to reach the image being opened (0 for the top image).
    let depth: Int
    /// Identities of the files on the path from the top image, to refuse loops.
    let visited: Set<FileIdentity>

    init(options: OpenOptions, depth: Int, visited: Set<FileIdentity>) {
        self.options = options
        self.depth = depth
        self.visited = visited
    }

    /// The safety limits in force.
    var limits: ImageLimits { options.limits }

    /// Resolves `name` (stored in the image at `imagePath`) under the reference policy. Returns nil when references
    /// are only reported, not opened (`info`); throws when the policy refuses it or it does not exist.
    func resolveReference(_ name: String, kind: ImageReference.Kind, from imagePath: String) throws -> String? {
        guard options.openReferences else { return nil }
        return try ReferenceResolver.resolve(name, kind: kind, relativeTo: imagePath,
                                             policy: options.effectiveReferencePolicy)
    }

    /// Opens the image named `name` in the image at `imagePath` (a backing file or parent), under the reference
    /// policy, chain depth limit and loop check. Returns nil when references are only reported (`info`).
    /// `format` is the format the referring image declares for it, if any (checked against the content).
    func openReference(_ name: String, kind: ImageReference.Kind, from imagePath: String,
                              format: ImageFormat? = nil) throws -> (any BlockDevice)? {
        guard let path = try resolveReference(name, kind: kind, from: imagePath) else { return nil }
        return try openResolved(path, kind: kind, from: imagePath, format: format)
    }

    /// Opens an already-resolved path as a layer below the current image (depth and loop checks apply).
    /// Used by readers that locate parents themselves (VDI by UUID, VHD locators).
    func openResolved(_ path: String, kind: ImageReference.Kind, from imagePath: String,
                             format: ImageFormat? = nil) throws -> any BlockDevice {
        if depth + 1 > options.limits.maxChainDepth {
            throw KDCTError.limit("chain depth", value: UInt64(depth + 1), limit: UInt64(options.limits.maxChainDepth),
                                  file: imagePath)
        }
        var childOptions = options
        childOptions.format = format
        let file = try ReadOnlyFile(path: path)
        if visited.contains(file.identity) {
            throw KDCTError(.corrupt, "\(kind.rawValue) \(path) loops back to an image already in the chain",
                            file: imagePath, field: kind.rawValue)
        }
        let child = OpenContext(options: childOptions, depth: depth + 1, visited: visited.union([file.identity]))
        do {
            return try ImageOpener.open(file: file, context: child)
        } catch let error as KDCTError {
            // The error names the file at fault; note which image referred to it, so the one line names both.
            throw error.referred(by: imagePath, as: kind)
        }
    }

    /// Opens a file that is part of the same image (a VMDK extent) under the reference policy; returns nil when
    /// references are only reported.
    func openComponentFile(_ name: String, from imagePath: String) throws -> ReadOnlyFile? {
        guard let path = try resolveReference(name, kind: .extent, from: imagePath) else { return nil }
        return try ReadOnlyFile(path: path)
    }
}

/// Opens images: probes the format, applies the declared-format and strict-mode rules, and hands the file to the
/// format's reader.
public enum ImageOpener {
    /// Opens the image at `path` read-only.
    public static func open(_ path: String, options: OpenOptions = OpenOptions()) throws -> any BlockDevice {
        if let destination = TemporaryOutputName.destinationName(of: FilePaths.lastComponent(of: path)) {
            throw KDCTError(.invalidArgument,
                            "is the temporary file of an unfinished conversion to \(destination), not an image",
                            file: path)
        }
        return try open(file: ReadOnlyFile(path: path), options: options)
    }

    /// Opens an already-open file as the top image (an appliance's disk inside its archive, for example).
    package static func open(file: ReadOnlyFile, options: OpenOptions) throws -> any BlockDevice {
        try open(file: file, context: OpenContext(options: options, depth: 0, visited: [file.identity]))
    }

    /// True when `format` has a reader (not only recognition).
    public static func canRead(_ format: ImageFormat) -> Bool { FormatRegistry.reader(for: format) != nil }

    /// Opens the image at `path` only to describe it: referenced files are reported, not opened.
    public static func inspect(_ path: String, options: OpenOptions = OpenOptions()) throws -> ImageInfo {
        var options = options
        options.openReferences = false
        return try open(path, options: options).info
    }

    /// Decides the format of `file` from its content and the declared format.
    package static func detectFormat(_ file: ReadOnlyFile, options: OpenOptions) throws -> ImageFormat {
        let probe = try FormatProbe.probe(file)
        let detected = probe.format
        if options.untrusted {
            // A raw disk (no format) or a fixed VHD (guest data at the start) may hold a partition table or an ISO
            // file system; behind any other format's header such a signature makes the file a polyglot.
            var signatures = probe.matches.map(\.rawValue)
            if !probe.matches.isEmpty && !probe.guestDataAtStart { signatures += probe.foreignSignatures }
            if signatures.count > 1 {
                throw KDCTError(.invalidFormat,
                                "content matches more than one format (\(signatures.joined(separator: ", "))); refused in strict mode",
                                file: file.path, field: "format")
            }
        }
        if let declared = options.format, declared != detected {
            throw KDCTError(.invalidFormat,
                            "declared format \(declared) but the content is \(detected == .raw ? "not a known image format (raw)" : detected.rawValue)",
                            file: file.path, field: "format")
        }
        if detected == .raw {
            let ext = FilePaths.fileExtension(of: file.path)
            if let claimed = ImageFormat.allCases.first(where: { $0.fileExtensions.contains(ext) }), options.format != .raw {
                throw KDCTError(.invalidFormat,
                                "the name says \(claimed) (.\(ext)) but the content matches no image format",
                                file: file.path, field: "format")
            }
        }
        return detected
    }

    /// Opens an already-open file within `context`.
    static func open(file: ReadOnlyFile, context: OpenContext) throws -> any BlockDevice {
        do {
            let format = try detectFormat(file, options: context.options)
            guard let reader = FormatRegistry.reader(for: format) else {
                throw KDCTError(.unsupported, "recognised as \(format.rawValue.uppercased()), not supported yet",
                                file: file.path, field: "format")
            }
            let device = try reader(file, context)
            if device.virtualSize > context.limits.maxVirtualSize {
                throw KDCTError.limit("virtual size", value: device.virtualSize, limit: context.limits.maxVirtualSize,
                                      file: file.path)
            }
            return device
        } catch let error as KDCTError {
            throw error.inFile(file.path)
        }
    }
}
