/// The two-level lookup QCOW v1, QCOW2, QED and sparse VMDK extents share: a first-level table in memory (L1, grain
/// directory) naming second-level tables in the file (L2, grain tables) whose entries describe one unit (cluster,
/// grain) each. Each format supplies the decoding of its first-level entries (`decodeDirectoryEntry`) and decodes
/// the raw entries this lookup returns.
///
/// Second-level tables are read in chunks of at most 64 KiB into one `BoundedCache` (`cacheBytes` of them), so
/// neither a huge table nor many tables make memory grow past the limit. A run of all-zero entries (unallocated in
/// every format) is reported as one answer, so sparse and preallocated-but-empty tables are walked in metadata time.
final class TwoLevelTable: Sendable {
    /// Byte order of the second-level entries.
    enum ByteOrder: Sendable {
        case bigEndian
        case littleEndian
    }

    /// The shape of the tables.
    struct Layout: Sendable {
        /// Guest bytes described by one entry (the cluster or grain size).
        var unitBytes: UInt64
        /// Entries in one second-level table.
        var entriesPerTable: UInt64
        /// Bytes per entry: 4, 8, or 16 (QCOW2 extended L2: the entry, then the subcluster bitmap).
        var entryBytes: Int
        var byteOrder: ByteOrder
        /// What a second-level table is called in messages (`QCOW L2 table`, `grain table`).
        var tableName: String
        /// What the first-level table is called in messages (`L1 table`, `grain directory`).
        var directoryName: String

        /// Bytes of one second-level table.
        var tableBytes: UInt64 { entriesPerTable * UInt64(entryBytes) }
    }

    /// One second-level entry and where it is.
    struct Entry {
        /// The entry (the first 64-bit word for 16-byte entries).
        var raw: UInt64
        /// The second 64-bit word of a 16-byte entry (the QCOW2 subcluster bitmap), else 0.
        var bitmap: UInt64
        /// Index of its table in the first-level table.
        var table: UInt64
        /// Index of the entry in its table.
        var index: UInt64
    }

    /// The answer for one unit.
    enum Lookup {
        /// This unit and the `units - 1` after it have no entry: their table is not allocated, or their entries are 0.
        case unallocated(units: UInt64)
        /// The unit's entry, not all zero.
        case entry(Entry)
    }

    /// Largest chunk of a second-level table read at once.
    static let maxChunkBytes = 64 << 10

    let layout: Layout
    private let file: ReadOnlyFile
    private let directory: [UInt64]
    private let decodeDirectoryEntry: @Sendable (_ raw: UInt64, _ index: Int) throws -> UInt64?
    private let chunkEntries: UInt64
    private let chunks: BoundedCache<ChunkKey, [UInt8]>

    /// A chunk of one table: keyed by table and entry, not by file offset alone, so tables that a damaged image makes
    /// overlap never share a chunk of another length.
    private struct ChunkKey: Hashable, Sendable {
        var tableOffset: UInt64
        var firstEntry: UInt64
    }

    /// A lookup through `directory` (first-level entries as stored) in `file`. `decodeDirectoryEntry` turns entry
    /// `index` into the file offset of its second-level table, checked (aligned, inside the file), or nil when the
    /// table is not allocated. At most `cacheBytes` of second-level tables are kept.
    init(file: ReadOnlyFile, layout: Layout, directory: [UInt64], cacheBytes: UInt64,
         decodeDirectoryEntry: @escaping @Sendable (_ raw: UInt64, _ index: Int) throws -> UInt64?) {
        self.file = file
        self.layout = layout
        self.directory = directory
        self.decodeDirectoryEntry = decodeDirectoryEntry
        let chunkBytes = min(layout.tableBytes, UInt64(Self.maxChunkBytes))
        chunkEntries = max(1, chunkBytes / UInt64(layout.entryBytes))
        chunks = BoundedCache(capacity: Int(min(max(16, cacheBytes / max(1, chunkBytes)), 1 << 20)))
    }

    /// Tables whose first-level entries were already decoded and checked: 0 means no table.
    convenience init(file: ReadOnlyFile, layout: Layout, tableOffsets: [UInt64], cacheBytes: UInt64) {
        self.init(file: file, layout: layout, directory: tableOffsets, cacheBytes: cacheBytes) { offset, _ in
            offset == 0 ? nil : offset
        }
    }

