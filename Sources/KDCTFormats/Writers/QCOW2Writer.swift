/// Writes a QCOW2 version 3 image as a stream: data clusters are appended in guest order, completed L2 tables are
/// kept until `l2Budget` bytes of them are pending (then appended together), and the refcount blocks, refcount
/// table, L1 table and header come at the end (the file ends with the L1 entries, inside the L1 cluster). Host
/// writes therefore only ever move forward (which suits remote targets), and memory holds the L1 table, the pending
/// L2 tables and a 16-bit refcount per host cluster.
///
/// Compressed output is packed densely: compressed clusters are written back to back as they come, and the clusters
/// that did not shrink are held back (up to `deferredBudget` bytes of them, over at most `deferredSpan` of guest) and
/// written together, so an incompressible cluster does not break the packing each time (qemu breaks it at every
/// switch and at every L2 table). When they are written depends only on the sequence of clusters, never on how the
/// converter cuts segments, so the output bytes are identical for any worker count.
///
/// Layout rules are qemu's (docs/interop/qcow2.txt): 16-bit refcounts (`refcount_order` 4), the COPIED flag on
/// every L1/L2 entry whose cluster has refcount 1, compressed clusters packed byte-contiguously with the
/// sector-count descriptor, zero and absent guest ranges left unallocated.
public final class QCOW2Writer: RangeCopyingWriter {
    /// Options of a QCOW2 output (`-o cluster_size=`, `-c`, `-o compression_type=`).
    public struct Options: Sendable {
        /// Cluster size: a power of two from 512 B to 2 MiB (default 64 KiB).
        public var clusterSize: Int = 65536
        /// Compress each cluster.
        public var compress = false
        /// The header's compression type (used by `compress`; zstd sets the incompatible feature bit).
        public var compressionType: CompressionType = .deflate

        /// Default options.
        public init(clusterSize: Int = 65536, compress: Bool = false, compressionType: CompressionType = .deflate) {
            self.clusterSize = clusterSize
            self.compress = compress
            self.compressionType = compressionType
        }
    }

    /// qemu's cap on the L1 table (QCOW_MAX_L1_SIZE).
    public static let maxL1Bytes: UInt64 = 32 << 20
    private static let copiedFlag: UInt64 = 1 << 63
    private static let compressedFlag: UInt64 = 1 << 62
    private static let stagingCapacity = 8 << 20

    public let clusterSize: Int
    public var compression: CompressionType? { options.compress ? options.compressionType : nil }
    private let options: Options
    private let target: any OutputTarget
    private let virtualSize: UInt64
    private let clusterBits: Int
    private let l2Entries: Int
    private var l1: [UInt64]
    /// L2 tables of the guest range being written, by L1 index (closed once the writer has passed their range).
    private var openL2: [Int: [UInt64]] = [:]
    /// Completed L2 tables not yet written, in guest order.
    private var pendingL2: [(index: Int, entries: [UInt64])] = []
    /// Pending L2 tables are written out when they reach this many bytes.
    private let l2Budget = 32 << 20
    /// Bytes of clusters that did not shrink held back at most when compressing.
    static let deferredBudget = 16 << 20
    /// Guest bytes from the first held cluster after which the held clusters are written (this bounds the L2 tables
    /// kept open for them).
    static let deferredSpan: UInt64 = 256 << 20
    /// `deferredBudget` and `deferredSpan` in clusters of this image.
    private let deferredBudgetClusters: Int
    private let deferredSpanClusters: UInt64
    /// Guest cluster numbers of the held clusters, in guest order; their bytes are in `deferredBytes`.
    private var deferredClusters: [UInt64] = []
    private var deferredBytes: UnsafeMutableRawBufferPointer?
    /// Refcount of every host cluster so far, indexed by host cluster number.
    private var refcounts: [UInt16] = [1]
    /// The next free host byte (compressed data packs from here; other structures start at the next cluster).
    private var nextHost: UInt64
    private let staging: UnsafeMutableRawBufferPointer
    private var stagingStart: UInt64 = 0
    private var stagingCount = 0

