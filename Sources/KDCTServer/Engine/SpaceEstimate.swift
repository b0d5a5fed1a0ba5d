/// The space a RAW or QCOW2 output needs, computed as `qemu-img measure` does (block/qcow2.c, qcow2_measure and
/// qcow2_calc_prealloc_size; block/file-posix.c's raw measure), so the numbers match qemu-img's.
///
/// A minimal stand-in inside the service until the library's own `measure` (the destinations issue) lands; it
/// needs only the source's virtual size and its ranges holding data.
enum SpaceEstimate {
    /// `required`: what this source's output takes (QCOW2: the metadata of a fully allocated image, minus the data
    /// clusters the source does not use; an upper bound with compression). `fullyAllocated`: the output with every
    /// cluster allocated. RAW: both are the source's size, as qemu-img says.
    static func measure(virtualSize: UInt64, dataRanges: [(offset: UInt64, length: UInt64)],
                        qcow2ClusterSize: UInt64?) -> (required: UInt64, fullyAllocated: UInt64) {
        guard let clusterSize = qcow2ClusterSize else { return (virtualSize, virtualSize) }
        let size = roundUp(virtualSize, clusterSize)
        // Each cluster touched by data counts once (qemu extends each data run to its cluster's end).
        var data: UInt64 = 0
        var countedEnd: UInt64 = 0
        for (offset, length) in dataRanges where length > 0 {
            let start = max(offset / clusterSize * clusterSize, countedEnd)
            let end = roundUp(offset + length, clusterSize)
            if end > start {
                data += end - start
                countedEnd = end
            }
        }
        let full = fullyAllocatedQCOW2(size: size, clusterSize: clusterSize)
        return (full - size + data, full)
    }

    /// qcow2_calc_prealloc_size with 16-bit refcounts: header, L2 and L1 tables, refcount metadata, data.
    static func fullyAllocatedQCOW2(size: UInt64, clusterSize: UInt64) -> UInt64 {
        let alignedSize = roundUp(size, clusterSize)
        let entriesPerCluster = clusterSize / 8
        var meta = clusterSize                                  // header
        let l2Entries = roundUp(alignedSize / clusterSize, entriesPerCluster)
        meta += l2Entries * 8                                   // L2 tables
        let l1Entries = roundUp(l2Entries * 8 / clusterSize, entriesPerCluster)
        meta += l1Entries * 8                                   // L1 table
        meta += refcountMetadataSize(clusters: (meta + alignedSize) / clusterSize, clusterSize: clusterSize)
        return meta + alignedSize
    }

    /// qcow2_refcount_metadata_size (refcount_order 4): the fixed point where the refcount blocks and table
    /// also count themselves.
    static func refcountMetadataSize(clusters: UInt64, clusterSize: UInt64) -> UInt64 {
        let refcountsPerBlock = clusterSize * 8 / 16
        let blocksPerTableCluster = clusterSize / 8
        var table: UInt64 = 0
        var blocks: UInt64 = 0
        var total: UInt64 = 0
        var last: UInt64
        repeat {
            last = total
            blocks = divideRoundingUp(clusters + table + blocks, refcountsPerBlock)
            table = divideRoundingUp(blocks, blocksPerTableCluster)
            total = clusters + blocks + table
        } while total != last
        return (blocks + table) * clusterSize
    }

    static func roundUp(_ value: UInt64, _ multiple: UInt64) -> UInt64 { divideRoundingUp(value, multiple) * multiple }

    static func divideRoundingUp(_ value: UInt64, _ divisor: UInt64) -> UInt64 { (value + divisor - 1) / divisor }
}
