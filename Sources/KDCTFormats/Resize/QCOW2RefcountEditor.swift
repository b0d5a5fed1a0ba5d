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
