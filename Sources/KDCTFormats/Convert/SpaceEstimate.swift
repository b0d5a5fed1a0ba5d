/// How much space an image of a given output format needs: what `kdct-native measure` prints (the values and
/// rules of `qemu-img measure`), and what `convert` compares with a device's size or a file system's free space
/// before the first write.
public struct SpaceMeasurement: Sendable, Equatable {
    /// Bytes the output needs for the source's data and all metadata (qemu's `required`). For QCOW2 this counts
    /// the metadata of a fully allocated image and every cluster holding data uncompressed, so it is an upper
    /// bound of a compressed (`-c`) output too.
    public var required: UInt64
    /// Bytes of the output with every guest cluster allocated (qemu's `fully-allocated`).
    public var fullyAllocated: UInt64
    /// Bytes the source's persistent bitmaps would take (qemu's `bitmaps`): only when both the source and the
    /// output are QCOW2 version 3.
    public var bitmaps: UInt64?

    /// Creates a measurement.
    public init(required: UInt64, fullyAllocated: UInt64, bitmaps: UInt64? = nil) {
        self.required = required
        self.fullyAllocated = fullyAllocated
        self.bitmaps = bitmaps
    }
}

/// The output creation options `measure` takes (`-O`, `-o cluster_size=,preallocation=,refcount_bits=,
/// extended_l2=,compat=`).
public struct MeasureOptions: Sendable {
    /// How the output is allocated (`-o preallocation=`).
    public enum Preallocation: String, Sendable, CaseIterable {
        /// Nothing allocated ahead: only what data and metadata need.
        case off
        /// QCOW2 metadata (tables, refcounts) allocated up front; data clusters as written.
        case metadata
        /// Every byte reserved with `fallocate`, read as zeros.
        case falloc
        /// Every byte written (zeros where the source has none).
        case full
    }

    /// RAW or QCOW2.
    public var format: ImageFormat
    /// QCOW2 cluster size.
    public var clusterSize = 65536
    /// Preallocation mode.
    public var preallocation: Preallocation = .off
    /// QCOW2 refcount width in bits (a power of two up to 64).
    public var refcountBits = 16
    /// QCOW2 extended L2 entries (subclusters).
    public var extendedL2 = false
    /// QCOW2 version 3 (`compat=1.1`, the default) rather than 2 (`compat=0.10`).
    public var version3 = true

    /// Options for `format` with qemu's defaults.
    public init(format: ImageFormat = .raw) { self.format = format }

    /// Checks the combination as qemu-img does.
    public func validate() throws {
        guard format == .raw || format == .qcow2 else {
            throw KDCTError(.unsupported, "measure computes raw and qcow2 outputs, not \(format)", field: "output format")
        }
        guard format == .qcow2 else { return }
        guard clusterSize >= 512, clusterSize <= 2 << 20, clusterSize & (clusterSize - 1) == 0 else {
            throw KDCTError(.invalidArgument,
                            "cluster_size must be a power of two between 512 and 2097152, not \(clusterSize)",
                            field: "cluster_size")
        }
        guard refcountBits >= 1, refcountBits <= 64, refcountBits & (refcountBits - 1) == 0 else {
            throw KDCTError(.invalidArgument, "refcount_bits must be a power of two up to 64, not \(refcountBits)",
                            field: "refcount_bits")
        }
        if !version3 && refcountBits != 16 {
            throw KDCTError(.invalidArgument, "refcount widths other than 16 bits need compat=1.1",
                            field: "refcount_bits")
        }
        if extendedL2 {
            if !version3 { throw KDCTError(.invalidArgument, "extended L2 entries need compat=1.1", field: "extended_l2") }
            if clusterSize < 16384 {
                throw KDCTError(.invalidArgument,
                                "extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
                                field: "extended_l2")
            }
        }
    }
}

/// `measure` and the space checks of `convert`, computed as qemu-img computes them (block/qcow2.c
/// `qcow2_measure`, `qcow2_calc_prealloc_size`, `qcow2_refcount_metadata_size`; block/raw-format.c
/// `raw_measure`).
public enum SpaceEstimate {
    /// The space an image of `source`'s content needs in the format of `options`.
    public static func measure(_ source: any BlockDevice, options: MeasureOptions) throws -> SpaceMeasurement {
        try options.validate()
        // qemu sees the guest in whole sectors.
        let size = roundUp(source.virtualSize, 512)
        guard options.format == .qcow2 else { return SpaceMeasurement(required: size, fullyAllocated: size) }
        let cluster = UInt64(options.clusterSize)
        let virtualSize = roundUp(size, cluster)
        let allocated = try allocatedBytes(source, granule: cluster)
        var measurement = try qcow2(virtualSize: virtualSize, allocated: allocated, options: options)
        if options.version3, source.info.format == .qcow2, source.info.formatSpecific["compat"] != .string("0.10") {
            measurement.bitmaps = try QCOW2BitmapSizes.bytes(of: source.info, clusterSize: options.clusterSize)
        }
        return measurement
    }

    /// The space a new image of `size` guest bytes needs (`measure --size`).
    public static func measure(size: UInt64, options: MeasureOptions) throws -> SpaceMeasurement {
        try options.validate()
        guard options.format == .qcow2 else {
            let rounded = roundUp(size, 512)
            return SpaceMeasurement(required: rounded, fullyAllocated: rounded)
        }
        return try qcow2(virtualSize: roundUp(size, UInt64(options.clusterSize)), allocated: 0, options: options)
    }

