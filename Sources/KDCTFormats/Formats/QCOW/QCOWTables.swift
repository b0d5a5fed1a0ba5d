/// What a QCOW v1 L2 entry says about one cluster (block/qcow.c, get_cluster_offset).
enum QCOWClusterEntry: Sendable, Equatable {
    /// Bit 63: the cluster is compressed (raw deflate).
    static let compressedFlag: UInt64 = 1 << 63

    /// Not allocated: read from the backing file, or zeros.
    case unallocated
    /// Stored uncompressed at this file offset.
    case data(offset: UInt64)
    /// Stored compressed: `size` bytes (exact, not rounded to sectors) at file offset `offset`.
    case compressed(offset: UInt64, size: Int)

    /// Decodes `raw` for an image with `clusterBits`: a compressed entry keeps the compressed size in the
    /// `clusterBits` bits below bit 63 and the offset in the bits below those.
    init(raw: UInt64, clusterBits: UInt8) {
        if raw == 0 {
            self = .unallocated
        } else if raw & QCOWClusterEntry.compressedFlag != 0 {
            let sizeShift = 63 - UInt64(clusterBits)
            let offsetMask: UInt64 = (1 << sizeShift) - 1
            let size = (raw >> sizeShift) & ((1 << UInt64(clusterBits)) - 1)
            self = .compressed(offset: raw & offsetMask, size: Int(size))
        } else {
            self = .data(offset: raw)
        }
    }
}
