/// A reader on the shared mapping driver: it supplies only what is its own (decoding its tables into `mapping(at:upTo:)`
/// answers, and the names of the files it reads), and this protocol's extension implements `BlockDevice` on top, once
/// for every format: bounds and overflow checks, run merging, joined positional reads, zero fill and decompression.
///
/// The contract every reader therefore meets:
/// - `extent(at:maxLength:)`: `offset` must be below `virtualSize` and `maxLength` above 0, else `invalidArgument`;
///   `maxLength` is clamped to the end of the disk (`.max` means "to the end"), so no `offset + maxLength` is ever
///   computed. The result starts at `offset` and holds between 1 and `min(maxLength, virtualSize - offset)` bytes.
/// - `read(into:at:)`: the range must lie within the disk (an empty buffer at `virtualSize` is allowed), else
///   `invalidArgument`; the buffer is filled completely (absent and zero runs with zeros) or the call throws.
///
/// Readers keep their metadata immutable after open; the table caches they use are bounded and internally locked, so
/// one device serves the converter's threads without locks on the data path.
protocol MappedDevice: BlockDevice {
    /// The run starting at guest `offset`, where `offset < end <= virtualSize`: at least one byte, at most
    /// `end - offset`, every byte with one mapping. A reader may return less than the longest such run (one cluster,
    /// say); the driver asks again and merges.
    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun
    /// How extents name the files this device's runs point into.
    var hostFileNames: HostFileNames { get }
}

extension MappedDevice {
    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        guard offset < virtualSize else {
            throw KDCTError(.invalidArgument,
                            "extent asked at guest offset \(offset), outside the disk (virtual size \(virtualSize) bytes)",
                            file: hostFileNames.root)
        }
        guard maxLength > 0 else {
            throw KDCTError(.invalidArgument, "extent of at most 0 bytes asked at guest offset \(offset)",
                            file: hostFileNames.root)
        }
        let limit = min(maxLength, virtualSize - offset)
        let end = offset + limit
        let first = try checkedMapping(at: offset, upTo: end)
        var length = first.length
        while length < limit {
            let next = try checkedMapping(at: offset + length, upTo: end)
            guard first.isContinued(by: next, after: length) else { break }
            length += next.length
        }
        return first.extent(offset: offset, length: length, names: hostFileNames)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        let end = offset + UInt64(buffer.count)
        var pending = JoinedRead()
        var position = offset
        var peeked: MappedRun?
        while position < end {
            let run = try peeked.take() ?? checkedMapping(at: position, upTo: end)
            let start = Int(position - offset)
            switch run.mapping {
            case .absent, .zero:
                try pending.flush(into: buffer)
                UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(run.length))])
                    .initializeMemory(as: UInt8.self, repeating: 0)
                position += run.length
            case let .data(location):
                try pending.add(location, at: start, count: Int(run.length), into: buffer)
                position += run.length
            case let .compressed(unit):
                try pending.flush(into: buffer)
                var batch = CompressedBatch(unit, at: start, count: Int(run.length))
                position += run.length
                // Compressed units stored back to back are fetched with one read.
                while batch.canGrow, position < end, unit.framing.isBounded {
                    let next = try checkedMapping(at: position, upTo: end)
                    guard case let .compressed(nextUnit) = next.mapping,
                          batch.add(nextUnit, at: Int(position - offset), count: Int(next.length)) else {
                        peeked = next
                        break
                    }
                    position += next.length
                }
                try batch.read(into: buffer)
            }
        }
        try pending.flush(into: buffer)
    }

    /// Walks the mapping of `[offset, offset + length)` (clipped to the disk) and prefetches the host ranges of its
    /// data and compressed runs, neighbours in one file joined; stops quietly at the first mapping error (the read
    /// reports it).
    func prefetch(at offset: UInt64, length: UInt64) {
        guard offset < virtualSize, length > 0 else { return }
        let end = offset + min(length, virtualSize - offset)
        var pending = JoinedPrefetch()
        var position = offset
        while position < end {
            guard let run = try? checkedMapping(at: position, upTo: end) else { break }
            switch run.mapping {
            case .absent, .zero:
                break
            case let .data(location):
                pending.add(location.file, offset: location.offset, length: run.length)
            case let .compressed(unit):
                pending.add(unit.file, offset: unit.hostOffset, length: unit.prefetchLength)
            }
            position += run.length
        }
        pending.flush()
    }

    /// `mapping(at:upTo:)`, checked to keep its promise (a reader bug becomes an error, never a loop or a trap).
    @inline(__always)
    func checkedMapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        let run = try mapping(at: offset, upTo: end)
        guard run.length > 0, run.length <= end - offset else {
            throw KDCTError(.corrupt, "guest offset \(offset) mapped to a run of \(run.length) bytes (at most \(end - offset) expected)",
                            file: hostFileNames.root)
        }
        return run
    }
}

