/// A destination path as the user gave it and what it names once its symlinks are followed.
///
/// A destination is the user's data: a symlink is resolved and the rules apply to what it leads to (the link
/// itself is never replaced), a block device is written in place (never unlinked or replaced by a file), and
/// anything else that is not a regular file is refused.
public struct DestinationPath: Sendable {
    /// What the resolved path is.
    public enum Kind: Sendable, Equatable {
        /// Nothing exists there yet (a dangling link's target counts as missing).
        case missing
        /// A regular file.
        case regularFile(FileStatus)
        /// A block device (LVM volume, LUN, `/dev/nbdN`, loop device).
        case blockDevice(FileStatus)
    }

    /// Links followed at most, as the kernel (`MAXSYMLINKS`).
    static let maxLinks = 40

    /// The path as given.
    public let given: String
    /// The path after following symlinks (canonical when it exists).
    public let resolved: String
    /// What is there.
    public let kind: Kind

    /// True when `given` is a symlink.
    public var isLink: Bool { FilePaths.status(given)?.kind == .symbolicLink }

    /// True when something exists at the resolved path.
    public var exists: Bool { kind != .missing }

    /// Follows `path`'s symlinks and classifies what they lead to. Directories, character devices, FIFOs and
    /// sockets are refused (`invalidArgument`), as is a link loop.
    public static func inspect(_ path: String) throws -> DestinationPath {
        guard !path.isEmpty else { throw KDCTError(.invalidArgument, "empty destination path") }
        var current = path
        for _ in 0...maxLinks {
            guard let status = FilePaths.status(current) else {
                // A missing name (possibly a dangling link's target): resolve its folder, keep its name.
                let folder = FilePaths.directory(of: current)
                let resolved = FilePaths.canonical(folder).map { FilePaths.join($0, FilePaths.lastComponent(of: current)) }
                return DestinationPath(given: path, resolved: resolved ?? current, kind: .missing)
            }
            let through = current == path ? "" : " (where the link \(path) leads)"
            switch status.kind {
            case .symbolicLink:
                guard let target = FilePaths.readLink(current) else {
                    throw KDCTError(.io, "cannot read the symbolic link \(current)", file: path)
                }
                current = target.hasPrefix("/") ? target : FilePaths.join(FilePaths.directory(of: current), target)
                continue
            case .regularFile:
                return DestinationPath(given: path, resolved: FilePaths.canonical(current) ?? current,
                                       kind: .regularFile(status))
            case .blockDevice:
                return DestinationPath(given: path, resolved: FilePaths.canonical(current) ?? current,
                                       kind: .blockDevice(status))
            case .directory:
                throw KDCTError(.invalidArgument, "destination is a directory\(through)", file: path)
            case .characterDevice:
                throw KDCTError(.invalidArgument,
                                "destination is a character device\(through); outputs are files and block devices",
                                file: path)
            case .fifo, .socket, .other:
                throw KDCTError(.invalidArgument,
                                "destination is a FIFO or socket\(through); outputs are files and block devices",
                                file: path)
            }
        }
        throw KDCTError(.invalidArgument, "too many levels of symbolic links", file: path)
    }
}

/// The hidden name an unfinished output has beside its destination: `.NAME.kdct-XXXXXXXX.part`.
public enum TemporaryOutputName {
    private static let marker = ".kdct-"
    private static let suffix = ".part"
    private static let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
    private static let randomLength = 8

    /// A fresh temporary path for the output `finalPath`, in the same folder.
    public static func make(for finalPath: String) -> String {
        var generator = SystemRandomNumberGenerator()
        let random = String((0..<randomLength).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
        let name = "." + FilePaths.lastComponent(of: finalPath) + marker + random + suffix
        return FilePaths.join(FilePaths.directory(of: finalPath), name)
    }

    /// The destination name a temporary file name belongs to, or nil when `name` (a last path component) is not
    /// a temporary output name.
    public static func destinationName(of name: String) -> String? {
        guard name.hasPrefix("."), name.hasSuffix(suffix) else { return nil }
        let stem = name.dropFirst().dropLast(suffix.count)
        guard stem.count > marker.count + randomLength else { return nil }
        let random = stem.suffix(randomLength)
        let head = stem.dropLast(randomLength)
        guard head.hasSuffix(marker), random.allSatisfy({ alphabet.contains($0) }) else { return nil }
        let destination = head.dropLast(marker.count)
        return destination.isEmpty ? nil : String(destination)
    }

    /// Removes the temporary files of `finalPath` that no writer holds locked (their writer was killed or its
    /// machine stopped); returns their paths. A live conversion's file is locked and kept.
    public static func removeStale(for finalPath: String) -> [String] {
        let directory = FilePaths.directory(of: finalPath)
        let name = FilePaths.lastComponent(of: finalPath)
        var removed: [String] = []
        for entry in FilePaths.entries(of: directory) where destinationName(of: entry) == name {
            let path = FilePaths.join(directory, entry)
            if FilePaths.removeIfUnlocked(path) { removed.append(path) }
        }
        return removed
    }
}

/// Which format a conversion writes, from the format asked for (`-O`) and the destination.
public enum OutputFormatChoice {
    /// The output format for `destination`:
    /// - when writing into an existing image (`useExisting`), the existing content's format (raw or qcow2) unless
    ///   `requested` says otherwise; `requested` qcow2 needs an existing qcow2;
    /// - else `requested`, or qcow2 when the name ends in `.qcow2`, or raw. A name that announces a format
    ///   that is not written (`.vmdk`, `.vdi`, `.vhd`, ...) needs an explicit format: raw under such a name is
    ///   what `info` later refuses.
    public static func choose(requested: ImageFormat?, destination: String, useExisting: Bool) throws -> ImageFormat {
        if useExisting {
            let path = try DestinationPath.inspect(destination)
            guard path.exists else {
                throw KDCTError(.notFound, "the destination must exist to be written into", file: destination)
            }
            let existing = try FormatProbe.probe(ReadOnlyFile(path: path.resolved)).format
            switch (requested, existing) {
            case (nil, .raw), (nil, .qcow2): return existing
            case (nil, _):
                throw KDCTError(.unsupported,
                                "the destination is a \(existing) image; images are written into as raw or qcow2",
                                file: destination, field: "output format")
            case (.qcow2?, .qcow2): return .qcow2
            case (.qcow2?, _):
                throw KDCTError(.invalidFormat, "the destination is not a qcow2 image (its content is \(existing))",
                                file: destination, field: "output format")
            case let (format?, _): return format
            }
        }
        if let requested { return requested }
        let ext = FilePaths.fileExtension(of: destination)
        if ImageFormat.qcow2.fileExtensions.contains(ext) { return .qcow2 }
        if let claimed = ImageFormat.allCases.first(where: { $0.fileExtensions.contains(ext) }) {
            throw KDCTError(.invalidArgument,
                            "the name says \(claimed) (.\(ext)), which is not an output format; a raw disk under this name would not open as \(claimed)",
                            file: destination, field: "output format")
        }
        return .raw
    }
}
