/// The one bounded, thread-safe cache for metadata loaded on demand (second-level table chunks, sector bitmaps).
///
/// At most `capacity` values are kept; eviction is first-in first-out, which suits the converter's sequential walk.
/// `value(for:load:)` loads outside the lock, so misses on different keys proceed in parallel (two threads may load
/// the same key; the first stored wins, which is harmless for immutable metadata). The lock is held only for the
/// dictionary access, never across I/O.
final class BoundedCache<Key: Hashable & Sendable, Value>: @unchecked Sendable {  // state guarded by `lock`
    private let lock = ConditionLock()
    private var values: [Key: Value] = [:]
    private var order: [Key] = []
    private var nextVictim = 0
    /// Most values kept.
    let capacity: Int

    /// A cache of at most `capacity` values (at least 1).
    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// The value for `key`, loaded with `load` on a miss.
    func value(for key: Key, load: () throws -> Value) rethrows -> Value {
        if let hit = lock.withLock({ values[key] }) { return hit }
        let loaded = try load()
        insert(loaded, for: key)
        return loaded
    }

    /// Stores `value` for `key` unless a value is already there, evicting the oldest value when full.
    func insert(_ value: Value, for key: Key) {
        lock.withLock {
            guard values[key] == nil else { return }
            if order.count < capacity {
                order.append(key)
            } else {
                values[order[nextVictim]] = nil
                order[nextVictim] = key
                nextVictim = (nextVictim + 1) % capacity
            }
            values[key] = value
        }
    }
}
