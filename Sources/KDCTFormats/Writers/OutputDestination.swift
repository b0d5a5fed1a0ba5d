#if canImport(Glibc)
import Glibc
#endif

/// How a conversion treats its destination: qemu-img convert's `-n`, `--target-is-zero`, `-t`, `-S` and `-C`,
/// and the free-space check.
public struct DestinationOptions: Sendable {
    /// Write into the existing image or block device instead of creating one (`-n`): a raw file or device at
    /// least the source's size, or a qcow2 image whose virtual size is at least the source's.
    public var useExisting = false
    /// The existing target already reads as zeros (`--target-is-zero`): ranges without data are not zeroed.
    public var targetIsZero = false
    /// Flush the output to stable storage before it is committed; false only for `-t unsafe`.
    public var flush = true
    /// Compare the space the output needs (`SpaceEstimate.outputSpace`) with the file system's free space first.
    public var checkSpace = true
    /// The shortest run of zero bytes left unallocated (`-S`); 0 stores everything; nil keeps the writer's
    /// granule (4 KiB RAW, one cluster QCOW2).
    public var minimumSparseRun: UInt64?
    /// Copy data stored uncompressed with `copy_file_range` instead of reading it (`-C`).
    public var copyOffload = false
    /// The output's guest size when it differs from the source's (an existing, larger qcow2 written into).
    public var outputVirtualSize: UInt64?

    /// Defaults: a new output, flushed, space checked, qemu's default sparseness.
    public init() {}
}

/// A destination opened for one conversion: the target to write and the options adjusted to it.
public struct PreparedDestination {
    /// Where the writer writes.
    public var target: any OutputTarget
    /// The conversion options with what the destination decides (an existing qcow2's size, cluster size and
    /// compression type).
    public var options: ConvertOptions
}

/// Opens a conversion's local destination by what it is:
/// - a missing or regular file: a new file written under a temporary name and renamed into place
///   (`LocalFileTarget`; an existing one only with `overwrite`), after checking the file system has room;
/// - a block device: written in place (`InPlaceTarget`), never replaced, no `overwrite` needed, after checking
///   it is large enough;
/// - with `useExisting`, an existing raw or qcow2 file or device written into (`InPlaceTarget`);
/// - a symlink: the same rules for what it leads to, the link kept.
/// Every size check happens before the first write; on a refusal nothing is written.
public enum OutputDestination {
    /// Opens `destination` for converting `source` with `options`.
    public static func open(_ destination: String, for source: any BlockDevice,
                            options: ConvertOptions) throws -> PreparedDestination {
        let path = try DestinationPath.inspect(destination)
        let settings = options.destination
        var options = options
        switch path.kind {
        case .blockDevice:
            if options.rawPreallocation != .off {
                throw KDCTError(.invalidArgument, "preallocation applies to files; a device is written in place",
                                file: destination, field: "preallocation")
            }
            let target = try InPlaceTarget(device: path.resolved, displayName: destination,
                                           assumeZeroed: settings.targetIsZero, flush: settings.flush).checked { target in
                if settings.useExisting && options.outputFormat == .qcow2 {
                    try adopt(existingQCOW2At: path.resolved, named: destination, for: source, into: &options)
                }
                let needed = try neededBytes(source, options: options, inPlace: true)
                let capacity = target.capacity ?? 0
                if needed > capacity {
                    throw KDCTError(.invalidArgument,
                                    "the device is \(capacity) bytes, smaller than the \(needed) bytes the \(options.outputFormat) output needs",
                                    file: destination, field: "device size")
                }
            }
            return PreparedDestination(target: target, options: options)

        case .regularFile where settings.useExisting:
            let target = try InPlaceTarget(existingFile: path.resolved, displayName: destination,
                                           assumeZeroed: settings.targetIsZero, flush: settings.flush).checked { target in
                if options.outputFormat == .qcow2 {
                    try adopt(existingQCOW2At: path.resolved, named: destination, for: source, into: &options)
                    // The image is rewritten from its header on: the old clusters must not show through.
                    try target.discardContent()
                } else if try target.length() < source.virtualSize {
                    throw KDCTError(.invalidArgument,
                                    "the destination is \(try target.length()) bytes, smaller than the source's \(source.virtualSize) bytes",
                                    file: destination, field: "size")
                }
            }
            return PreparedDestination(target: target, options: options)

        case .missing where settings.useExisting:
            throw KDCTError(.notFound, "the destination must exist to be written into", file: destination)

        case .missing, .regularFile:
            if path.exists && !options.overwrite {
                let note = path.isLink ? " (a link to \(path.resolved))" : ""
                throw KDCTError(.alreadyExists, "destination exists\(note)", file: destination)
            }
            let folder = FilePaths.directory(of: path.resolved)
            if settings.checkSpace, FilePaths.isDirectory(folder), let available = FilePaths.availableSpace(at: folder) {
                let needed = try neededBytes(source, options: options, inPlace: false)
                if needed > available {
                    throw KDCTError(.io,
                                    "the output needs up to \(needed) bytes but \(folder) has \(available) bytes free",
                                    file: destination, field: "free space", errno: ENOSPC)
                }
            }
            let target = try LocalFileTarget(destination: destination, overwrite: options.overwrite,
                                             flush: settings.flush)
            return PreparedDestination(target: target, options: options)
        }
    }

    /// The bytes the output occupies: written in place, all of a raw guest (every byte is written or zeroed);
    /// otherwise what `SpaceEstimate.outputSpace` says (a qcow2 image's `required`).
    static func neededBytes(_ source: any BlockDevice, options: ConvertOptions, inPlace: Bool) throws -> UInt64 {
        let virtualSize = options.destination.outputVirtualSize ?? source.virtualSize
        if options.outputFormat == .raw && inPlace { return virtualSize }
        return try SpaceEstimate.outputSpace(source, format: options.outputFormat, qcow2: options.qcow2,
                                             virtualSize: virtualSize, rawPreallocation: options.rawPreallocation,
                                             minimumSparseRun: options.destination.minimumSparseRun)
    }

    /// Writing into an existing qcow2: the new image keeps its virtual size, cluster size and compression type.
    /// Refused when it is smaller than the source or has a backing file (its data would show through wherever the
    /// source has none).
    static func adopt(existingQCOW2At path: String, named destination: String, for source: any BlockDevice,
                      into options: inout ConvertOptions) throws {
        let existing: ImageInfo
        do {
            existing = try ImageOpener.inspect(path, options: OpenOptions(format: .qcow2))
        } catch let error as KDCTError {
            throw error.naming(destination)
        }
        if let backing = existing.backingFilename {
            throw KDCTError(.unsupported,
                            "the existing qcow2 has a backing file (\(backing)); its data would show through wherever the source has none",
                            file: destination, field: "backing file")
        }
        guard existing.virtualSize >= source.virtualSize else {
            throw KDCTError(.invalidArgument,
                            "the existing image's virtual size (\(existing.virtualSize) bytes) is smaller than the source's (\(source.virtualSize) bytes)",
                            file: destination, field: "virtual size")
        }
        options.qcow2.clusterSize = Int(existing.clusterSize ?? 65536)
        options.qcow2.compressionType = existing.formatSpecific["compression-type"] == .string("zstd") ? .zstd : .deflate
        options.destination.outputVirtualSize = existing.virtualSize
    }
}
