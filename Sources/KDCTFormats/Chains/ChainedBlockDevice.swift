/// A backing/parent chain as one device: ranges the top layer does not hold (`.absent`) are read from the layer
/// below; below the bottom layer, or past its end, they read as zeros.
///
/// Flattening a chain is converting this device.
public final class ChainedBlockDevice: BlockDevice {
    /// The image on top (the one the user named).
    public let top: any BlockDevice
    /// The layer below (itself possibly a chain).
    public let base: any BlockDevice

    /// Layers `top` over `base`.
    public init(top: any BlockDevice, base: any BlockDevice) {
        self.top = top
        self.base = base
    }

    public var virtualSize: UInt64 { top.virtualSize }

    public var info: ImageInfo {
        var info = top.info
        let below = base.info
        info.backingChain = [below] + below.backingChain
        info.backingChain[0].backingChain = []
        return info
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let upper = try top.extent(at: offset, maxLength: maxLength)
        guard upper.status == .absent else { return upper }
        if offset >= base.virtualSize {
            return Extent(offset: offset, length: upper.length, status: .zero, depth: 1)
        }
        var lower = try base.extent(at: offset, maxLength: min(upper.length, base.virtualSize - offset))
        lower.depth += 1
        return lower
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        try top.read(into: buffer, at: offset)
        let end = offset + UInt64(buffer.count)
        let baseEnd = min(end, base.virtualSize)
        guard offset < baseEnd else { return }
        // The top read zeros into absent ranges; fill those from the layer below.
        try top.forEachExtent(from: offset, to: baseEnd) { extent in
            guard extent.status == .absent else { return }
            let start = Int(extent.offset - offset)
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(extent.length))])
            try base.read(into: slice, at: extent.offset)
        }
    }
}
