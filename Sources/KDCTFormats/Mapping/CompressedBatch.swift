/// Compressed runs read together: units stored back to back (qemu packs compressed clusters so) are fetched with one
/// positional read of the window that holds them all, then each is decompressed in the calling thread, straight into
/// the caller's buffer when the run is a whole unit.
struct CompressedBatch {
    /// Most units in one batch.
    static let maxUnits = 256
    /// Largest window read at once.
    static let maxWindowBytes: UInt64 = 4 << 20

    /// One unit and the part of the caller's buffer it fills.
    private struct Member {
        var unit: CompressedUnit
        var start: Int
        var count: Int
    }

    private var members: [Member]
    private var windowStart: UInt64
    private var windowEnd: UInt64

    /// A batch holding `unit`, whose run fills `count` bytes of the buffer from `start`.
    init(_ unit: CompressedUnit, at start: Int, count: Int) {
        members = [Member(unit: unit, start: start, count: count)]
        windowStart = unit.hostOffset
        windowEnd = unit.hostOffset
        if case let .bounded(bound) = unit.framing {
            windowEnd = unit.hostOffset.addingReportingOverflow(bound).overflow ? .max : unit.hostOffset + bound
        }
    }

    /// True while another unit may join.
    var canGrow: Bool { members.count < Self.maxUnits }

    /// Adds `unit` (its run fills `count` bytes from `start`) when it lies in, or right after, the window read so
    /// far, in the same file; false when it cannot join.
    mutating func add(_ unit: CompressedUnit, at start: Int, count: Int) -> Bool {
        guard case let .bounded(bound) = unit.framing, unit.file === members[0].unit.file,
              unit.hostOffset >= windowStart, unit.hostOffset <= windowEnd else {
            return false
        }
        let (unitEnd, overflow) = unit.hostOffset.addingReportingOverflow(bound)
        let end = max(windowEnd, unitEnd)
        guard !overflow, end - windowStart <= Self.maxWindowBytes else { return false }
        windowEnd = end
        members.append(Member(unit: unit, start: start, count: count))
        return true
    }

