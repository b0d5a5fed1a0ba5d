/// A reusable byte buffer for compressed grains and partial-grain inflation, kept in an `ObjectPool`.
final class VMDKScratchBuffer {
    private(set) var bytes: UnsafeMutableRawBufferPointer

    init(count: Int) { bytes = .allocate(byteCount: max(count, 1), alignment: 64) }
    deinit { bytes.deallocate() }

    /// Grows the buffer to at least `count` bytes, keeping the first `keeping` bytes.
    func reserve(_ count: Int, keeping: Int = 0) {
        guard count > bytes.count else { return }
        let grown = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
        if keeping > 0 { grown.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<min(keeping, bytes.count)])) }
        bytes.deallocate()
        bytes = grown
    }
}

/// A sparse extent: hosted sparse (KDMV, including streamOptimized), COWD (vmfsSparse) or seSparse. The grain
/// directory and tables are decoded at open (`VMDKGrainTables`); a read maps each grain, merges reads of grains that
/// are adjacent in the file, and inflates compressed grains in the calling thread (no lock), straight into the
/// caller's buffer when it asks for a whole grain.
final class VMDKSparseExtent: VMDKExtentReader {
    /// The extent file.
    let file: ReadOnlyFile
    /// The map's geometry.
    let layout: VMDKSparseLayout
    /// How entries decode.
    let encoding: VMDKGrainEncoding
    /// Grain directory and tables.
    let tables: VMDKGrainTables
    /// Compressed grains carry a `{lba, size}` marker (streamOptimized).
    let hasMarkers: Bool
    let byteCount: UInt64
    /// The extent's first byte in the guest, for error messages.
    let guestBase: UInt64
    /// Report host offsets in extents (single-file disks only, where the offset is unambiguous).
    let reportsHostOffsets: Bool
    private let grainBytes: UInt64
    private let entriesPerTable: UInt64
    private let compressedPool: ObjectPool<VMDKScratchBuffer>
    private let grainPool: ObjectPool<VMDKScratchBuffer>

    /// Largest grain accepted in a compressed extent (every known writer uses 64 KiB): bounds the per-thread
    /// inflate buffers whatever `maxClusterSize` is.
    static let maxCompressedGrainBytes: UInt64 = 16 << 20

    /// Opens the map described by `layout` in `file`.
    init(file: ReadOnlyFile, layout: VMDKSparseLayout, encoding: VMDKGrainEncoding, hasMarkers: Bool,
         byteCount: UInt64, guestBase: UInt64, reportsHostOffsets: Bool, budget: VMDKTableBudget) throws {
        if case .hosted(_, true) = encoding, layout.grainBytes > Self.maxCompressedGrainBytes {
            throw KDCTError.limit("compressed grain size", value: layout.grainBytes, limit: Self.maxCompressedGrainBytes,
                                  file: file.path)
        }
        self.file = file
        self.layout = layout
        self.encoding = encoding
        self.hasMarkers = hasMarkers
        self.byteCount = byteCount
        self.guestBase = guestBase
        self.reportsHostOffsets = reportsHostOffsets
        grainBytes = layout.grainBytes
        entriesPerTable = UInt64(layout.entriesPerTable)
        tables = try VMDKGrainTables(file: file, layout: layout, encoding: encoding, budget: budget)
        let grain = Int(layout.grainBytes)
        compressedPool = ObjectPool(maxKept: 64) { VMDKScratchBuffer(count: grain / 2 + 8192) }
        grainPool = ObjectPool(maxKept: 64) { VMDKScratchBuffer(count: grain) }
    }

    /// True when the grains are compressed.
    var isCompressed: Bool {
        if case .hosted(_, true) = encoding { return true }
        return false
    }

    // MARK: Mapping

    /// The grain `grainIndex`, decoded from entry `entry` of `table`.
    @inline(__always)
    private func grain(_ grainIndex: UInt64, table: UnsafeRawBufferPointer, entry: Int) throws -> VMDKGrain {
        let raw: UInt64 = layout.entryWidth == 8
            ? UInt64(littleEndian: table.loadUnaligned(fromByteOffset: entry * 8, as: UInt64.self))
            : UInt64(UInt32(littleEndian: table.loadUnaligned(fromByteOffset: entry * 4, as: UInt32.self)))
        if raw == 0 { return .unallocated }
        let start = grainIndex * grainBytes
        let needed = min(grainBytes, layout.capacityBytes - start)
        return try encoding.grain(raw, grainBytes: grainBytes, needed: needed, fileSize: file.size, file: file.path) {
            describe(grainIndex)
        }
    }