    /// QCOW2: the metadata of the fully allocated image plus the allocated data (`qcow2_measure`).
    static func qcow2(virtualSize: UInt64, allocated: UInt64, options: MeasureOptions) throws -> SpaceMeasurement {
        let cluster = UInt64(options.clusterSize)
        let entrySize: UInt64 = options.extendedL2 ? 16 : 8
        let l2Tables = (virtualSize / cluster + cluster / entrySize - 1) / (cluster / entrySize)
        if l2Tables * 8 > QCOW2Writer.maxL1Bytes {
            throw KDCTError(.invalidArgument,
                            "a \(virtualSize)-byte image needs an L1 table of \(l2Tables * 8) bytes with \(cluster)-byte clusters, above qemu's limit of \(QCOW2Writer.maxL1Bytes); use a larger cluster_size",
                            field: "cluster_size")
        }
        let full = fullyAllocatedQCOW2Size(virtualSize: virtualSize, clusterSize: cluster,
                                           refcountOrder: UInt64(options.refcountBits.trailingZeroBitCount),
                                           extendedL2: options.extendedL2)
        let data = options.preallocation == .falloc || options.preallocation == .full ? virtualSize : allocated
        return SpaceMeasurement(required: full - virtualSize + data, fullyAllocated: full)
    }

    /// `qcow2_calc_prealloc_size`: header, L2 tables and L1 table for every cluster, refcount metadata for all of
    /// it, and the data.
    static func fullyAllocatedQCOW2Size(virtualSize: UInt64, clusterSize: UInt64, refcountOrder: UInt64,
                                        extendedL2: Bool) -> UInt64 {
        let alignedSize = roundUp(virtualSize, clusterSize)
        let l2EntrySize: UInt64 = extendedL2 ? 16 : 8
        var metadata = clusterSize                                   // header
        let l2Entries = roundUp(alignedSize / clusterSize, clusterSize / l2EntrySize)
        metadata += l2Entries * l2EntrySize                          // L2 tables
        let l1Entries = roundUp(l2Entries * l2EntrySize / clusterSize, clusterSize / 8)
        metadata += l1Entries * 8                                    // L1 table
        metadata += refcountMetadataSize(clusters: (metadata + alignedSize) / clusterSize, clusterSize: clusterSize,
                                         refcountOrder: refcountOrder)
        return metadata + alignedSize
    }

    /// `qcow2_refcount_metadata_size`: refcount blocks and table clusters for `clusters` clusters, found as the
    /// fixed point where they also count themselves.
    static func refcountMetadataSize(clusters: UInt64, clusterSize: UInt64, refcountOrder: UInt64) -> UInt64 {
        let blocksPerTableCluster = clusterSize / 8
        let refcountsPerBlock = clusterSize * 8 / (1 << refcountOrder)
        var table: UInt64 = 0
        var blocks: UInt64 = 0
        var total: UInt64 = 0
        var last: UInt64
        repeat {
            last = total
            blocks = (clusters + table + blocks + refcountsPerBlock - 1) / refcountsPerBlock
            table = (blocks + blocksPerTableCluster - 1) / blocksPerTableCluster
            total = clusters + blocks + table
        } while total != last
        return (blocks + table) * clusterSize
    }

    /// Bytes of the `granule`-sized blocks of the guest that hold data (a data extent touches them), as qemu's
    /// measure counts clusters. With `minimumSparseRun` (`convert -S`), runs of blocks without data shorter than
    /// it count too (they are written as zeros); 0 counts every block.
    public static func allocatedBytes(_ source: any BlockDevice, granule: UInt64,
                                      minimumSparseRun: UInt64? = nil) throws -> UInt64 {
        let blocks = (source.virtualSize + granule - 1) / granule
        if minimumSparseRun == 0 { return blocks * granule }
        let minimumGap = minimumSparseRun.map { ($0 + granule - 1) / granule } ?? 0
        var counted: UInt64 = 0
        // The next block not yet counted; blocks before it were counted or skipped.
        var next: UInt64 = 0
        func gap(to block: UInt64) {
            if block > next && block - next < minimumGap { counted += block - next }
        }
        try source.forEachExtent(to: source.virtualSize) { extent in
            guard extent.status == .data else { return }
            let first = max(extent.offset / granule, next)
            let last = (extent.end - 1) / granule
            guard first <= last else { return }
            gap(to: first)
            counted += last - first + 1
            next = last + 1
        }
        gap(to: blocks)
        return counted * granule
    }

    /// What a conversion's output occupies on disk, to compare with a file system's free space: a sparse RAW
    /// file holds only the data blocks (4 KiB), a preallocated one the whole guest; a QCOW2 file `required`
    /// with the output's cluster size (an upper bound when compressed).
    public static func outputSpace(_ source: any BlockDevice, format: ImageFormat, qcow2: QCOW2Writer.Options,
                                   virtualSize: UInt64, rawPreallocation: RawPreallocation,
                                   minimumSparseRun: UInt64?) throws -> UInt64 {
        switch format {
        case .qcow2:
            var options = MeasureOptions(format: .qcow2)
            options.clusterSize = qcow2.clusterSize
            let cluster = UInt64(qcow2.clusterSize)
            let allocated = try allocatedBytes(source, granule: cluster, minimumSparseRun: minimumSparseRun)
            return try self.qcow2(virtualSize: roundUp(roundUp(virtualSize, 512), cluster), allocated: allocated,
                                  options: options).required
        default:
            if rawPreallocation != .off { return virtualSize }
            return min(virtualSize, try allocatedBytes(source, granule: 4096, minimumSparseRun: minimumSparseRun))
        }
    }

    static func roundUp(_ value: UInt64, _ unit: UInt64) -> UInt64 { (value + unit - 1) / unit * unit }
}
