/// How a RAW output's space is reserved (`-o preallocation=`).
public enum RawPreallocation: String, Sendable, CaseIterable {
    /// Sparse: zero ranges are holes.
    case off
    /// The whole file is allocated with `fallocate` (no data written for zero ranges).
    case falloc
    /// Zeros are written over the whole file first, so every block is allocated and written.
    case full
}

/// Writes a RAW image: the guest bytes at their own offsets, zero clusters left as holes. On a target that does
/// not read as zeros (a block device, an existing file), the ranges without data are zeroed as the writer passes
/// them (the target picks the cheapest way), up to the guest's end only.
public final class RawWriter: RangeCopyingWriter {
    /// Zero ranges smaller than this are written rather than left as holes (qemu-img's default `-S 4k`).
    public let clusterSize = 4096
    public let compression: CompressionType? = nil
    private let target: any OutputTarget
    private let virtualSize: UInt64
    /// Every guest byte before this offset has been written or zeroed.
    private var cursor: UInt64 = 0
    private let zeroesSkippedRanges: Bool

    /// Prepares `target` to hold `virtualSize` bytes with the given preallocation.
    public init(target: any OutputTarget, virtualSize: UInt64, preallocation: RawPreallocation = .off) throws {
        self.target = target
        self.virtualSize = virtualSize
        zeroesSkippedRanges = !target.readsAsZeros
        try target.setLength(virtualSize)
        switch preallocation {
        case .off: break
        case .falloc: try target.allocate(offset: 0, length: virtualSize)
        case .full: try ZeroBuffer.shared.forEachChunk(of: virtualSize) { chunk, done in try target.write(chunk, at: done) }
        }
    }

    /// Zeroes `[cursor, end)` when the target needs it, and moves the cursor to `end`.
    private func advance(to end: UInt64) throws {
        let end = min(end, virtualSize)
        if zeroesSkippedRanges && end > cursor { try target.writeZeros(offset: cursor, length: end - cursor) }
        cursor = max(cursor, end)
    }

    public func write(_ segment: SegmentBuffer) throws {
        var index = 0
        let count = segment.clusters.count
        while index < count {
            guard segment.clusters[index] != .zero else { index += 1; continue }
            var end = index + 1
            while end < count && (segment.clusters[end] != .zero || shortZeroRunToWrite(segment, at: end)) { end += 1 }
            let offset = segment.guestOffset + UInt64(index * clusterSize)
            let length = min(UInt64((end - index) * clusterSize), virtualSize - offset)
            try advance(to: offset)
            try target.write(UnsafeRawBufferPointer(rebasing: segment.data[(index * clusterSize)..<(index * clusterSize + Int(length))]),
                             at: offset)
            cursor = offset + length
            index = end
        }
        try advance(to: segment.guestOffset + UInt64(segment.length))
    }

    /// On a target that does not read as zeros, a short run of zero clusters between data clusters of one
    /// segment is written with them (its bytes are zeros in the buffer): one write instead of a zeroing call.
    private func shortZeroRunToWrite(_ segment: SegmentBuffer, at index: Int) -> Bool {
        guard zeroesSkippedRanges else { return false }
        let limit = min(segment.clusters.count, index + Self.shortZeroRun)
        return segment.clusters[index..<limit].contains { $0 != .zero }
    }

    /// Zero clusters in a row written as data on targets that need zeroing (64 KiB).
    private static let shortZeroRun = 16

    public func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, guestOffset: UInt64, length: UInt64) throws {
        let length = min(length, virtualSize - guestOffset)
        try advance(to: guestOffset)
        try target.copy(from: source, at: sourceOffset, to: guestOffset, length: length)
        cursor = guestOffset + length
    }

    public func finish() throws { try advance(to: virtualSize) }
}
