/// One write a log entry asks for ([MS-VHDX] 2.3.1.2-2.3.1.4).
enum VHDXLogWrite: Sendable, Equatable {
    /// 4 KiB of data (the descriptor's leading and trailing bytes restored) at a file offset.
    case data(fileOffset: UInt64, bytes: [UInt8])
    /// Zeros over a range.
    case zero(fileOffset: UInt64, length: UInt64)
}

/// A valid log entry ([MS-VHDX] 2.3.1): header fields and its writes in order.
struct VHDXLogEntry: Sendable, Equatable {
    /// Offset of the entry within the log.
    var position: Int
    /// `EntryLength`.
    var length: Int
    /// `Tail`: offset of the first entry of the sequence this one ends.
    var tail: Int
    /// `SequenceNumber`.
    var sequenceNumber: UInt64
    /// `FlushedFileOffset`: the file was at least this long when the entry was written.
    var flushedFileOffset: UInt64
    /// `LastFileOffset`: every structure fits below it.
    var lastFileOffset: UInt64
    /// The descriptors' writes, in order.
    var writes: [VHDXLogWrite]
}

/// Parsing of the VHDX log ring and search for the active sequence ([MS-VHDX] 2.3).
enum VHDXLog {
    /// Log sector size.
    static let sectorSize = 4096

    /// The bytes of `length` at `position` of the circular `log`, wrapping at its end.
    static func gather(_ log: [UInt8], at position: Int, length: Int) -> [UInt8] {
        if position + length <= log.count { return Array(log[position..<(position + length)]) }
        let first = log.count - position
        return Array(log[position...]) + Array(log[0..<(length - first)])
    }

    /// The entry starting at `position` (a multiple of 4 KiB) of the log ring `log`, or nil when no valid entry
    /// starts there. Valid means ([MS-VHDX] 2.3.1): signature `loge`; length a non-zero multiple of 4 KiB no
    /// larger than the log; tail a multiple of 4 KiB inside the log; sequence number above zero; the log GUID of
    /// the header; room for its descriptor sectors and data sectors; a matching CRC-32C over the entry; every
    /// descriptor `zero` or `desc` with the entry's sequence number and 4 KiB-aligned offsets (and lengths); every
    /// data sector signed `data` with the sequence number split around it.
    static func entry(in log: [UInt8], at position: Int, logGUID: VHDXGUID) -> VHDXLogEntry? {
        let logLength = log.count
        guard logLength >= sectorSize, logLength % sectorSize == 0, position >= 0, position < logLength,
              position % sectorSize == 0 else { return nil }
        let head = ByteReader(Array(log[position..<(position + 64)]), structure: "VHDX log entry header")
        guard let signature = try? head.slice(0, 4), signature == Array("loge".utf8),
              let checksum = try? head.u32le(4), let length32 = try? head.u32le(8), let tail32 = try? head.u32le(12),
              let sequence = try? head.u64le(16), let descriptorCount = try? head.u32le(24),
              let guid = try? VHDXGUID.read(head, 32), let flushed = try? head.u64le(48),
              let last = try? head.u64le(56) else { return nil }
        let length = Int(length32), tail = Int(tail32)
        guard length >= sectorSize, length % sectorSize == 0, length <= logLength,
              tail % sectorSize == 0, tail < logLength, sequence > 0, guid == logGUID else { return nil }
        // The header takes the room of two descriptors in the first sector ([MS-VHDX] 2.3.1).
        let descriptorSectors = (UInt64(descriptorCount) + 2 + 127) / 128
        guard descriptorSectors * UInt64(sectorSize) <= UInt64(length) else { return nil }
        let bytes = gather(log, at: position, length: length)
        guard VHDXChecksum.crc32c(bytes, checksumOffset: 4) == checksum else { return nil }
        let reader = ByteReader(bytes, structure: "VHDX log entry")
        let sectors = length / sectorSize
        var dataSector = Int(descriptorSectors)
        var writes: [VHDXLogWrite] = []
        writes.reserveCapacity(Int(descriptorCount))
        for index in 0..<Int(descriptorCount) {
            let base = 64 + index * 32
            guard let kind = try? reader.slice(base, 4), let fileOffset = try? reader.u64le(base + 16),
                  let descriptorSequence = try? reader.u64le(base + 24),
                  descriptorSequence == sequence, fileOffset % UInt64(sectorSize) == 0 else { return nil }
            if kind == Array("zero".utf8) {
                guard let zeroLength = try? reader.u64le(base + 8), zeroLength % UInt64(sectorSize) == 0,
                      fileOffset <= UInt64.max - zeroLength else { return nil }
                if zeroLength > 0 { writes.append(.zero(fileOffset: fileOffset, length: zeroLength)) }
            } else if kind == Array("desc".utf8) {
                guard dataSector < sectors, fileOffset <= UInt64.max - UInt64(sectorSize) else { return nil }
                let sector = dataSector * sectorSize
                guard let dataSignature = try? reader.slice(sector, 4), dataSignature == Array("data".utf8),
                      let high = try? reader.u32le(sector + 4), let low = try? reader.u32le(sector + 4092),
                      UInt64(high) << 32 | UInt64(low) == sequence,
                      let leading = try? reader.slice(base + 8, 8), let trailing = try? reader.slice(base + 4, 4),
                      let middle = try? reader.slice(sector + 8, 4084) else { return nil }
                writes.append(.data(fileOffset: fileOffset, bytes: leading + middle + trailing))
                dataSector += 1
            } else {
                return nil
            }
        }
        return VHDXLogEntry(position: position, length: length, tail: tail, sequenceNumber: sequence,
                            flushedFileOffset: flushed, lastFileOffset: last, writes: writes)
    }