    /// Prepares to write an image of `virtualSize` bytes to `target`.
    public init(target: any OutputTarget, virtualSize: UInt64, options: Options = Options()) throws {
        let size = options.clusterSize
        guard size >= 512, size <= 2 << 20, size & (size - 1) == 0 else {
            throw KDCTError(.invalidArgument, "cluster_size must be a power of two between 512 and 2097152, not \(size)",
                            field: "cluster_size")
        }
        self.options = options
        self.target = target
        // qcow2 sizes are whole 512-byte sectors (qemu reads `size / 512` sectors): round up, as qemu-img does.
        let virtualSize = (virtualSize + 511) / 512 * 512
        self.virtualSize = virtualSize
        self.clusterSize = size
        self.clusterBits = size.trailingZeroBitCount
        self.l2Entries = size / 8
        let perL2 = UInt64(size) * UInt64(size / 8)
        let l1Count = (virtualSize + perL2 - 1) / perL2
        guard l1Count * 8 <= Self.maxL1Bytes else {
            throw KDCTError(.invalidArgument,
                            "a \(virtualSize)-byte image needs an L1 table of \(l1Count * 8) bytes with \(size)-byte clusters, above qemu's limit of \(Self.maxL1Bytes); use a larger cluster_size",
                            field: "cluster_size")
        }
        l1 = [UInt64](repeating: 0, count: Int(l1Count))
        deferredBudgetClusters = max(Self.deferredBudget / size, 1)
        deferredSpanClusters = max(Self.deferredSpan / UInt64(size), 1)
        nextHost = UInt64(size)
        staging = .allocate(byteCount: Self.stagingCapacity, alignment: 4096)
    }

    deinit {
        staging.deallocate()
        deferredBytes?.deallocate()
    }

    // MARK: Host space

    private func addReference(cluster: Int) {
        if cluster >= refcounts.count {
            refcounts.append(contentsOf: repeatElement(0, count: max(cluster + 1 - refcounts.count, refcounts.count / 2)))
        }
        refcounts[cluster] += 1
    }

    /// Allocates `count` whole clusters at the next cluster boundary.
    private func allocateClusters(_ count: Int) -> UInt64 {
        let cs = UInt64(clusterSize)
        let host = (nextHost + cs - 1) / cs * cs
        nextHost = host + UInt64(count) * cs
        let first = Int(host / cs)
        for cluster in first..<(first + count) { addReference(cluster: cluster) }
        return host
    }

    /// Places `length` bytes of compressed data at the next free byte, packing clusters back to back.
    private func allocateCompressed(_ length: Int) -> UInt64 {
        let cs = UInt64(clusterSize)
        var host = nextHost
        // A refcount is 16 bits: never let one host cluster be shared by more compressed clusters than that.
        if host % cs != 0, Int(host / cs) < refcounts.count, refcounts[Int(host / cs)] == UInt16.max {
            host = (host + cs - 1) / cs * cs
        }
        nextHost = host + UInt64(length)
        for cluster in Int(host / cs)...Int((host + UInt64(length) - 1) / cs) { addReference(cluster: cluster) }
        return host
    }

    // MARK: Writing

    private func flushStaging() throws {
        guard stagingCount > 0 else { return }
        try target.write(UnsafeRawBufferPointer(rebasing: staging[0..<stagingCount]), at: stagingStart)
        stagingCount = 0
    }

    /// Queues `bytes` for host offset `host`, which is never below what was queued before.
    private func stage(_ bytes: UnsafeRawBufferPointer, at host: UInt64) throws {
        if stagingCount > 0 {
            let end = stagingStart + UInt64(stagingCount)
            let gap = host - end
            if gap > UInt64(clusterSize) || stagingCount + Int(gap) + bytes.count > staging.count {
                try flushStaging()
            } else if gap > 0 {
                UnsafeMutableRawBufferPointer(rebasing: staging[stagingCount..<(stagingCount + Int(gap))])
                    .initializeMemory(as: UInt8.self, repeating: 0)
                stagingCount += Int(gap)
            }
        }
        if bytes.count > staging.count {
            try target.write(bytes, at: host)
            return
        }
        if stagingCount == 0 { stagingStart = host }
        UnsafeMutableRawBufferPointer(rebasing: staging[stagingCount..<(stagingCount + bytes.count)])
            .copyMemory(from: bytes)
        stagingCount += bytes.count
    }

