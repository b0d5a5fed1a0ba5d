/// Where the clusters of a new QCOW2 image go, placed as `qemu-img create` places them, so the header fields
/// (`l1_table_offset`, `refcount_table_offset`...) match qemu's for the same options (block/qcow2.c
/// `qcow2_co_create`, `qcow2_grow_l1_table`, `preallocate_co`; block/qcow2-refcount.c `alloc_clusters_noref`,
/// `alloc_refcount_block`):
///
/// - the header in cluster 0, a one-cluster refcount table in cluster 1 naming refcount block 0 in cluster 2;
/// - the L1 table at the first free cluster;
/// - with preallocation, for each L2 table: the table, then the data clusters it maps;
/// - every cluster allocated at the first free one, so the allocated clusters are always a prefix of the file, each
///   with refcount 1; a refcount block is placed at the first free cluster when a cluster it covers is allocated,
///   and when that place is covered by another block that does not exist yet, that block comes next (qemu's
///   "self-describing" rule).
///
/// When the blocks would not fit the one-cluster refcount table (qemu then moves the table; only metadata of more
/// than `clusterSize / 8` refcount blocks, e.g. a 512-byte-cluster image of many GiB), the table gets the clusters
/// it needs after the header and every block follows it before anything else: a valid image whose metadata offsets
/// differ from qemu's.
struct QCOW2CreationLayout {
    let clusterSize: UInt64
    /// Refcounts per refcount block (16-bit refcounts).
    let refcountsPerBlock: UInt64
    /// The refcount table's first cluster and its length in clusters.
    private(set) var refcountTableCluster: UInt64 = 1
    private(set) var refcountTableClusters: UInt64 = 1
    /// Refcount block clusters by block index.
    private(set) var blocks: [UInt64: UInt64] = [:]
    /// The first free cluster: every cluster below it is allocated, with refcount 1.
    private(set) var freeCluster: UInt64 = 0
    /// L1 table entries and first cluster (0 and 0 without an L1 table).
    private(set) var l1Size: UInt64 = 0
    private(set) var l1Cluster: UInt64 = 0
    /// With preallocation: each L2 table's cluster by L1 index, and the host cluster of each guest cluster's data
    /// as runs (first guest cluster, first host cluster, count).
    private(set) var l2Tables: [(index: Int, cluster: UInt64)] = []
    private(set) var dataRuns: [(guest: UInt64, host: UInt64, count: UInt64)] = []
    /// True when the layout is qemu's (false: the fallback with a larger refcount table).
    private(set) var matchesQemu = true
    /// Clusters below `freeCluster` that are not allocated (refcount 0).
    private(set) var unusedClusters: [UInt64] = []

    private struct TableFull: Error {}

    /// The layout of an image of `virtualSize` bytes (a multiple of 512), with L2 tables of `l2Entries` entries
    /// and, when `preallocate`, every guest cluster allocated.
    /// How the guest clusters are allocated.
    enum Preallocation {
        /// Not at all: only the L1 table.
        case none
        /// Each L2 table followed by its data clusters (qemu's `metadata`).
        case interleaved
        /// qemu's `falloc` and `full` (`qcow2_co_truncate` with `qcow2_refcount_area`): new refcount blocks and a
        /// new refcount table after the L1 table, then all the data clusters in one run; the first L2 table takes
        /// the old refcount table's cluster, the others follow the data.
        case dataArea
    }

    static func plan(virtualSize: UInt64, clusterSize: UInt64, l2Entries: UInt64,
                     preallocation: Preallocation) throws -> QCOW2CreationLayout {
        let guestClusters = (virtualSize + clusterSize - 1) / clusterSize
        let l1Size = (guestClusters + l2Entries - 1) / l2Entries
        var layout = QCOW2CreationLayout(clusterSize: clusterSize, refcountsPerBlock: clusterSize / 2)
        do {
            // qemu-img create: header, table and block 0 written, then allocated as clusters 0-2.
            layout.blocks[0] = 2
            layout.freeCluster = 0
            _ = try layout.allocate(3)
            try layout.place(l1Size: l1Size, guestClusters: guestClusters, l2Entries: l2Entries,
                             preallocate: preallocation == .interleaved)
            if preallocation == .dataArea {
                layout.placeDataArea(guestClusters: guestClusters, l2Entries: l2Entries)
            }
            return layout
        } catch is TableFull {
            // More refcount blocks than one table cluster names: every block placed up front.
            let preallocate = preallocation != .none
            let l1Clusters = (l1Size * 8 + clusterSize - 1) / clusterSize
            var total = 1 + l1Clusters + (preallocate ? l1Size + guestClusters : 0)
            var (tableClusters, blockCount): (UInt64, UInt64) = (0, 0)
            while true {
                let neededBlocks = (total + tableClusters + blockCount + layout.refcountsPerBlock - 1) / layout.refcountsPerBlock
                let neededTable = (neededBlocks * 8 + clusterSize - 1) / clusterSize
                if neededBlocks == blockCount && neededTable == tableClusters { break }
                (blockCount, tableClusters) = (neededBlocks, neededTable)
            }
            total += tableClusters + blockCount
            var fallback = QCOW2CreationLayout(clusterSize: clusterSize, refcountsPerBlock: clusterSize / 2)
            fallback.matchesQemu = false
            fallback.refcountTableClusters = tableClusters
            fallback.freeCluster = 1 + tableClusters + blockCount
            for block in 0..<blockCount { fallback.blocks[block] = 1 + tableClusters + block }
            // Every block exists, so placing no longer runs out of table. Preallocated images take the metadata
            // layout whatever the mode.
            try fallback.place(l1Size: l1Size, guestClusters: guestClusters, l2Entries: l2Entries,
                               preallocate: preallocate)
            return fallback
        }
    }

