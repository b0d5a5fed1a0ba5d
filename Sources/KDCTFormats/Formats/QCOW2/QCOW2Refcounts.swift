/// The refcount structures of a QCOW2 image (qcow2.txt, "Host cluster management"): a refcount table of
/// big-endian 64-bit entries, each naming a refcount block of one cluster that holds the refcounts of
/// `clusterSize * 8 / refcountBits` consecutive host clusters.
///
/// Decoded from bytes by pure functions; `check`, `resize` and the leak repair read and write refcounts through it.
struct QCOW2RefcountTable: Sendable {
    /// Bytes per cluster.
    let clusterSize: UInt64
    /// Bits per refcount (`1 << refcount_order`): 1 to 64.
    let refcountBits: UInt64
    /// Where the table is and how many clusters it spans.
    var tableOffset: UInt64
    var tableClusters: UInt64
    /// The table entries as stored (bits 9-55: the block's offset; the rest reserved).
    var entries: [UInt64]

    /// Refcounts in one block.
    var refcountsPerBlock: UInt64 { clusterSize * 8 / refcountBits }
    /// The largest refcount a field holds.
    var maxRefcount: UInt64 { refcountBits == 64 ? .max : (1 << refcountBits) - 1 }

    /// Bits 9-55 of a refcount table entry: the block's offset (qemu's `REFT_OFFSET_MASK`).
    static let offsetMask: UInt64 = 0xFFFF_FFFF_FFFF_FE00

    /// Reads the table `header` names from `file`, its size checked against `limits` and the file first.
    static func read(from file: ReadOnlyFile, header: QCOW2Header, limits: ImageLimits) throws -> QCOW2RefcountTable {
        let clusterSize = header.clusterSize
        let bytes = UInt64(header.refcountTableClusters) * clusterSize
        try ImageLimits.check("refcount table size", bytes, max: limits.maxTableBytes)
        try header.checkTable("refcount_table_offset", offset: header.refcountTableOffset, length: bytes,
                              fileSize: file.size)
        let entries = TableDecoding.uint64BigEndian(
            try file.readBytes(count: Int(bytes), at: header.refcountTableOffset, what: "refcount table"))
        return QCOW2RefcountTable(clusterSize: clusterSize, refcountBits: 1 << UInt64(header.refcountOrder),
                                  tableOffset: header.refcountTableOffset,
                                  tableClusters: UInt64(header.refcountTableClusters), entries: entries)
    }

    /// The file offset of refcount block `index` (nil: not allocated, or past the table).
    func blockOffset(_ index: Int) -> UInt64? {
        guard index < entries.count else { return nil }
        let offset = entries[index] & Self.offsetMask
        return offset == 0 ? nil : offset
    }

    /// The refcount block and the index inside it holding host cluster `cluster`'s refcount.
    func position(ofCluster cluster: UInt64) -> (block: Int, index: Int) {
        (Int(cluster / refcountsPerBlock), Int(cluster % refcountsPerBlock))
    }

    /// Entry `index` of a refcount block of `bits`-bit entries (qcow2.txt: widths below a byte are packed from the
    /// least significant bit; a byte and wider are big-endian).
    static func value(in block: [UInt8], index: Int, bits: UInt64) -> UInt64 {
        switch bits {
        case 1, 2, 4:
            let perByte = 8 / Int(bits)
            let byte = block[index / perByte]
            return UInt64(byte >> UInt8((index % perByte) * Int(bits))) & ((1 << bits) - 1)
        default:
            let width = Int(bits / 8)
            var value: UInt64 = 0
            for i in 0..<width { value = value << 8 | UInt64(block[index * width + i]) }
            return value
        }
    }

    /// Stores `value` (at most the field's maximum) as entry `index` of a refcount block of `bits`-bit entries.
    static func setValue(_ value: UInt64, in block: inout [UInt8], index: Int, bits: UInt64) {
        switch bits {
        case 1, 2, 4:
            let perByte = 8 / Int(bits)
            let shift = UInt8((index % perByte) * Int(bits))
            let mask = UInt8((1 << bits) - 1) << shift
            block[index / perByte] = block[index / perByte] & ~mask | UInt8(truncatingIfNeeded: value) << shift & mask
        default:
            let width = Int(bits / 8)
            for i in 0..<width {
                block[index * width + i] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - i)))
            }
        }
    }

    /// The stored refcount of every host cluster below `clusters`, block by block; a table entry that is
    /// unaligned or past the end of the file is reported to `problem` and its block skipped. Returns the refcounts,
    /// the offsets of the blocks read (by table index), and how many clusters past `clusters` (the end of the
    /// file) have a non-zero refcount (qemu-img check does not look at them).
    func storedRefcounts(in file: ReadOnlyFile, clusters: UInt64, problem: (String) -> Void) throws
        -> (refcounts: [UInt64], blocks: [(index: Int, offset: UInt64)], pastEnd: Int) {
        var stored = [UInt64](repeating: 0, count: Int(clusters))
        var blocks: [(index: Int, offset: UInt64)] = []
        var pastEnd = 0
        for index in entries.indices {
            guard let offset = blockOffset(index) else { continue }
            if offset % clusterSize != 0 || offset > file.size || clusterSize > file.size - offset {
                problem("refcount block \(index) at 0x\(String(offset, radix: 16)) is unaligned or past the end of the file")
                continue
            }
            blocks.append((index, offset))
            let block = try file.readBytes(count: Int(clusterSize), at: offset, what: "refcount block \(index)")
            for i in 0..<Int(refcountsPerBlock) {
                let cluster = UInt64(index) * refcountsPerBlock + UInt64(i)
                let value = Self.value(in: block, index: i, bits: refcountBits)
                if cluster < clusters {
                    stored[Int(cluster)] = value
                } else if value != 0 {
                    pastEnd += 1
                }
            }
        }
        return (stored, blocks, pastEnd)
    }

    /// The table's entries encoded, padded to whole clusters.
    func encodedTable() -> [UInt8] {
        var writer = ByteWriter(count: Int(tableClusters * clusterSize))
        for (i, entry) in entries.enumerated() where i * 8 < writer.bytes.count { writer.u64be(entry, at: i * 8) }
        return writer.bytes
    }
}