    /// Names grain `grainIndex`'s table entry and guest offset, for errors.
    private func describe(_ grainIndex: UInt64) -> String {
        let table = grainIndex / entriesPerTable
        let entry = grainIndex % entriesPerTable
        return "grain table \(table) entry \(entry) (guest offset \(guestBase + grainIndex * grainBytes))"
    }

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let limit = offset + min(maxLength, byteCount - offset)
        var position = offset
        var status: Extent.Status?
        var compressed = false
        var firstHost: UInt64?
        var nextHost: UInt64?
        walk: while position < limit {
            let grainIndex = position / grainBytes
            let tableIndex = grainIndex / entriesPerTable
            let tableFirstGrain = tableIndex * entriesPerTable
            let stop: Bool = try tables.withTable(Int(tableIndex)) { table in
                guard let table else {
                    // No grain table: every grain it covers is unallocated.
                    if let status, status != .absent { return true }
                    status = .absent
                    position = min(limit, (tableFirstGrain + entriesPerTable) * grainBytes)
                    return false
                }
                var index = grainIndex
                // Preallocated but empty tables (VMware and qemu write every table at creation): one word-wise
                // scan instead of a lookup per grain.
                if status == nil || status == .absent,
                   Self.isZero(table, fromByte: Int(index - tableFirstGrain) * layout.entryWidth) {
                    status = .absent
                    position = min(limit, (tableFirstGrain + entriesPerTable) * grainBytes)
                    return false
                }
                while position < limit, index < tableFirstGrain + entriesPerTable {
                    let inGrain = position - index * grainBytes
                    let count = min(grainBytes - inGrain, limit - position)
                    let grain = try self.grain(index, table: table, entry: Int(index - tableFirstGrain))
                    let grainStatus: Extent.Status
                    var grainCompressed = false
                    var host: UInt64?
                    switch grain {
                    case .unallocated: grainStatus = .absent
                    case .zero: grainStatus = .zero
                    case let .data(fileOffset):
                        grainStatus = .data
                        if reportsHostOffsets { host = fileOffset + inGrain }
                    case .compressed:
                        grainStatus = .data
                        grainCompressed = true
                    }
                    if let status {
                        if grainStatus != status || grainCompressed != compressed || host != nextHost { return true }
                    } else {
                        status = grainStatus
                        compressed = grainCompressed
                        firstHost = host
                    }
                    nextHost = host.map { $0 + count }
                    position += count
                    index += 1
                }
                return false
            }
            if stop { break walk }
        }
        return Extent(offset: offset, length: position - offset, status: status ?? .absent, compressed: compressed,
                      hostOffset: firstHost)
    }

    /// True when `table` holds only zero bytes from `start` on.
    private static func isZero(_ table: UnsafeRawBufferPointer, fromByte start: Int) -> Bool {
        var offset = start
        while offset + 8 <= table.count {
            if table.loadUnaligned(fromByteOffset: offset, as: UInt64.self) != 0 { return false }
            offset += 8
        }
        while offset < table.count {
            if table[offset] != 0 { return false }
            offset += 1
        }
        return true
    }

    // MARK: Reading

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        let total = buffer.count
        var done = 0
        // A pending run of uncompressed grains adjacent in the file: one pread for all of them.
        var runFileOffset: UInt64 = 0
        var runStart = 0
        var runLength = 0
        func flush() throws {
            guard runLength > 0 else { return }
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[runStart..<(runStart + runLength)])
            try file.read(into: slice, at: runFileOffset, what: "grain data")
            runLength = 0
        }
        while done < total {
            let position = offset + UInt64(done)
            let grainIndex = position / grainBytes
            let tableIndex = grainIndex / entriesPerTable
            let tableFirstGrain = tableIndex * entriesPerTable
            try tables.withTable(Int(tableIndex)) { table in
                guard let table else {
                    let tableEnd = (tableFirstGrain + entriesPerTable) * grainBytes
                    let count = Int(min(UInt64(total - done), tableEnd - position))
                    try flush()
                    UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                        .initializeMemory(as: UInt8.self, repeating: 0)
                    done += count
                    return
                }
                var index = grainIndex
                while done < total, index < tableFirstGrain + entriesPerTable {
                    let position = offset + UInt64(done)
                    let inGrain = position - index * grainBytes
                    let count = Int(min(grainBytes - inGrain, UInt64(total - done)))
                    switch try grain(index, table: table, entry: Int(index - tableFirstGrain)) {
                    case .unallocated, .zero:
                        try flush()
                        UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                            .initializeMemory(as: UInt8.self, repeating: 0)
                    case let .data(grainOffset):
                        let fileOffset = grainOffset + inGrain
                        if runLength > 0, runStart + runLength == done, runFileOffset + UInt64(runLength) == fileOffset {
                            runLength += count
                        } else {
                            try flush()
                            runFileOffset = fileOffset
                            runStart = done
                            runLength = count
                        }
                    case let .compressed(grainOffset):
                        try flush()
                        let destination = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                        try readCompressedGrain(index, at: grainOffset, inGrain: Int(inGrain), into: destination)
                    }
                    done += count
                    index += 1
                }
            }
        }
        try flush()
    }

    /// Fills `destination` with bytes `[inGrain, inGrain + destination.count)` of compressed grain `grainIndex`.
    /// A whole-grain request inflates straight into `destination`; a partial one goes through a pooled buffer.
    private func readCompressedGrain(_ grainIndex: UInt64, at fileOffset: UInt64, inGrain: Int,
                                     into destination: UnsafeMutableRawBufferPointer) throws {
        let needed = Int(min(grainBytes, layout.capacityBytes - grainIndex * grainBytes))
        if inGrain == 0, destination.count == Int(grainBytes) {
            try inflateGrain(grainIndex, at: fileOffset, into: destination, needed: needed)
            return
        }
        try grainPool.with { scratch in
            scratch.reserve(Int(grainBytes))
            let whole = UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[0..<Int(grainBytes)])
            try inflateGrain(grainIndex, at: fileOffset, into: whole, needed: needed)
            destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: whole[inGrain..<(inGrain + destination.count)]))
        }
    }

    /// Inflates grain `grainIndex` into `output` (one grain long). The grain must inflate to a whole grain, or, for
    /// the last grain of an extent whose size is not a multiple of the grain size, to exactly the `needed` bytes
    /// inside the extent (qemu writes it that way).
    private func inflateGrain(_ grainIndex: UInt64, at fileOffset: UInt64, into output: UnsafeMutableRawBufferPointer,
                              needed: Int) throws {
        let available = file.size - fileOffset  // fileOffset < file.size was checked when the entry was decoded
        let maxCompressed = 2 * grainBytes + 1024
        try compressedPool.with { scratch in
            let input: UnsafeRawBufferPointer
            if hasMarkers {
                let header = VMDKStreamMarkers.grainMarkerHeaderSize
                let first = Int(min(available, UInt64(header) + grainBytes / 2 + 4096))
                scratch.reserve(first)
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[0..<first]), at: fileOffset,
                              what: "grain marker")
                guard let marker = VMDKStreamMarkers.grainMarker(UnsafeRawBufferPointer(rebasing: scratch.bytes[0..<first])) else {
                    throw KDCTError(.corrupt, "\(describe(grainIndex)): the grain marker at file offset \(fileOffset) is cut off by the end of the file",
                                    file: file.path, field: "grain marker")
                }
                let expectedLBA = grainIndex * grainBytes / 512
                guard marker.lba == expectedLBA else {
                    throw KDCTError(.corrupt,
                                    "\(describe(grainIndex)): the grain marker at file offset \(fileOffset) is for sector \(marker.lba), not \(expectedLBA)",
                                    file: file.path, field: "grain marker")
                }
                let size = UInt64(marker.size)
                guard size > 0, size <= maxCompressed else {
                    throw KDCTError(.corrupt,
                                    "\(describe(grainIndex)): the grain marker at file offset \(fileOffset) declares \(size) compressed bytes",
                                    file: file.path, field: "grain marker")
                }
                guard size <= available - UInt64(header) else {
                    throw KDCTError(.corrupt,
                                    "\(describe(grainIndex)): the compressed grain at file offset \(fileOffset) (\(size) bytes) runs past the end of the file (\(file.size) bytes)",
                                    file: file.path, field: "grain marker")
                }
                let total = header + Int(size)
                if total > first {
                    // A poorly compressible grain: read the rest after what the first read brought.
                    scratch.reserve(total, keeping: first)
                    try file.read(into: UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[first..<total]),
                                  at: fileOffset + UInt64(first), what: "compressed grain")
                }
                input = UnsafeRawBufferPointer(rebasing: scratch.bytes[header..<total])
            } else {
                // Compressed without markers: the zlib stream starts at the grain offset; its length is unknown,
                // so read up to two grains (as qemu does) and let the decoder stop at the stream's end.
                let count = Int(min(available, maxCompressed))
                scratch.reserve(count)
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: scratch.bytes[0..<count]), at: fileOffset,
                              what: "compressed grain")
                input = UnsafeRawBufferPointer(rebasing: scratch.bytes[0..<count])
            }
            if try ClusterDecompression.inflate(input, into: output, wrapping: .zlib) { return }
            if needed < output.count,
               try ClusterDecompression.inflate(input, into: UnsafeMutableRawBufferPointer(rebasing: output[0..<needed]),
                                                wrapping: .zlib) {
                return
            }
            throw KDCTError(.corrupt,
                            "\(describe(grainIndex)): the compressed grain at file offset \(fileOffset) does not inflate to \(needed == output.count ? "" : "\(needed) or ")\(output.count) bytes",
                            file: file.path, field: "compressed grain")
        }
    }
}
