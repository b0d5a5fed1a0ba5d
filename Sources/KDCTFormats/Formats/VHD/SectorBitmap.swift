/// Sector presence bitmaps (VHD block bitmaps, VHDX sector bitmap blocks): one bit per sector, set when the
/// sector is stored in this file.
public enum SectorBitmap {
    /// Order of the sectors within each byte.
    public enum BitOrder: Sendable {
        /// Bit 7 of byte 0 is sector 0 (VHD).
        case mostSignificantFirst
        /// Bit 0 of byte 0 is sector 0 (VHDX, [MS-VHDX] 2.4).
        case leastSignificantFirst
    }

    /// Whether bit `index` is set. `index` must be below `bitmap.count * 8`.
    @inline(__always)
    public static func isSet(_ bitmap: [UInt8], _ index: Int, order: BitOrder) -> Bool {
        let byte = bitmap[index >> 3]
        switch order {
        case .mostSignificantFirst: return byte & (0x80 >> UInt8(index & 7)) != 0
        case .leastSignificantFirst: return byte & (1 << UInt8(index & 7)) != 0
        }
    }

    /// The value of bit `start` and how many bits from `start` (up to `end`, exclusive) share it.
    /// `start < end <= bitmap.count * 8`. Whole bytes are skipped at once.
    public static func run(in bitmap: [UInt8], from start: Int, to end: Int, order: BitOrder) -> (set: Bool, count: Int) {
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
    public static func presence(of bitmap: [UInt8], bits: Int, order: BitOrder) -> BlockPresence {
        guard bits > 0, bitmap.count * 8 >= bits else { return .none }
        let (set, count) = run(in: bitmap, from: 0, to: bits, order: order)
        if count == bits { return set ? .all : .none }
        return .some(bitmap)
    }
}

/// Which sectors of one block a layer stores.
public enum BlockPresence: Sendable {
    /// Every sector.
    case all
    /// No sector.
    case none
    /// Some: the block's bitmap (bit order per format).
    case some([UInt8])

    /// Bytes this value keeps in memory (for cache accounting).
    var cost: UInt64 {
        if case let .some(bitmap) = self { return UInt64(bitmap.count) + 32 }
        return 32
    }
}

/// A bounded, thread-safe cache of per-block sector presence, so bitmaps are read from the file once per block
/// rather than once per request. Fully set or clear bitmaps cost a few bytes each; when the cache exceeds its
/// byte budget it is emptied (the next lookups reload), so memory stays bounded whatever the image.
final class BlockPresenceCache: @unchecked Sendable {
    private let lock = ConditionLock()
    private var entries: [UInt64: BlockPresence] = [:]
    private var bytes: UInt64 = 0
    private let capacity: UInt64

    /// A cache that keeps at most about `capacity` bytes.
    init(capacity: UInt64) { self.capacity = max(capacity, 4096) }

    /// The presence of block `key`, loading it with `load` (outside the lock) when not cached.
    func presence(of key: UInt64, load: () throws -> BlockPresence) throws -> BlockPresence {
        if let cached = lock.withLock({ entries[key] }) { return cached }
        let loaded = try load()
        lock.withLock {
            if bytes + loaded.cost > capacity {
                entries.removeAll(keepingCapacity: false)
                bytes = 0
            }
            if entries.updateValue(loaded, forKey: key) == nil { bytes += loaded.cost }
        }
        return loaded
    }
}