    /// Reads the window and decompresses every unit into its part of `buffer`.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws {
        try ScratchBuffers.pool.with { scratch in
            let first = members[0].unit
            if case let .grainMarker(lba) = first.framing {
                let stream = try Self.markedStream(first, lba: lba, scratch: scratch)
                try Self.decompress(members[0], stream, into: buffer, scratch: scratch)
                return
            }
            // Bounds were checked against the file when the units were mapped; the file may end inside the window.
            let window = scratch.input(Int(min(windowEnd - windowStart, first.file.size - min(first.file.size, windowStart))))
            let got = try first.file.readAvailable(into: window, at: windowStart)
            for member in members {
                guard case let .bounded(bound) = member.unit.framing else { continue }
                let from = Int(member.unit.hostOffset - windowStart)
                let to = Int(min(UInt64(got), member.unit.hostOffset - windowStart + bound))
                let stream = UnsafeRawBufferPointer(rebasing: window[min(from, to)..<to])
                try Self.decompress(member, stream, into: buffer, scratch: scratch)
            }
        }
    }

    /// Decompresses `member`'s unit from `stream` and copies the run's bytes into `buffer`.
    private static func decompress(_ member: Member, _ stream: UnsafeRawBufferPointer,
                                   into buffer: UnsafeMutableRawBufferPointer, scratch: ScratchBuffers) throws {
        let unit = member.unit
        let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[member.start..<(member.start + member.count)])
        let whole = unit.within == 0 && member.count == unit.unitBytes
        let output = whole ? destination : scratch.output(unit.unitBytes)
        var ok: Bool
        switch unit.codec {
        case .deflate: ok = try ClusterDecompression.inflate(stream, into: output, wrapping: .raw)
        case .zlib: ok = try ClusterDecompression.inflate(stream, into: output, wrapping: .zlib)
        case .zstd: ok = try ClusterDecompression.zstdDecompress(stream, into: output)
        }
        if !ok, let short = unit.shortUnitBytes, short < unit.unitBytes {
            ok = try ClusterDecompression.inflate(stream, into: UnsafeMutableRawBufferPointer(rebasing: output[0..<short]),
                                                  wrapping: unit.codec == .zlib ? .zlib : .raw)
        }
        guard ok else {
            let sizes = unit.shortUnitBytes.map { "\($0) or \(unit.unitBytes)" } ?? "exactly \(unit.unitBytes)"
            throw KDCTError(.corrupt,
                            "\(unit.label.text): the compressed data at file offset \(unit.hostOffset) (\(stream.count) bytes read) does not inflate to \(sizes) bytes",
                            file: unit.file.path, field: unit.label.field)
        }
        if !whole {
            destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: output[unit.within..<(unit.within + member.count)]))
        }
    }

    /// The zlib stream of a streamOptimized grain: its marker `{lba u64, size u32}` is read and checked first (the
    /// grain must be the one the table says, and fit in the file), then the stream it announces.
    private static func markedStream(_ unit: CompressedUnit, lba: UInt64, scratch: ScratchBuffers) throws
        -> UnsafeRawBufferPointer {
        let file = unit.file
        let header = VMDKStreamMarkers.grainMarkerHeaderSize
        let what = unit.label.text
        let available = file.size - min(file.size, unit.hostOffset)
        // Enough for the marker and a typical grain in one read; a poorly compressible grain takes a second one.
        let first = Int(min(available, UInt64(header + unit.unitBytes / 2 + 4096)))
        var input = scratch.input(first)
        try file.read(into: input, at: unit.hostOffset, what: "grain marker")
        guard let marker = VMDKStreamMarkers.grainMarker(UnsafeRawBufferPointer(input)) else {
            throw KDCTError(.corrupt, "\(what): the grain marker at file offset \(unit.hostOffset) is cut off by the end of the file",
                            file: file.path, field: "grain marker")
        }
        guard marker.lba == lba else {
            throw KDCTError(.corrupt,
                            "\(what): the grain marker at file offset \(unit.hostOffset) is for sector \(marker.lba), not \(lba)",
                            file: file.path, field: "grain marker")
        }
        let size = UInt64(marker.size)
        guard size > 0, size <= 2 * UInt64(unit.unitBytes) + 1024 else {
            throw KDCTError(.corrupt, "\(what): the grain marker at file offset \(unit.hostOffset) declares \(size) compressed bytes",
                            file: file.path, field: "grain marker")
        }
        guard size <= available - UInt64(header) else {
            throw KDCTError(.corrupt,
                            "\(what): the compressed grain at file offset \(unit.hostOffset) (\(size) bytes) runs past the end of the file (\(file.size) bytes)",
                            file: file.path, field: "grain marker")
        }
        let total = header + Int(size)
        if total > first {
            input = scratch.input(total, keeping: first)
            try file.read(into: UnsafeMutableRawBufferPointer(rebasing: input[first..<total]),
                          at: unit.hostOffset + UInt64(first), what: "compressed grain")
        }
        return UnsafeRawBufferPointer(rebasing: input[header..<total])
    }
}

extension CompressedUnit.Framing {
    /// True for a stream of known bounds (one that can be fetched together with its neighbours).
    var isBounded: Bool {
        if case .bounded = self { return true }
        return false
    }
}

extension CompressedUnit.Label {
    /// The unit named in an error message.
    var text: String {
        switch self {
        case let .cluster(index, guestOffset): return "compressed cluster \(index) (guest offset \(guestOffset))"
        case let .grain(table, entry, guestOffset): return "grain table \(table) entry \(entry) (guest offset \(guestOffset))"
        }
    }

    /// The error's field.
    var field: String {
        switch self {
        case .cluster: return "compressed cluster"
        case .grain: return "compressed grain"
        }
    }
}

/// Reusable input and output buffers for decompressing units, grown on demand, one per concurrent read.
final class ScratchBuffers: @unchecked Sendable {  // only ever used by one thread at a time, through `pool`
    /// The buffers of reads in progress in any thread.
    static let pool = ObjectPool<ScratchBuffers>(maxKept: 64) { ScratchBuffers() }

    private var inputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)
    private var outputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)

    deinit {
        inputBuffer.deallocate()
        outputBuffer.deallocate()
    }

    /// A buffer of exactly `count` bytes for compressed input, keeping the first `keeping` bytes of the previous one.
    func input(_ count: Int, keeping: Int = 0) -> UnsafeMutableRawBufferPointer {
        if inputBuffer.count < count {
            let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
            if keeping > 0 {
                grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: inputBuffer[0..<min(keeping, inputBuffer.count)]))
            }
            inputBuffer.deallocate()
            inputBuffer = grown
        }
        return UnsafeMutableRawBufferPointer(rebasing: inputBuffer[0..<count])
    }

    /// A buffer of exactly `count` bytes for decompressed output.
    func output(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if outputBuffer.count < count {
            outputBuffer.deallocate()
            outputBuffer = .allocate(byteCount: count, alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: outputBuffer[0..<count])
    }
}
