/// A sparse extent: hosted sparse (KDMV, including streamOptimized), COWD (vmfsSparse) or seSparse. The grain
/// directory is decoded and checked at open; grain tables go through the shared `TwoLevelTable` (all read at open
/// when the disk's `VMDKTableBudget` allows); each grain entry is decoded by `VMDKGrainEncoding` and checked against
/// the file when used.
final class VMDKSparseExtent: VMDKExtentReader {
    /// The extent file.
    let sparseFile: ReadOnlyFile
    /// The map's geometry.
    let layout: VMDKSparseLayout
    /// How entries decode.
    let encoding: VMDKGrainEncoding
    /// Compressed grains carry a `{lba, size}` marker (streamOptimized).
    let hasMarkers: Bool
    let byteCount: UInt64
    /// The extent's first byte in the guest, for error messages.
    let guestBase: UInt64
    /// Grain tables allocated in the grain directory.
    let allocatedTables: Int
    /// Every grain table was read at open.
    let tablesLoadedAtOpen: Bool
    private let tables: TwoLevelTable
    private let grainBytes: UInt64

    /// Largest grain accepted in a compressed extent (every known writer uses 64 KiB): bounds the per-thread
    /// inflate buffers whatever `maxClusterSize` is.
    static let maxCompressedGrainBytes: UInt64 = 16 << 20

    /// Opens the map described by `layout` in `file`.
    init(file: ReadOnlyFile, layout: VMDKSparseLayout, encoding: VMDKGrainEncoding, hasMarkers: Bool,
         byteCount: UInt64, guestBase: UInt64, budget: VMDKTableBudget) throws {
        if case .hosted(_, true) = encoding, layout.grainBytes > Self.maxCompressedGrainBytes {
            throw KDCTError.limit("compressed grain size", value: layout.grainBytes, limit: Self.maxCompressedGrainBytes,
                                  file: file.path)
        }
        sparseFile = file
        self.layout = layout
        self.encoding = encoding
        self.hasMarkers = hasMarkers
        self.byteCount = byteCount
        self.guestBase = guestBase
        grainBytes = layout.grainBytes
        let directory = try Self.readGrainDirectory(file, layout: layout, encoding: encoding, budget: budget)
        allocatedTables = directory.filter { $0 != 0 }.count
        // Tables read at open stay in the cache (it has room for all of them); the others share the budget.
        let eagerBytes = UInt64(allocatedTables) * UInt64(layout.tableBytes)
        tablesLoadedAtOpen = budget.takeEager(eagerBytes)
        let tableLayout = TwoLevelTable.Layout(unitBytes: layout.grainBytes, entriesPerTable: UInt64(layout.entriesPerTable),
                                               entryBytes: layout.entryWidth, byteOrder: .littleEndian,
                                               tableName: "grain table", directoryName: "grain directory")
        tables = TwoLevelTable(file: file, layout: tableLayout, tableOffsets: directory,
                               cacheBytes: tablesLoadedAtOpen ? max(budget.cacheBytesPerExtent, eagerBytes) : budget.cacheBytesPerExtent)
        if tablesLoadedAtOpen { try tables.preloadAll() }
    }

    /// The file offset of each grain table (0: no table, its grains are unallocated), every entry checked.
    private static func readGrainDirectory(_ file: ReadOnlyFile, layout: VMDKSparseLayout, encoding: VMDKGrainEncoding,
                                           budget: VMDKTableBudget) throws -> [UInt64] {
        let width = layout.entryWidth
        try budget.takeDirectory(UInt64(layout.directoryEntries) * 8, file: file.path)
        let bytes = try file.readBytes(count: layout.directoryEntries * width, at: layout.directoryOffset * 512,
                                       what: "grain directory")
        return try bytes.withUnsafeBytes { raw in
            try (0..<layout.directoryEntries).map { index in
                let entry = width == 8
                    ? UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))
                    : UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
                return try encoding.tableOffset(entry, index: index, tableBytes: layout.tableBytes, fileSize: file.size,
                                                file: file.path) ?? 0
            }
        }
    }

    var file: ReadOnlyFile? { sparseFile }

    /// True when the grains are compressed.
    var isCompressed: Bool {
        if case .hosted(_, true) = encoding { return true }
        return false
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try tables.mapping(at: offset, upTo: end) { entry, unit in try mapping(entry, unit) }
    }

    /// The run an allocated grain table entry maps (its grain checked to lie inside the file).
    private func mapping(_ entry: TwoLevelTable.Entry, _ unit: TwoLevelTable.Unit) throws -> MappedRun {
        let (grainStart, inGrain, length) = (unit.start, unit.within, unit.length)
        let needed = min(grainBytes, layout.capacityBytes - grainStart)
        let grainMapping = try encoding.grain(entry.raw, grainBytes: grainBytes, needed: needed, fileSize: sparseFile.size,
                                              file: sparseFile.path) {
            "grain table \(entry.table) entry \(entry.index) (guest offset \(guestBase + grainStart))"
        }
        switch grainMapping {
        case .unallocated:
            return .absent(length)
        case .zero:
            return .zero(length)
        case let .data(host):
            return .data(length, sparseFile, host + inGrain)
        case let .compressed(host):
            // Without markers the stream's length is unknown: up to two grains are read (as qemu does) and the decoder
            // stops at the stream's end.
            let unit = CompressedUnit(file: sparseFile, hostOffset: host,
                                      framing: hasMarkers ? .grainMarker(lba: grainStart / 512) : .bounded(2 * grainBytes + 1024),
                                      codec: .zlib, unitBytes: Int(grainBytes),
                                      shortUnitBytes: needed < grainBytes ? Int(needed) : nil, within: Int(inGrain),
                                      label: .grain(table: entry.table, entry: entry.index, guestOffset: guestBase + grainStart))
            return MappedRun(length: length, mapping: .compressed(unit))
        }
    }
}