    /// The entry of guest unit `unit`.
    func lookup(unit: UInt64) throws -> Lookup {
        let table = unit / layout.entriesPerTable
        let index = unit % layout.entriesPerTable
        guard table < UInt64(directory.count) else {
            throw KDCTError.corrupt("\(layout.tableName) \(table) for guest offset \(unit * layout.unitBytes) lies beyond the \(layout.directoryName) (\(directory.count) entries)",
                                    file: file.path, field: layout.directoryName)
        }
        guard let tableOffset = try decodeDirectoryEntry(directory[Int(table)], Int(table)) else {
            return .unallocated(units: layout.entriesPerTable - index)
        }
        let first = index - index % chunkEntries
        let entryBytes = layout.entryBytes
        let chunk = try chunks.value(for: ChunkKey(tableOffset: tableOffset, firstEntry: first)) {
            let count = min(chunkEntries, layout.entriesPerTable - first) * UInt64(entryBytes)
            return try file.readBytes(count: Int(count), at: tableOffset + first * UInt64(entryBytes),
                                      what: "\(layout.tableName) \(table) at file offset \(tableOffset)")
        }
        return chunk.withUnsafeBytes { bytes in
            let at = Int(index - first) * entryBytes
            let raw = word(bytes, at, width: min(entryBytes, 8))
            let bitmap = entryBytes == 16 ? word(bytes, at + 8, width: 8) : 0
            if raw == 0 && bitmap == 0 {
                return .unallocated(units: UInt64(Self.zeroPrefix(bytes, from: at) / entryBytes))
            }
            return .entry(Entry(raw: raw, bitmap: bitmap, table: table, index: index))
        }
    }

    /// Reads every allocated second-level table now (runs of tables adjacent in the file with one read each), so
    /// later lookups never touch the file. The cache must have room for all of them.
    func preloadAll() throws {
        let tableBytes = Int(layout.tableBytes)
        let maxRun = max(1, (8 << 20) / tableBytes)
        var index = 0
        while index < directory.count {
            guard let start = try decodeDirectoryEntry(directory[index], index) else {
                index += 1
                continue
            }
            var run = 1
            while run < maxRun, index + run < directory.count,
                  try decodeDirectoryEntry(directory[index + run], index + run) == start + UInt64(run * tableBytes) {
                run += 1
            }
            let bytes = try file.readBytes(count: run * tableBytes, at: start,
                                           what: "\(layout.tableName)s \(index)..\(index + run - 1)")
            let chunkBytes = Int(chunkEntries) * layout.entryBytes
            var at = 0
            while at < bytes.count {
                let tableStart = at / tableBytes * tableBytes
                let end = min(bytes.count, at + chunkBytes, tableStart + tableBytes)
                let key = ChunkKey(tableOffset: start + UInt64(tableStart), firstEntry: UInt64((at - tableStart) / layout.entryBytes))
                chunks.insert(Array(bytes[at..<end]), for: key)
                at = end
            }
            index += run
        }
    }

    /// The unit holding a guest offset.
    struct Unit {
        /// Its index in the guest.
        var index: UInt64
        /// Guest offset of its first byte.
        var start: UInt64
        /// Offset of the asked-for byte inside it.
        var within: UInt64
        /// Bytes from the asked-for byte to the end of the unit, or to the end asked for when that comes first.
        var length: UInt64
    }

    /// The run at guest `offset` (before `end`): absent through the end of the unallocated entries that follow, or
    /// what `decode` makes of the entry of the unit holding it.
    @inline(__always)
    func mapping(at offset: UInt64, upTo end: UInt64,
                 decode: (_ entry: Entry, _ unit: Unit) throws -> MappedRun) throws -> MappedRun {
        let index = offset / layout.unitBytes
        let start = index * layout.unitBytes
        switch try lookup(unit: index) {
        case let .unallocated(units):
            let (runEnd, overflow) = (index + units).multipliedReportingOverflow(by: layout.unitBytes)
            return .absent((overflow ? end : min(end, runEnd)) - offset)
        case let .entry(entry):
            return try decode(entry, Unit(index: index, start: start, within: offset - start,
                                          length: min(end, start + layout.unitBytes) - offset))
        }
    }

    @inline(__always)
    private func word(_ bytes: UnsafeRawBufferPointer, _ at: Int, width: Int) -> UInt64 {
        switch (width, layout.byteOrder) {
        case (4, .littleEndian): return UInt64(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        case (4, .bigEndian): return UInt64(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        case (_, .littleEndian): return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self))
        case (_, .bigEndian): return UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self))
        }
    }

    /// How many bytes from `start` on are zero (whole 8-byte words at a time).
    private static func zeroPrefix(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        var offset = start
        while offset < bytes.count, offset & 7 != 0, bytes[offset] == 0 { offset += 1 }
        while offset + 8 <= bytes.count, bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == 0 { offset += 8 }
        while offset < bytes.count, bytes[offset] == 0 { offset += 1 }
        return offset - start
    }
}
