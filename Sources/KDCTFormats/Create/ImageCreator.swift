/// How a new image is made (`kdct-native create`: qemu-img create's `-f`, `-o` and `-b`/`-F`).
public struct CreateOptions: Sendable {
    /// RAW or QCOW2.
    public var format: ImageFormat
    /// QCOW2 cluster size: a power of two from 512 B to 2 MiB.
    public var clusterSize = 65536
    /// `off`, `metadata` (QCOW2 only: L2 tables and data clusters allocated, data not written), `falloc`
    /// (also reserved with `fallocate`) or `full` (zeros written).
    public var preallocation: MeasureOptions.Preallocation = .off
    /// QCOW2 compression type recorded in the header (for later compressed writes).
    public var compressionType: CompressionType = .deflate
    /// QCOW2 extended L2 entries (subclusters; clusters of 16 KiB or more).
    public var extendedL2 = false
    /// The backing file (QCOW2 only), stored as given: a name relative to the new image's directory, or absolute.
    public var backingFile: String?
    /// The backing file's format, recorded in the header and checked against the file's content (required with
    /// a backing file, as qemu-img requires it).
    public var backingFormat: ImageFormat?
    /// How the backing file is opened (to check it and learn its size): the reference policy applies to its name.
    public var backingOpenOptions = OpenOptions()
    /// Replace an existing destination file.
    public var overwrite = false
    /// Flush the new image before it gets its name (false only for `-t unsafe`-like uses).
    public var flush = true

    /// Options for a new image of `format` with qemu's defaults.
    public init(format: ImageFormat = .raw) { self.format = format }
}

/// What `ImageCreator.create` made.
public struct CreatedImage: Sendable, Equatable {
    /// The guest size (the size asked for, rounded up to 512 bytes; or the backing file's).
    public var virtualSize: UInt64
    /// The image file's length.
    public var fileLength: UInt64
    /// The backing file's path as opened (resolved under the reference policy), if any.
    public var backingPath: String?
    /// False when a QCOW2 image's metadata could not be placed where qemu-img places it (more refcount blocks than
    /// one refcount table cluster names), so offsets differ from qemu's.
    public var layoutMatchesQemu: Bool
}

/// Makes new RAW and QCOW2 images as `qemu-img create` does, with the same layout: a QCOW2 image gets qemu's
/// header (version 3, 16-bit refcounts, the feature name table, the backing format extension) and its clusters
/// where qemu puts them (`QCOW2CreationLayout`).
///
/// A new file appears atomically: it is written under a temporary name beside the destination, flushed and renamed
/// into place (`LocalFileTarget`); an existing file is replaced only with `overwrite`. A block device is written in
/// place (QCOW2 metadata; a RAW "creation" only checks the device is large enough), never replaced, and only without
/// preallocation. A backing file is opened before anything is written: under the reference policy, relative to the
/// new image's directory, and its content must be the declared format.
public enum ImageCreator {
    /// Creates `path` with `options`; `size` may be nil only with a backing file, whose size is then used.
    @discardableResult
    public static func create(_ path: String, size: UInt64?, options: CreateOptions) throws -> CreatedImage {
        try validate(options)
        var backingPath: String?
        var virtualSize = size
        if let backingFile = options.backingFile {
            let backing = try ImageOpener.openBacking(backingFile, format: options.backingFormat, forImage: path,
                                                      options: options.backingOpenOptions)
            backingPath = backing.path
            if virtualSize == nil { virtualSize = backing.device.virtualSize }
        }
        guard let requested = virtualSize else {
            throw KDCTError(.invalidArgument, "image creation needs a size (or a backing file to take it from)",
                            file: path, field: "size")
        }
        try ImageLimits.check("size", requested, max: ImageLimits().maxVirtualSize, file: path)
        // Both formats are sized in whole 512-byte sectors, rounded up as qemu-img does.
        let size = (requested + 511) / 512 * 512
        let destination = try DestinationPath.inspect(path)
        let target: any OutputTarget
        switch destination.kind {
        case .blockDevice:
            guard options.preallocation == .off else {
                throw KDCTError(.invalidArgument, "preallocation applies to files; a device is written in place",
                                file: path, field: "preallocation")
            }
            target = try InPlaceTarget(device: destination.resolved, displayName: path, flush: options.flush)
        case .missing, .regularFile:
            target = try LocalFileTarget(destination: path, overwrite: options.overwrite, flush: options.flush)
        }
        do {
            let result: CreatedImage
            switch options.format {
            case .qcow2: result = try writeQCOW2(to: target, size: size, options: options, backingPath: backingPath)
            default: result = try writeRaw(to: target, size: size, options: options)
            }
            try target.commit()
            return result
        } catch {
            target.abort()
            throw attributed(error, to: path)
        }
    }

    private static func validate(_ options: CreateOptions) throws {
        guard options.format == .raw || options.format == .qcow2 else {
            throw KDCTError(.unsupported, "images are created as raw or qcow2, not \(options.format)", field: "format")
        }
        if options.format == .raw {
            if options.backingFile != nil {
                throw KDCTError(.invalidArgument, "a raw image has no backing file; create a qcow2 overlay",
                                field: "backing_file")
            }
            if options.preallocation == .metadata {
                throw KDCTError(.invalidArgument, "a raw image has no metadata to preallocate (preallocation=metadata)",
                                field: "preallocation")
            }
            return
        }
        var measure = MeasureOptions(format: .qcow2)
        measure.clusterSize = options.clusterSize
        measure.extendedL2 = options.extendedL2
        try measure.validate()
        if options.backingFile != nil && options.backingFormat == nil {
            throw KDCTError(.invalidArgument, "a backing file needs its format (-F), as qemu-img requires",
                            field: "backing_fmt")
        }
        if options.backingFile == nil && options.backingFormat != nil {
            throw KDCTError(.invalidArgument, "a backing format without a backing file", field: "backing_fmt")
        }
    }

