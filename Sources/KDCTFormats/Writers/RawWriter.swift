/// How a RAW output's space is reserved (`-o preallocation=`).
public enum RawPreallocation: String, Sendable, CaseIterable {
    /// Sparse: zero ranges are holes.
    case off
    /// The whole file is allocated with `fallocate` (no data written for zero ranges).
    case falloc
    /// Zeros are written over the whole file first, so every block is allocated and written.
    case full
}

/// Writes a RAW image: the guest bytes at their own offsets, zero clusters left as holes.
public final class RawWriter: ImageWriter {
    /// Zero ranges smaller than this are written rather than left as holes (qemu-img's default `-S 4k`).
    public let clusterSize = 4096
    public let compression: CompressionType? = nil
    private let target: any OutputTarget
    private let virtualSize: UInt64

    /// Prepares `target` to hold `virtualSize` bytes with the given preallocation.
    public init(target: any OutputTarget, virtualSize: UInt64, preallocation: RawPreallocation = .off) throws {
        self.target = target
        self.virtualSize = virtualSize
        try target.setLength(virtualSize)
        switch preallocation {
        case .off: break
        case .falloc: try target.allocate(offset: 0, length: virtualSize)
        case .full: try writeZeros(to: target, length: virtualSize)
        }
    }

    private func writeZeros(to target: any OutputTarget, length: UInt64) throws {
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { chunk.deallocate() }
        chunk.initializeMemory(as: UInt8.self, repeating: 0)
        var offset: UInt64 = 0
        while offset < length {
            let count = Int(min(UInt64(chunk.count), length - offset))
            try target.write(UnsafeRawBufferPointer(rebasing: chunk[0..<count]), at: offset)
            offset += UInt64(count)
        }
    }

    public func write(_ segment: SegmentBuffer) throws {
        var index = 0
        let count = segment.clusters.count
        while index < count {
            guard segment.clusters[index] != .zero else { index += 1; continue }
            var end = index + 1
            while end < count && segment.clusters[end] != .zero { end += 1 }
            let offset = segment.guestOffset + UInt64(index * clusterSize)
            let length = min(UInt64((end - index) * clusterSize), virtualSize - offset)
            try target.write(UnsafeRawBufferPointer(rebasing: segment.data[(index * clusterSize)..<(index * clusterSize + Int(length))]),
                             at: offset)
            index = end
        }
    }

    public func finish() throws {}
}