    private func setL2Entry(guestCluster: UInt64, _ entry: UInt64) {
        let index = Int(guestCluster / UInt64(l2Entries))
        let slot = Int(guestCluster % UInt64(l2Entries))
        if openL2[index] == nil { openL2[index] = [UInt64](repeating: 0, count: l2Entries) }
        openL2[index]?[slot] = entry
    }

    /// Moves the open L2 tables that end at or before guest offset `end` to the pending list (in guest order);
    /// writes the list when it is full.
    private func closeL2Tables(before end: UInt64) throws {
        let perTable = UInt64(l2Entries) * UInt64(clusterSize)
        for index in openL2.keys.sorted() where UInt64(index + 1) * perTable <= end {
            if let table = openL2.removeValue(forKey: index) { pendingL2.append((index, table)) }
        }
        if pendingL2.count * clusterSize >= l2Budget { try writePendingL2Tables() }
    }

    /// Appends the pending L2 tables and points their L1 entries at them.
    private func writePendingL2Tables() throws {
        guard !pendingL2.isEmpty else { return }
        var host = allocateClusters(pendingL2.count)
        var encoded = [UInt8](repeating: 0, count: clusterSize)
        for table in pendingL2 {
            encoded.withUnsafeMutableBytes { raw in
                for (i, entry) in table.entries.enumerated() {
                    raw.storeBytes(of: entry.bigEndian, toByteOffset: i * 8, as: UInt64.self)
                }
            }
            try encoded.withUnsafeBytes { try stage($0, at: host) }
            l1[table.index] = host | Self.copiedFlag
            host += UInt64(clusterSize)
        }
        pendingL2.removeAll()
    }

    public func write(_ segment: SegmentBuffer) throws {
        if segment.compressed != nil {
            try writePacked(segment)
        } else {
            try writeUncompressed(segment)
        }
        // Tables that still await held clusters stay open.
        let segmentEnd = segment.guestOffset + UInt64(segment.length)
        try closeL2Tables(before: deferredClusters.first.map { min($0 * UInt64(clusterSize), segmentEnd) } ?? segmentEnd)
    }

    /// Without compression: runs of data clusters are written straight from the segment.
    private func writeUncompressed(_ segment: SegmentBuffer) throws {
        let firstCluster = segment.guestOffset / UInt64(clusterSize)
        let count = segment.clusters.count
        var index = 0
        while index < count {
            guard segment.clusters[index] == .data else {
                index += 1
                continue
            }
            var end = index + 1
            while end < count, segment.clusters[end] == .data { end += 1 }
            try writeDataRun(UnsafeRawBufferPointer(rebasing: segment.data[(index * clusterSize)..<(end * clusterSize)]),
                             firstGuestCluster: firstCluster + UInt64(index))
            index = end
        }
    }

    /// Appends whole clusters at the next cluster boundary and maps them to consecutive guest clusters.
    private func writeDataRun(_ bytes: UnsafeRawBufferPointer, firstGuestCluster: UInt64) throws {
        let count = bytes.count / clusterSize
        let host = allocateClusters(count)
        try flushStaging()
        try target.write(bytes, at: host)
        for i in 0..<count {
            setL2Entry(guestCluster: firstGuestCluster + UInt64(i), (host + UInt64(i * clusterSize)) | Self.copiedFlag)
        }
    }