    /// The active sequence of the log ring `log` ([MS-VHDX] 2.3.3), from its tail entry to its head entry, or
    /// nil when the log holds no valid, complete sequence.
    ///
    /// The scan follows the specification: from each candidate tail, extend a sequence over valid entries with
    /// consecutive sequence numbers; it is complete when its head's `Tail` is one of its entries; the complete
    /// sequence with the largest head sequence number wins. Only the entries from the head's tail on are
    /// returned (older entries were already flushed). Sequences longer than `maxEntries` are a
    /// `limitExceeded` error; the scan's work is bounded (each position parsed once).
    static func activeSequence(in log: [UInt8], logGUID: VHDXGUID, maxEntries: Int) throws -> [VHDXLogEntry]? {
        let logLength = log.count
        guard logLength >= sectorSize, logLength % sectorSize == 0 else { return nil }
        var parsed: [Int: VHDXLogEntry?] = [:]
        func entry(at position: Int) -> VHDXLogEntry? {
            if let known = parsed[position] { return known }
            let value = Self.entry(in: log, at: position, logGUID: logGUID)
            parsed[position] = value
            return value
        }
        var candidate: [VHDXLogEntry]?
        var currentTail = 0
        var oldTail = 0
        var steps = 0
        let maxSteps = (logLength / sectorSize) * 64 + maxEntries
        while true {
            var sequence: [VHDXLogEntry] = []
            var position = currentTail
            var covered = 0
            while let next = entry(at: position) {
                if let last = sequence.last, next.sequenceNumber != last.sequenceNumber &+ 1 { break }
                guard covered + next.length <= logLength else { break }
                sequence.append(next)
                if sequence.count > maxEntries {
                    throw KDCTError.limit("log sequence entries", value: UInt64(sequence.count), limit: UInt64(maxEntries))
                }
                steps += 1
                if steps > maxSteps {
                    throw KDCTError.limit("log scan steps", value: UInt64(steps), limit: UInt64(maxSteps))
                }
                covered += next.length
                position = (position + next.length) % logLength
            }
            let tailIndex = sequence.last.flatMap { head in sequence.firstIndex { $0.position == head.tail } }
            if let tailIndex, let head = sequence.last {
                if candidate == nil || head.sequenceNumber > (candidate?.last?.sequenceNumber ?? 0) {
                    candidate = Array(sequence[tailIndex...])
                }
                currentTail = position
            } else {
                currentTail = (currentTail + sectorSize) % logLength
            }
            // Wrapped around (or back to the start): the whole ring has been scanned.
            if currentTail <= oldTail { break }
            oldTail = currentTail
        }
        return candidate
    }
}