    /// The L1 table, then (with preallocation) each L2 table and its data clusters.
    private mutating func place(l1Size: UInt64, guestClusters: UInt64, l2Entries: UInt64, preallocate: Bool) throws {
        self.l1Size = l1Size
        guard l1Size > 0 else { return }
        l1Cluster = try allocate((l1Size * 8 + clusterSize - 1) / clusterSize)
        guard preallocate else { return }
        for index in 0..<l1Size {
            l2Tables.append((Int(index), try allocate(1)))
            let first = index * l2Entries
            let count = min(l2Entries, guestClusters - first)
            dataRuns.append((first, try allocate(count), count))
        }
    }

    /// qemu's `falloc`/`full` placement after the L1 table (see `Preallocation.dataArea`).
    private mutating func placeDataArea(guestClusters: UInt64, l2Entries: UInt64) {
        guard guestClusters > 0 else { return }
        let start = (fileLength + clusterSize - 1) / clusterSize
        let l2Count = l1Size
        let additional = guestClusters + l2Count
        // Refcount blocks for everything up to the end of the area, and a table naming them all, found together.
        var missing: [UInt64] = []
        var tableClusters: UInt64 = 0
        while true {
            let end = start + UInt64(missing.count) + tableClusters + additional
            let blockCount = (end + refcountsPerBlock - 1) / refcountsPerBlock
            let nowMissing = (0..<blockCount).filter { blocks[$0] == nil }
            let nowTable = (blockCount * 8 + clusterSize - 1) / clusterSize
            if nowMissing == missing && nowTable == tableClusters { break }
            (missing, tableClusters) = (nowMissing, nowTable)
        }
        for (i, block) in missing.enumerated() { blocks[block] = start + UInt64(i) }
        let oldTable = refcountTableCluster..<(refcountTableCluster + refcountTableClusters)
        refcountTableCluster = start + UInt64(missing.count)
        refcountTableClusters = tableClusters
        let dataStart = refcountTableCluster + tableClusters
        // The L2 tables take the freed clusters of the old table first, then the clusters after the data.
        var freed = Array(oldTable)
        var next = dataStart + guestClusters
        for index in 0..<l2Count {
            let cluster: UInt64
            if freed.isEmpty {
                cluster = next
                next += 1
            } else {
                cluster = freed.removeFirst()
            }
            l2Tables.append((Int(index), cluster))
            let first = index * l2Entries
            dataRuns.append((first, dataStart + first, min(l2Entries, guestClusters - first)))
        }
        // Any old table cluster no L2 table took stays free; qemu's images have one, so this is not reached.
        freeCluster = next
        unusedClusters = freed
    }

    /// Allocates `count` clusters at the first free one and gives them refcount blocks; returns the first.
    private mutating func allocate(_ count: UInt64) throws -> UInt64 {
        let start = freeCluster
        freeCluster += count
        guard count > 0 else { return start }
        for block in (start / refcountsPerBlock)...((start + count - 1) / refcountsPerBlock) {
            try ensureBlock(block)
        }
        return start
    }

    /// Places refcount block `block` at the first free cluster, after the block covering that cluster when it is
    /// another one that does not exist yet.
    private mutating func ensureBlock(_ block: UInt64) throws {
        guard blocks[block] == nil else { return }
        guard block < refcountTableClusters * clusterSize / 8 else { throw TableFull() }
        let cluster = freeCluster
        freeCluster += 1
        let covering = cluster / refcountsPerBlock
        if covering != block { try ensureBlock(covering) }
        blocks[block] = cluster
    }

    /// The length of the file qemu leaves: the end of the last structure written (the L1 table is written to the
    /// end of its entries, everything else as whole clusters).
    var fileLength: UInt64 {
        var end = (refcountTableCluster + refcountTableClusters) * clusterSize
        for cluster in blocks.values { end = max(end, (cluster + 1) * clusterSize) }
        if l1Size > 0 { end = max(end, l1Cluster * clusterSize + l1Size * 8) }
        for table in l2Tables { end = max(end, (table.cluster + 1) * clusterSize) }
        for run in dataRuns { end = max(end, (run.host + run.count) * clusterSize) }
        return end
    }
}