    /// Copy offloading: the clusters are allocated like a data run and the target copies their bytes from
    /// `source` (a partial last cluster is completed with zeros by the file's end or by `write`).
    public func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, guestOffset: UInt64, length: UInt64) throws {
        let count = Int((length + UInt64(clusterSize) - 1) / UInt64(clusterSize))
        guard count > 0 else { return }
        let firstCluster = guestOffset / UInt64(clusterSize)
        let host = allocateClusters(count)
        try flushStaging()
        try target.copy(from: source, at: sourceOffset, to: host, length: length)
        let tail = UInt64(count * clusterSize) - length
        if tail > 0 {
            try ZeroBuffer.shared.forEachChunk(of: tail) { chunk, done in try target.write(chunk, at: host + length + done) }
        }
        for i in 0..<count {
            setL2Entry(guestCluster: firstCluster + UInt64(i), (host + UInt64(i * clusterSize)) | Self.copiedFlag)
        }
        try closeL2Tables(before: guestOffset + UInt64(count * clusterSize))
    }

    /// With compression: compressed clusters are packed at once; clusters that did not shrink are held back until
    /// `deferredBudget` bytes of them are held or the guest has moved `deferredSpan` past the first of them.
    private func writePacked(_ segment: SegmentBuffer) throws {
        guard let compressed = segment.compressed else { return }
        let firstCluster = segment.guestOffset / UInt64(clusterSize)
        for (index, encoding) in segment.clusters.enumerated() {
            let guestCluster = firstCluster + UInt64(index)
            if let first = deferredClusters.first, guestCluster - first >= deferredSpanClusters {
                try flushDeferredClusters()
            }
            switch encoding {
            case .zero:
                continue
            case let .compressed(offset, length):
                let host = allocateCompressed(length)
                try stage(UnsafeRawBufferPointer(rebasing: compressed[offset..<(offset + length)]), at: host)
                setL2Entry(guestCluster: guestCluster, compressedDescriptor(host: host, length: length))
            case .data:
                let buffer = deferredBytes ?? .allocate(byteCount: deferredBudgetClusters * clusterSize, alignment: 4096)
                deferredBytes = buffer
                let slot = deferredClusters.count * clusterSize
                UnsafeMutableRawBufferPointer(rebasing: buffer[slot..<(slot + clusterSize)])
                    .copyMemory(from: segment.clusterBytes(index))
                deferredClusters.append(guestCluster)
                if deferredClusters.count == deferredBudgetClusters { try flushDeferredClusters() }
            }
        }
    }

    /// Writes the held uncompressed clusters, in runs of consecutive guest clusters.
    private func flushDeferredClusters() throws {
        guard let buffer = deferredBytes, !deferredClusters.isEmpty else { return }
        var start = 0
        while start < deferredClusters.count {
            var end = start + 1
            while end < deferredClusters.count, deferredClusters[end] == deferredClusters[end - 1] + 1 { end += 1 }
            try writeDataRun(UnsafeRawBufferPointer(rebasing: buffer[(start * clusterSize)..<(end * clusterSize)]),
                             firstGuestCluster: deferredClusters[start])
            start = end
        }
        deferredClusters.removeAll(keepingCapacity: true)
    }

    /// The L2 entry of a compressed cluster (qcow2.txt, "Compressed Clusters Descriptor"): host byte offset in the
    /// low bits, then the number of 512-byte sectors beyond the first that the data touches.
    private func compressedDescriptor(host: UInt64, length: Int) -> UInt64 {
        let shift = UInt64(62 - (clusterBits - 8))
        let additionalSectors = (host + UInt64(length) - 1) / 512 - host / 512
        return Self.compressedFlag | additionalSectors << shift | host
    }

    public func finish() throws {
        try flushDeferredClusters()
        try closeL2Tables(before: .max)
        try writePendingL2Tables()
        let cs = UInt64(clusterSize)
        // An empty disk has no L1 table at all (l1_size 0, offset 0, as qemu-img create writes it): a cluster
        // reserved for it would be referenced by nothing, a leak for `qemu-img check`.
        let l1Bytes = l1.count * 8
        let l1Clusters = (l1Bytes + clusterSize - 1) / clusterSize

        // Refcount blocks must also count themselves, the refcount table and the L1 table: grow both until they
        // cover all.
        let usedClusters = Int((nextHost + cs - 1) / cs) + l1Clusters
        let entriesPerBlock = clusterSize / 2
        var blocks = 0
        var tableClusters = 0
        while true {
            let total = usedClusters + blocks + tableClusters
            let neededBlocks = (total + entriesPerBlock - 1) / entriesPerBlock
            let neededTable = (neededBlocks * 8 + clusterSize - 1) / clusterSize
            if neededBlocks == blocks && neededTable == tableClusters { break }
            blocks = neededBlocks
            tableClusters = neededTable
        }
        let blocksHost = allocateClusters(blocks)
        let tableHost = allocateClusters(tableClusters)
        // The L1 table comes last and the file ends where its entries end (rounded up to a sector), not at the end
        // of its cluster: reads past the end of an image file return zeros in qemu, and a small disk's L1 table
        // uses a few bytes of its cluster. qemu's compressed images likewise end inside their last cluster.
        let l1Host = l1Clusters > 0 ? allocateClusters(l1Clusters) : 0
        let l1Stored = (l1Bytes + 511) / 512 * 512

        var block = [UInt8](repeating: 0, count: clusterSize)
        for b in 0..<blocks {
            block.withUnsafeMutableBytes { raw in
                for i in 0..<entriesPerBlock {
                    let cluster = b * entriesPerBlock + i
                    let value: UInt16 = cluster < refcounts.count ? refcounts[cluster] : 0
                    raw.storeBytes(of: value.bigEndian, toByteOffset: i * 2, as: UInt16.self)
                }
            }
            try block.withUnsafeBytes { try stage($0, at: blocksHost + UInt64(b) * cs) }
        }
        var table = [UInt8](repeating: 0, count: tableClusters * clusterSize)
        table.withUnsafeMutableBytes { raw in
            for b in 0..<blocks {
                raw.storeBytes(of: (blocksHost + UInt64(b) * cs).bigEndian, toByteOffset: b * 8, as: UInt64.self)
            }
        }
        try table.withUnsafeBytes { try stage($0, at: tableHost) }
        if l1Clusters > 0 {
            var l1Encoded = [UInt8](repeating: 0, count: l1Stored)
            l1Encoded.withUnsafeMutableBytes { raw in
                for (i, entry) in l1.enumerated() { raw.storeBytes(of: entry.bigEndian, toByteOffset: i * 8, as: UInt64.self) }
            }
            try l1Encoded.withUnsafeBytes { try stage($0, at: l1Host) }
        }
        try flushStaging()

        let header = encodeHeader(l1Offset: l1Host, refcountTableOffset: tableHost, refcountTableClusters: tableClusters)
        try header.withUnsafeBytes { try target.write($0, at: 0) }
        try target.setLength(l1Clusters > 0 ? l1Host + UInt64(l1Stored) : tableHost + UInt64(tableClusters) * cs)
    }

    /// The version 3 header (qcow2.txt, "Header"), 112 bytes plus the end-of-extensions marker, padded to a cluster.
    private func encodeHeader(l1Offset: UInt64, refcountTableOffset: UInt64, refcountTableClusters: Int) -> [UInt8] {
        var header = ByteWriter(count: clusterSize)
        header.put([0x51, 0x46, 0x49, 0xFB], at: 0)               // magic "QFI\xfb"
        header.u32be(3, at: 4)                                     // version
        header.u32be(UInt32(clusterBits), at: 20)                  // cluster_bits
        header.u64be(virtualSize, at: 24)                          // size
        header.u32be(UInt32(l1.count), at: 36)                     // l1_size
        header.u64be(l1Offset, at: 40)                             // l1_table_offset
        header.u64be(refcountTableOffset, at: 48)                  // refcount_table_offset
        header.u32be(UInt32(refcountTableClusters), at: 56)        // refcount_table_clusters
        let zstd = options.compressionType == .zstd
        header.u64be(zstd ? 1 << 3 : 0, at: 72)                    // incompatible_features: compression type
        header.u32be(4, at: 96)                                    // refcount_order: 16-bit refcounts
        header.u32be(112, at: 100)                                 // header_length
        header.u8(zstd ? 1 : 0, at: 104)                           // compression_type
        // Bytes 112..119 stay zero: the end-of-header-extensions marker.
        return header.bytes
    }
}
