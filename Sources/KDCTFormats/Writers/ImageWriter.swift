/// How one cluster of a segment is to be stored.
public enum ClusterEncoding: Sendable, Equatable {
    /// Every byte is zero: nothing is written (a hole, an unallocated cluster).
    case zero
    /// Stored as is, from the segment's `data` at the cluster's position.
    case data
    /// Stored compressed: `length` bytes at `offset` in the segment's `compressed` buffer.
    case compressed(offset: Int, length: Int)
}

/// A cluster-aligned run of guest data that a worker has read, zero-detected and (optionally) compressed, handed
/// to the writer in guest order. Buffers are reused across segments.
public final class SegmentBuffer: @unchecked Sendable {
    /// Guest offset of the first byte (a multiple of `clusterSize`).
    public internal(set) var guestOffset: UInt64 = 0
    /// Bytes covered (a multiple of `clusterSize`; the last segment may reach past the virtual size, zero-padded).
    public internal(set) var length: Int = 0
    /// Size of one cluster.
    public let clusterSize: Int
    /// The guest bytes.
    public let data: UnsafeMutableRawBufferPointer
    /// Compressed payloads, when compressing.
    public let compressed: UnsafeMutableRawBufferPointer?
    /// One entry per cluster of `length`.
    public internal(set) var clusters: [ClusterEncoding] = []

    init(capacity: Int, clusterSize: Int, compressing: Bool) {
        self.clusterSize = clusterSize
        data = .allocate(byteCount: capacity, alignment: 4096)
        compressed = compressing ? .allocate(byteCount: capacity + clusterSize, alignment: 64) : nil
    }

    deinit {
        data.deallocate()
        compressed?.deallocate()
    }

    /// The bytes of cluster `index`.
    public func clusterBytes(_ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: data[(index * clusterSize)..<((index + 1) * clusterSize)])
    }
}

/// A writer of one output format. The converter calls `write` once per segment, strictly in guest order, from
/// one thread, then `finish` once.
public protocol ImageWriter: AnyObject {
    /// The zero-detection and alignment unit the converter must cut segments to.
    var clusterSize: Int { get }
    /// The compression wanted for clusters, or nil to store them uncompressed.
    var compression: CompressionType? { get }
    /// Stores one segment.
    func write(_ segment: SegmentBuffer) throws
    /// Writes the remaining metadata. The target is committed by the caller afterwards.
    func finish() throws
}

/// A writer that can store runs of whole clusters by having its target copy them from a file in the kernel (copy
/// offloading, `convert -C`): the data is never read into memory nor zero-detected.
public protocol RangeCopyingWriter: ImageWriter {
    /// Stores guest `[guestOffset, guestOffset+length)` as the `length` bytes at `sourceOffset` of `source`.
    /// `guestOffset` is cluster-aligned and `length` whole clusters (only the run ending the disk may stop short);
    /// calls interleave with `write` strictly in guest order.
    func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, guestOffset: UInt64, length: UInt64) throws
}