/// Refcounts read, changed and written back in place (`resize`): a block is read on first use and written by
/// `writeChangedBlocks()`; blocks added for new clusters start as zeros. The caller decides the order of writes
/// and flushes (see `QCOW2Resize`).
struct QCOW2RefcountEditor {
    /// The table, with the entries of added blocks.
    private(set) var table: QCOW2RefcountTable
    private let file: WritableFile
    private var blocks: [Int: [UInt8]] = [:]
    private var changed: Set<Int> = []

    init(table: QCOW2RefcountTable, file: WritableFile) {
        self.table = table
        self.file = file
    }

    private mutating func block(_ index: Int) throws -> [UInt8] {
        if let cached = blocks[index] { return cached }
        guard let offset = table.blockOffset(index) else {
            throw KDCTError.corrupt("no refcount block covers refcount block index \(index)", field: "refcount table")
        }
        var bytes = [UInt8](repeating: 0, count: Int(table.clusterSize))
        let got = try bytes.withUnsafeMutableBytes { try file.read(into: $0, at: offset) }
        guard got == bytes.count else {
            throw KDCTError(.truncated, "refcount block \(index) at file offset \(offset) lies past the end of the file",
                            field: "refcount table")
        }
        blocks[index] = bytes
        return bytes
    }

    /// The stored refcount of host cluster `cluster` (0 where no block covers it).
    mutating func refcount(of cluster: UInt64) throws -> UInt64 {
        let (index, slot) = table.position(ofCluster: cluster)
        guard table.blockOffset(index) != nil else { return 0 }
        return QCOW2RefcountTable.value(in: try block(index), index: slot, bits: table.refcountBits)
    }

    /// Adds `delta` to the refcount of `cluster`; refuses to go below 0 or above the field's maximum.
    mutating func add(_ delta: Int64, to cluster: UInt64) throws {
        let (index, slot) = table.position(ofCluster: cluster)
        var bytes = try block(index)
        let value = QCOW2RefcountTable.value(in: bytes, index: slot, bits: table.refcountBits)
        let (result, overflow) = delta < 0 ? value.subtractingReportingOverflow(UInt64(-delta))
                                           : value.addingReportingOverflow(UInt64(delta))
        guard !overflow, result <= table.maxRefcount else {
            throw KDCTError.corrupt("the refcount of cluster \(cluster) is \(value); it cannot change by \(delta)",
                                    field: "refcount")
        }
        QCOW2RefcountTable.setValue(result, in: &bytes, index: slot, bits: table.refcountBits)
        blocks[index] = bytes
        changed.insert(index)
    }

    /// Names a new, empty refcount block `index` at `offset` (table entry set in memory; written with the table).
    mutating func addBlock(_ index: Int, at offset: UInt64) {
        if index >= table.entries.count { table.entries += [UInt64](repeating: 0, count: index + 1 - table.entries.count) }
        table.entries[index] = offset
        blocks[index] = [UInt8](repeating: 0, count: Int(table.clusterSize))
        changed.insert(index)
    }

    /// Moves the table to `offset`, `clusters` long (the caller writes it and switches the header).
    mutating func relocateTable(to offset: UInt64, clusters: UInt64) {
        table.tableOffset = offset
        table.tableClusters = clusters
    }

    /// Writes every block changed since the last call, those in `only` (by block index) or all when nil; blocks
    /// adjacent in the file go out in one write.
    mutating func writeChangedBlocks(only: Set<Int>? = nil) throws {
        var pending: [(offset: UInt64, index: Int)] = []
        for index in changed where only?.contains(index) ?? true {
            if let offset = table.blockOffset(index), blocks[index] != nil { pending.append((offset, index)) }
        }
        pending.sort { $0.offset < $1.offset }
        var start = 0
        while start < pending.count {
            var end = start + 1
            while end < pending.count, pending[end].offset == pending[end - 1].offset + table.clusterSize { end += 1 }
            var run: [UInt8] = []
            run.reserveCapacity((end - start) * Int(table.clusterSize))
            for item in pending[start..<end] { run += blocks[item.index] ?? [] }
            try run.withUnsafeBytes { try file.write($0, at: pending[start].offset) }
            for item in pending[start..<end] { changed.remove(item.index) }
            start = end
        }
    }

    /// The highest cluster with a non-zero refcount, reading every block.
    mutating func lastUsedCluster() throws -> UInt64? {
        var last: UInt64?
        for index in table.entries.indices where table.blockOffset(index) != nil {
            let bytes = try block(index)
            for slot in 0..<Int(table.refcountsPerBlock)
            where QCOW2RefcountTable.value(in: bytes, index: slot, bits: table.refcountBits) != 0 {
                last = UInt64(index) * table.refcountsPerBlock + UInt64(slot)
            }
        }
        return last
    }
}
