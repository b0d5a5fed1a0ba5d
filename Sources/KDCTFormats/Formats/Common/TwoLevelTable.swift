/// The L1 -> L2 -> cluster lookup QCOW v1 and QED share: an in-memory L1 table of L2 table offsets (0: no L2
/// table) and L2 tables read through a bounded `TableChunkCache`. It yields raw L2 entries; each format decodes
/// and checks them itself.
struct TwoLevelTable: Sendable {
    /// Where a raw L2 entry came from, for error messages.
    struct Location {
        /// Cluster index in the guest.
        var cluster: UInt64
        /// File offset of the L2 table.
        var l2Offset: UInt64
        /// Index of the entry in its L2 table.
        var index: Int
    }

    /// File offsets of the L2 tables.
    let l1Table: [UInt64]
    let l2Cache: TableChunkCache
    /// log2 of the cluster size.
    let clusterBits: UInt64
    /// log2 of the number of entries of an L2 table.
    let l2Bits: UInt64

    /// The raw L2 entry of `cluster`, or nil when its L2 table is not allocated.
    func rawEntry(_ cluster: UInt64) throws -> (raw: UInt64, location: Location)? {
        let l1Index = cluster >> l2Bits
        guard l1Index < UInt64(l1Table.count) else {
            throw KDCTError.corrupt("cluster \(cluster) lies beyond the L1 table (\(l1Table.count) entries)", field: "L1 table")
        }
        let l2Offset = l1Table[Int(l1Index)]
        if l2Offset == 0 { return nil }
        let index = Int(cluster & ((1 << l2Bits) - 1))
        let (entries, first) = try l2Cache.chunk(tableOffset: l2Offset, index: index)
        return (entries[index - first], Location(cluster: cluster, l2Offset: l2Offset, index: index))
    }

    /// Walks the clusters covering `[start, end)` in order. `body` gets the raw entry (nil for a range whose L2
    /// table is not allocated, which is passed as one piece however many clusters it spans), the guest range
    /// the entry covers within `[start, end)`, and returns false to stop.
    func walk(from start: UInt64, to end: UInt64,
              _ body: (_ raw: UInt64?, _ location: Location, _ position: UInt64, _ length: UInt64) throws -> Bool) throws {
        var position = start
        while position < end {
            let cluster = position >> clusterBits
            let l1Index = cluster >> l2Bits
            guard l1Index < UInt64(l1Table.count) else {
                throw KDCTError.corrupt("cluster \(cluster) lies beyond the L1 table (\(l1Table.count) entries)", field: "L1 table")
            }
            let l2Offset = l1Table[Int(l1Index)]
            if l2Offset == 0 {
                let rangeEnd = min((l1Index + 1) << (clusterBits + l2Bits), end)
                guard try body(nil, Location(cluster: cluster, l2Offset: 0, index: 0), position, rangeEnd - position) else { return }
                position = rangeEnd
                continue
            }
            var index = Int(cluster & ((1 << l2Bits) - 1))
            let (entries, first) = try l2Cache.chunk(tableOffset: l2Offset, index: index)
            var current = cluster
            while index - first < entries.count, position < end {
                let clusterEnd = min((current + 1) << clusterBits, end)
                let location = Location(cluster: current, l2Offset: l2Offset, index: index)
                guard try body(entries[index - first], location, position, clusterEnd - position) else { return }
                position = clusterEnd
                current += 1
                index += 1
            }
        }
    }
}

/// A run of clusters being merged into one extent while walking a two-level table.
struct ClusterRun {
    var start: UInt64
    var length: UInt64
    var status: Extent.Status
    var compressed: Bool
    var host: UInt64?

    /// The extent the run describes.
    var extent: Extent { Extent(offset: start, length: length, status: status, compressed: compressed, hostOffset: host) }

    /// Appends `length` bytes at `position` to `run` when they have the same status (and, for data, follow
    /// contiguously in the file); starts the run when it is nil. Returns false when they cannot be merged.
    static func extend(_ run: inout ClusterRun?, status: Extent.Status, compressed: Bool = false, host: UInt64? = nil,
                       at position: UInt64, length: UInt64) -> Bool {
        guard var current = run else {
            run = ClusterRun(start: position, length: length, status: status, compressed: compressed, host: host)
            return true
        }
        guard current.status == status, current.compressed == compressed else { return false }
        switch (current.host, host) {
        case (nil, nil): break
        case let (a?, b?) where a + current.length == b: break
        default: return false
        }
        current.length += length
        run = current
        return true
    }
}
