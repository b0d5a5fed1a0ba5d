/// The result of replaying a VHDX log in memory: file ranges whose content the log replaced, consulted by every
/// read of the file instead of writing the file ([MS-VHDX] 2.3.3 and its note 5: a read-only open replays in
/// memory).
///
/// Kept as sorted, non-overlapping segments; a later write replaces what it covers of earlier ones. Zero ranges
/// cost no memory whatever their length.
struct VHDXLogOverlay: Sendable {
    /// One replaced range: its bytes, or zeros when `bytes` is nil.
    struct Segment: Sendable {
        var start: UInt64
        var end: UInt64
        var bytes: [UInt8]?
        var source = 0

        init(start: UInt64, end: UInt64, bytes: [UInt8]?) {
            self.start = start
            self.end = end
            self.bytes = bytes
        }

        init(start: UInt64, end: UInt64, source: Int) {
            self.start = start
            self.end = end
            self.source = source
        }
    }

    private(set) var segments: [Segment] = []

    /// True when nothing was replayed.
    var isEmpty: Bool { segments.isEmpty }

    /// Start of the first replaced range (for a quick "does this read touch the overlay" test).
    private(set) var lowest: UInt64 = .max
    /// End of the last replaced range.
    private(set) var highest: UInt64 = 0

    /// An empty overlay.
    init() {}

    /// The overlay left by `writes` applied in order (a later write replaces what it covers of earlier ones).
    ///
    /// Built in one sweep over the sorted range boundaries with a heap of the writes covering the current point,
    /// so n writes cost O(n log n) whatever their overlaps.
    init(writes: [VHDXLogWrite]) {
        var ranges: [(start: UInt64, end: UInt64)] = []
        ranges.reserveCapacity(writes.count)
        for write in writes {
            switch write {
            case let .data(offset, bytes): ranges.append((offset, offset + UInt64(bytes.count)))
            case let .zero(offset, length): ranges.append((offset, offset + length))
            }
        }
        let order = ranges.indices.filter { ranges[$0].end > ranges[$0].start }.sorted { ranges[$0].start < ranges[$1].start }
        let boundaries = Array(Set(ranges.flatMap { [$0.start, $0.end] })).sorted()
        if boundaries.isEmpty { return }
        var heap = MaxHeap()
        var next = 0
        var result: [Segment] = []
        for (position, point) in boundaries.enumerated() where position + 1 < boundaries.count {
            while next < order.count, ranges[order[next]].start <= point {
                heap.push(order[next])
                next += 1
            }
            while let top = heap.top, ranges[top].end <= point { heap.pop() }
            guard let winner = heap.top else { continue }
            let upTo = boundaries[position + 1]
            if let last = result.last, last.end == point, last.source == winner {
                result[result.count - 1].end = upTo
            } else {
                result.append(Segment(start: point, end: upTo, source: winner))
            }
        }
        segments = result.map { segment in
            guard case let .data(offset, bytes) = writes[segment.source] else {
                return Segment(start: segment.start, end: segment.end, bytes: nil)
            }
            let from = Int(segment.start - offset), to = Int(segment.end - offset)
            return Segment(start: segment.start, end: segment.end, bytes: Array(bytes[from..<to]))
        }
        lowest = segments.first?.start ?? .max
        highest = segments.last?.end ?? 0
    }

    /// A binary max-heap of write indices (the latest write covering a point wins).
    private struct MaxHeap {
        private var items: [Int] = []
        var top: Int? { items.first }
        mutating func push(_ value: Int) {
            items.append(value)
            var child = items.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard items[parent] < items[child] else { break }
                items.swapAt(parent, child)
                child = parent
            }
        }
        mutating func pop() {
            guard !items.isEmpty else { return }
            items.swapAt(0, items.count - 1)
            items.removeLast()
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var largest = parent
                if left < items.count, items[left] > items[largest] { largest = left }
                if right < items.count, items[right] > items[largest] { largest = right }
                if largest == parent { break }
                items.swapAt(parent, largest)
                parent = largest
            }
        }
    }

    /// Overwrites the parts of `buffer` (file bytes at `offset`) that the log replaced.
    func patch(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) {
        let end = offset + UInt64(buffer.count)
        guard !segments.isEmpty, offset < highest, end > lowest else { return }
        // First segment ending after `offset`.
        var low = 0, high = segments.count
        while low < high {
            let mid = (low + high) / 2
            if segments[mid].end <= offset { low = mid + 1 } else { high = mid }
        }
        var index = low
        while index < segments.count, segments[index].start < end {
            let segment = segments[index]
            let from = max(segment.start, offset), to = min(segment.end, end)
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
            if let bytes = segment.bytes {
                bytes.withUnsafeBytes { source in
                    let start = Int(from - segment.start)
                    target.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[start..<(start + target.count)]))
                }
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0)
            }
            index += 1
        }
    }
}

/// The VHDX file as the reader sees it: the file itself, with a replayed log laid over it and extended to the
/// size the log says (bytes past the real end read as zeros up to `size`). Guest data is read through it too, since
/// a log entry may cover payload blocks.
final class VHDXFileView: HostFile {
    /// The file.
    let file: ReadOnlyFile
    /// Replayed log content.
    let overlay: VHDXLogOverlay
    /// The file size after replay (at least the real size).
    let size: UInt64

    /// A view of `file` with `overlay` applied, extended to `size`.
    init(file: ReadOnlyFile, overlay: VHDXLogOverlay = VHDXLogOverlay(), size: UInt64? = nil) {
        self.file = file
        self.overlay = overlay
        self.size = max(size ?? file.size, file.size)
    }

    var path: String { file.path }

    /// Reads exactly `buffer.count` bytes at `offset`; past `size` is a `truncated` error naming `what`.
    @inline(__always)
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: @autoclosure () -> String) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
        if overlay.isEmpty && !overflow && end <= file.size {
            try file.read(into: buffer, at: offset, what: what())
            return
        }
        guard !overflow, end <= size else {
            throw KDCTError(.truncated, "\(what()) at file offset \(offset) needs \(buffer.count) bytes but the file is \(size) bytes long",
                            file: file.path, field: what())
        }
        _ = try readAvailable(into: buffer, at: offset)
    }

    /// Reads up to `buffer.count` bytes at `offset`, stopping only at `size`; returns the count.
    func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < size else { return 0 }
        let wanted = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(min(UInt64(buffer.count), size - offset))])
        let got = try file.readAvailable(into: wanted, at: offset)
        if got < wanted.count {
            UnsafeMutableRawBufferPointer(rebasing: wanted[got...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        overlay.patch(wanted, at: offset)
        return wanted.count
    }

    /// Prefetches the file's own bytes (the log's are in memory; past the real end there is nothing to read).
    func prefetch(offset: UInt64, length: UInt64) { file.prefetch(offset: offset, length: length) }

    /// Reads `count` bytes at `offset` into a new array (`count` already checked against a limit).
    func readBytes(count: Int, at offset: UInt64, what: @autoclosure () -> String) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset, what: what()) }
        return bytes
    }
}
