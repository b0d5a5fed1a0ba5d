/// The block allocation table of a dynamic or differencing VHD: one big-endian 32-bit entry per block, the
/// sector (512-byte unit) offset in the file of the block's bitmap, which the block data follows;
/// 0xFFFFFFFF for a block not stored in this file.
struct VHDBlockAllocationTable: Sendable {
    /// The entry value of a block not stored in the file.
    static let unallocated: UInt32 = 0xFFFF_FFFF

    /// Entries, one per block of the guest.
    let entries: [UInt32]

    /// Decodes `bytes` (4 bytes per entry) and checks every allocated entry against the file:
    /// the block (its bitmap of `bitmapSize` bytes, then `blockSize` data bytes) must not overlap the metadata
    /// (`reserved`: the footer copy, the dynamic header, the table itself), must end within `fileSize`, and no
    /// two blocks may overlap.
    static func decode(_ bytes: [UInt8], blockSize: UInt64, bitmapSize: UInt64, reserved: [Range<UInt64>],
                              fileSize: UInt64, file: String? = nil) throws -> VHDBlockAllocationTable {
        let entries = TableDecoding.uint32BigEndian(bytes)
        let span = bitmapSize + blockSize
        var starts: [(start: UInt64, index: Int)] = []
        starts.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() where entry != unallocated {
            let start = UInt64(entry) * 512  // at most 2^41: no overflow
            if let clash = reserved.first(where: { $0.overlaps(start..<(start + span)) }) {
                throw KDCTError.corrupt("BAT entry \(index) places block \(index) (guest offset \(UInt64(index) * blockSize)) at file offset \(start), overlapping metadata at \(clash.lowerBound)..\(clash.upperBound) (footer copy, dynamic header or BAT)",
                                        file: file, field: "BAT entry \(index)")
            }
            if start + span > fileSize {
                throw KDCTError(.truncated,
                                "BAT entry \(index) places block \(index) (guest offset \(UInt64(index) * blockSize)) at file offset \(start)..\(start + span), past the end of the file (\(fileSize) bytes)",
                                file: file, field: "BAT entry \(index)")
            }
            starts.append((start, index))
        }
        starts.sort { $0.start < $1.start }
        for i in starts.indices.dropFirst() where starts[i].start < starts[i - 1].start + span {
            throw KDCTError.corrupt("BAT entries \(starts[i - 1].index) and \(starts[i].index) place blocks that overlap (file offsets \(starts[i - 1].start) and \(starts[i].start), each \(span) bytes)",
                                    file: file, field: "BAT entry \(starts[i].index)")
        }
        return VHDBlockAllocationTable(entries: entries)
    }
}
