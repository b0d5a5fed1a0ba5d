/// Cuts a device's guest range into segments for the converter in one extent walk: each segment is a run of
/// whole clusters (of `alignment` bytes) that contain data, at most `segmentSize` long. Clusters with no data byte
/// are never read.
struct SegmentPlanner {
    let device: any BlockDevice
    let alignment: UInt64
    let segmentSize: UInt64
    private(set) var cursor: UInt64 = 0
    /// The last extent the device returned: consecutive queries inside it are answered without asking again
    /// (for a raw file each query is two lseek calls).
    private var lastExtent: Extent?

    init(device: any BlockDevice, alignment: UInt64, segmentSize: UInt64) {
        self.device = device
        self.alignment = alignment
        self.segmentSize = max(alignment, segmentSize / alignment * alignment)
    }

    private func alignDown(_ value: UInt64) -> UInt64 { value / alignment * alignment }
    private func alignUp(_ value: UInt64) -> UInt64 { (value + alignment - 1) / alignment * alignment }

    /// The extent holding `offset`, reusing the last one when it covers `offset`.
    private mutating func extent(at offset: UInt64) throws -> Extent {
        if let last = lastExtent, last.offset <= offset, offset < last.end {
            return Extent(offset: offset, length: last.end - offset, status: last.status)
        }
        let extent = try device.extent(at: offset, maxLength: device.virtualSize - offset)
        lastExtent = extent
        return extent
    }

    /// The first data byte in `[from, before)`, and the end of the data extent holding it.
    private mutating func firstData(from start: UInt64, before end: UInt64) throws -> (offset: UInt64, runEnd: UInt64)? {
        var offset = start
        while offset < end {
            let extent = try self.extent(at: offset)
            if extent.status == .data { return (offset, extent.end) }
            guard extent.length > 0 else { break }
            offset += extent.length
        }
        return nil
    }

    /// The next segment `(offset, length)`, or nil when the guest range is exhausted.
    mutating func next() throws -> (offset: UInt64, length: UInt64)? {
        let size = device.virtualSize
        guard let first = try firstData(from: cursor, before: size) else {
            cursor = size
            return nil
        }
        let start = alignDown(first.offset)
        let limit = min(start + segmentSize, alignUp(size))
        var end = min(max(alignUp(first.runEnd), start + alignment), limit)
        while end < limit {
            // Does the next cluster hold any data byte?
            guard let data = try firstData(from: end, before: min(end + alignment, size)) else { break }
            end = min(max(alignUp(data.runEnd), end + alignment), limit)
        }
        cursor = end
        return (start, end - start)
    }
}
