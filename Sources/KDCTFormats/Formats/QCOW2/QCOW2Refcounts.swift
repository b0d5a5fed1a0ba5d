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