    private static func writeRaw(to target: any OutputTarget, size: UInt64, options: CreateOptions) throws -> CreatedImage {
        if let capacity = target.capacity {
            guard size <= capacity else {
                throw KDCTError(.invalidArgument, "the device is \(capacity) bytes, smaller than the \(size) bytes asked for",
                                field: "device size")
            }
            return CreatedImage(virtualSize: size, fileLength: capacity, layoutMatchesQemu: true)
        }
        try target.setLength(size)
        switch options.preallocation {
        case .falloc: try target.allocate(offset: 0, length: size)
        case .full: try target.writeZeros(offset: 0, length: size)
        // As qemu-img (file-posix's allocate_first_block): the first 4 KiB written as zeros, so tools probing the
        // file's alignment find a block.
        case .off, .metadata: try target.writeZeros(offset: 0, length: min(size, 4096))
        }
        return CreatedImage(virtualSize: size, fileLength: size, layoutMatchesQemu: true)
    }

    private static func writeQCOW2(to target: any OutputTarget, size: UInt64, options: CreateOptions,
                                   backingPath: String?) throws -> CreatedImage {
        let cs = UInt64(options.clusterSize)
        let entrySize: UInt64 = options.extendedL2 ? 16 : 8
        let placement: QCOW2CreationLayout.Preallocation
        switch options.preallocation {
        case .off: placement = .none
        case .metadata: placement = .interleaved
        case .falloc, .full: placement = .dataArea
        }
        let layout = try QCOW2CreationLayout.plan(virtualSize: size, clusterSize: cs, l2Entries: cs / entrySize,
                                                  preallocation: placement)
        if layout.l1Size * 8 > QCOW2Writer.maxL1Bytes {
            throw KDCTError(.invalidArgument,
                            "a \(size)-byte image needs an L1 table of \(layout.l1Size * 8) bytes with \(cs)-byte clusters, above qemu's limit of \(QCOW2Writer.maxL1Bytes); use a larger cluster_size",
                            field: "cluster_size")
        }
        let length = layout.fileLength
        if let capacity = target.capacity, length > capacity {
            throw KDCTError(.invalidArgument, "the device is \(capacity) bytes, smaller than the \(length) bytes of the image's metadata",
                            field: "device size")
        }
        let header = QCOW2HeaderEncoding(
            clusterBits: options.clusterSize.trailingZeroBitCount, size: size, l1Size: UInt32(layout.l1Size),
            l1TableOffset: layout.l1Cluster * cs, refcountTableOffset: layout.refcountTableCluster * cs,
            refcountTableClusters: UInt32(layout.refcountTableClusters), compressionType: options.compressionType,
            extendedL2: options.extendedL2, backingFile: options.backingFile,
            backingFormat: options.backingFormat?.qemuName,
            featureNameTable: cs >= QCOW2HeaderEncoding.featureNameTableMinimumCluster)
        try header.validate()
        try header.encode(count: Int(cs)).withUnsafeBytes { try target.write($0, at: 0) }

        // The refcount table, then the blocks: every cluster below the first free one has refcount 1.
        var table = ByteWriter(count: Int(layout.refcountTableClusters * cs))
        for (block, cluster) in layout.blocks { table.u64be(cluster * cs, at: Int(block) * 8) }
        try table.bytes.withUnsafeBytes { try target.write($0, at: layout.refcountTableCluster * cs) }
        for (block, cluster) in layout.blocks {
            var refcounts = ByteWriter(count: Int(cs))
            let first = block * layout.refcountsPerBlock
            for index in 0..<layout.refcountsPerBlock where first + index < layout.freeCluster {
                refcounts.u16be(1, at: Int(index) * 2)
            }
            for unused in layout.unusedClusters where unused / layout.refcountsPerBlock == block {
                refcounts.u16be(0, at: Int(unused % layout.refcountsPerBlock) * 2)
            }
            try refcounts.bytes.withUnsafeBytes { try target.write($0, at: cluster * cs) }
        }

        // The L1 table (to the end of its entries, a sector on a device), then preallocated L2 tables and data.
        if layout.l1Size > 0 {
            var l1 = ByteWriter(count: Int(target.readsAsZeros ? layout.l1Size * 8 : (layout.l1Size * 8 + 511) / 512 * 512))
            for table in layout.l2Tables { l1.u64be(table.cluster * cs | QCOW2Entry.copiedFlag, at: table.index * 8) }
            try l1.bytes.withUnsafeBytes { try target.write($0, at: layout.l1Cluster * cs) }
        }
        for (table, run) in zip(layout.l2Tables, layout.dataRuns) {
            // Extended L2: the host offset with an empty subcluster bitmap, as qemu preallocates them.
            var l2 = ByteWriter(count: Int(cs))
            for i in 0..<run.count { l2.u64be((run.host + i) * cs | QCOW2Entry.copiedFlag, at: Int(i * entrySize)) }
            try l2.bytes.withUnsafeBytes { try target.write($0, at: table.cluster * cs) }
            switch options.preallocation {
            case .falloc: try target.allocate(offset: run.host * cs, length: run.count * cs)
            case .full: try target.writeZeros(offset: run.host * cs, length: run.count * cs)
            case .off, .metadata: break
            }
        }
        try target.setLength(length)
        return CreatedImage(virtualSize: size, fileLength: length, backingPath: backingPath,
                            layoutMatchesQemu: layout.matchesQemu)
    }

    /// `error` naming `path` when it names no file yet.
    private static func attributed(_ error: any Error, to path: String) -> any Error {
        guard let error = error as? KDCTError else { return error }
        return error.inFile(path)
    }
}
