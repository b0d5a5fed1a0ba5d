/// A bounded, thread-safe cache of second-level table entries (QCOW v1 and QED L2 tables), read from the file in
/// chunks of at most 64 KiB so that neither a huge table nor many tables can make memory grow past
/// `ImageLimits.maxTableCacheBytes`.
///
/// Entries are decoded once per chunk with explicit endianness. Eviction is first-in first-out, which suits the
/// converter's sequential walk; a miss costs one positional read.
final class TableChunkCache: @unchecked Sendable {
    /// Byte order of the table entries.
    enum ByteOrder: Sendable {
        case bigEndian
        case littleEndian
    }

    /// Largest chunk read at once.
    static let maxChunkBytes = 64 << 10

    private let file: ReadOnlyFile
    private let byteOrder: ByteOrder
    private let tableName: String
    /// Bytes of one whole table.
    let tableBytes: Int
    /// Entries per chunk (a power of two dividing the table's entry count).
    let chunkEntries: Int
    private let chunks: BoundedCache<UInt64, [UInt64]>

    /// A cache for tables of `tableBytes` bytes (a power of two, at least 8) in `file`, holding at most
    /// `cacheBytes` of entries (at least one chunk).
    init(file: ReadOnlyFile, tableBytes: Int, cacheBytes: UInt64, byteOrder: ByteOrder, tableName: String) {
        self.file = file
        self.byteOrder = byteOrder
        self.tableName = tableName
        self.tableBytes = tableBytes
        let chunkBytes = min(tableBytes, TableChunkCache.maxChunkBytes)
        chunkEntries = chunkBytes / 8
        chunks = BoundedCache(capacity: Int(min(cacheBytes / UInt64(chunkBytes), 1 << 20)))
    }

    /// The chunk of the table at file offset `tableOffset` that holds entry `index`, and the table index of the
    /// chunk's first entry. The caller has checked that the whole table lies inside the file.
    func chunk(tableOffset: UInt64, index: Int) throws -> (entries: [UInt64], firstIndex: Int) {
        let firstIndex = index - index % chunkEntries
        let key = tableOffset + UInt64(firstIndex) * 8
        let entries = try chunks.value(for: key) {
            let bytes = try file.readBytes(count: chunkEntries * 8, at: key,
                                           what: "\(tableName) at file offset \(tableOffset)")
            return byteOrder == .bigEndian ? TableDecoding.uint64BigEndian(bytes) : TableDecoding.uint64LittleEndian(bytes)
        }
        return (entries, firstIndex)
    }
}