extension MappedRun {
    /// The run merging rule, the one place it is decided: `next`, starting `length` bytes after this run's start,
    /// continues it when it has the same status, compression, depth and file, and a host offset (when there is one)
    /// that continues this run's.
    @inline(__always)
    func isContinued(by next: MappedRun, after length: UInt64) -> Bool {
        guard next.depth == depth else { return false }
        switch (mapping, next.mapping) {
        case (.absent, .absent):
            return true
        case let (.zero(a), .zero(b)):
            return HostLocation.continues(a, after: length, with: b)
        case let (.data(a), .data(b)):
            return HostLocation.continues(a, after: length, with: b)
        case let (.compressed(a), .compressed(b)):
            return a.file === b.file
        default:
            return false
        }
    }

    /// The extent of `length` bytes at guest `offset` that this run starts.
    func extent(offset: UInt64, length: UInt64, names: HostFileNames) -> Extent {
        switch mapping {
        case .absent:
            return Extent(offset: offset, length: length, status: .absent, depth: depth)
        case let .zero(location):
            return Extent(offset: offset, length: length, status: .zero, hostOffset: location?.offset,
                          file: location.map { names.name(of: $0.file) }, depth: depth)
        case let .data(location):
            return Extent(offset: offset, length: length, status: .data, hostOffset: location.offset,
                          file: names.name(of: location.file), depth: depth)
        case let .compressed(unit):
            return Extent(offset: offset, length: length, status: .data, compressed: true,
                          file: names.name(of: unit.file), depth: depth)
        }
    }
}

extension HostLocation {
    /// True when `b` is `a` moved on by `length` bytes in the same file (or both are nil).
    @inline(__always)
    static func continues(_ a: HostLocation?, after length: UInt64, with b: HostLocation?) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case let (a?, b?): return a.file === b.file && a.offset.addingReportingOverflow(length) == (b.offset, false)
        default: return false
        }
    }
}

extension Optional {
    /// The value, leaving nil behind.
    @inline(__always)
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}

/// Host ranges to prefetch, joined while they follow each other in one file (overlapping or at most `gap` bytes
/// apart, as compressed units stored back to back are), so a run of clusters is one hint.
struct JoinedPrefetch {
    private var file: (any HostFile)?
    private var start: UInt64 = 0
    private var end: UInt64 = 0
    /// Largest hole between two ranges that still joins them (reading it costs less than a second request).
    static let gap: UInt64 = 64 << 10

    /// Adds `length` bytes at `offset` of `file`, prefetching what was pending first when they do not join it.
    mutating func add(_ file: any HostFile, offset: UInt64, length: UInt64) {
        let (rangeEnd, overflow) = offset.addingReportingOverflow(length)
        let clippedEnd = overflow ? UInt64.max : rangeEnd
        if let current = self.file, current === file, offset >= start, offset <= (end > UInt64.max - Self.gap ? UInt64.max : end + Self.gap) {
            end = max(end, clippedEnd)
            return
        }
        flush()
        self.file = file
        start = offset
        end = clippedEnd
    }

    /// Prefetches what is pending.
    mutating func flush() {
        guard let file, end > start else { return }
        self.file = nil
        file.prefetch(offset: start, length: end - start)
    }
}

/// Uncompressed runs that follow each other both in the caller's buffer and in one file, read with one `pread`.
private struct JoinedRead {
    private var file: (any HostFile)?
    private var hostOffset: UInt64 = 0
    private var start = 0
    private var count = 0

    /// Adds `count` bytes at `location` for buffer offset `start`, reading what was pending first when they do not
    /// continue it.
    @inline(__always)
    mutating func add(_ location: HostLocation, at start: Int, count: Int,
                      into buffer: UnsafeMutableRawBufferPointer) throws {
        if let file, file === location.file, self.start + self.count == start,
           hostOffset.addingReportingOverflow(UInt64(self.count)) == (location.offset, false) {
            self.count += count
            return
        }
        try flush(into: buffer)
        file = location.file
        hostOffset = location.offset
        self.start = start
        self.count = count
    }

    /// Reads what is pending.
    mutating func flush(into buffer: UnsafeMutableRawBufferPointer) throws {
        guard let file, count > 0 else { return }
        self.file = nil
        try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + count)]), at: hostOffset,
                      what: "guest data")
    }
}
