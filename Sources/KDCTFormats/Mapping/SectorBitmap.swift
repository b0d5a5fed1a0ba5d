/// Sector presence bitmaps (VHD block bitmaps, VHDX sector bitmap blocks): one bit per sector, set when the
/// sector is stored in this file.
enum SectorBitmap {
    /// Order of the sectors within each byte.
    enum BitOrder: Sendable {
        /// Bit 7 of byte 0 is sector 0 (VHD).
        case mostSignificantFirst
        /// Bit 0 of byte 0 is sector 0 (VHDX, [MS-VHDX] 2.4).
        case leastSignificantFirst
    }

    /// Whether bit `index` is set. `index` must be below `bitmap.count * 8`.
    @inline(__always)
    static func isSet(_ bitmap: [UInt8], _ index: Int, order: BitOrder) -> Bool {
        let byte = bitmap[index >> 3]
        switch order {
        case .mostSignificantFirst: return byte & (0x80 >> UInt8(index & 7)) != 0
        case .leastSignificantFirst: return byte & (1 << UInt8(index & 7)) != 0
        }
    }

    /// The value of bit `start` and how many bits from `start` (up to `end`, exclusive) share it.
    /// `start < end <= bitmap.count * 8`. Whole bytes are skipped at once.
    static func run(in bitmap: [UInt8], from start: Int, to end: Int, order: BitOrder) -> (set: Bool, count: Int) {
        let value = isSet(bitmap, start, order: order)
        let uniform: UInt8 = value ? 0xFF : 0x00
        var index = start + 1
        while index < end {
            if index & 7 == 0 && index + 8 <= end {
                if bitmap[index >> 3] == uniform {
                    index += 8
                    continue
                }
            }
            if isSet(bitmap, index, order: order) != value { break }
            index += 1
        }
        return (value, index - start)
    }

    /// Summarises the first `bits` bits of `bitmap`: all set, none set, or mixed (the bitmap kept).
    static func presence(of bitmap: [UInt8], bits: Int, order: BitOrder) -> BlockPresence {
        guard bits > 0, bitmap.count * 8 >= bits else { return .none }
        let (set, count) = run(in: bitmap, from: 0, to: bits, order: order)
        if count == bits { return set ? .all : .none }
        return .some(bitmap)
    }
}

/// Which sectors of one block a layer stores.
enum BlockPresence: Sendable {
    /// Every sector.
    case all
    /// No sector.
    case none
    /// Some: the block's bitmap (bit order per format).
    case some([UInt8])
}

extension BoundedCache where Key == UInt64, Value == BlockPresence {
    /// A cache of per-block sector presence holding about `bytes` of bitmaps of `bitmapBytes` each, so bitmaps
    /// are read from the file once per block rather than once per request, within the table cache budget.
    static func presenceCache(bytes: UInt64, bitmapBytes: Int) -> BoundedCache<UInt64, BlockPresence> {
        BoundedCache(capacity: Int(max(16, bytes / UInt64(bitmapBytes + 64))))
    }
}
