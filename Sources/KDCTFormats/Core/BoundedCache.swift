import Synchronization

/// The one bounded, thread-safe cache for metadata loaded on demand (second-level table chunks, sector bitmaps).
///
/// At most `capacity` values are kept; eviction is first-in first-out, which suits the converter's sequential walk.
/// `value(for:load:)` loads outside the lock, so misses on different keys proceed in parallel (two threads may load
/// the same key; the first stored wins, which is harmless for immutable metadata). The lock is held only for the
/// dictionary access, never across I/O.
final class BoundedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Entries {
        var values: [Key: Value] = [:]
        var order: [Key] = []
        var nextVictim = 0
    }

    private let entries = Mutex(Entries())
    /// Most values kept.
    let capacity: Int

    /// A cache of at most `capacity` values (at least 1).
    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// The value for `key`, loaded with `load` on a miss.
    func value(for key: Key, load: () throws -> Value) rethrows -> Value {
        if let hit = entries.withLock({ $0.values[key] }) { return hit }
        let loaded = try load()
        insert(loaded, for: key)
        return loaded
    }

    /// Stores `value` for `key` unless a value is already there, evicting the oldest value when full.
    func insert(_ value: Value, for key: Key) {
        entries.withLock { entries in
            guard entries.values[key] == nil else { return }
            if entries.order.count < capacity {
                entries.order.append(key)
            } else {
                entries.values[entries.order[entries.nextVictim]] = nil
                entries.order[entries.nextVictim] = key
                entries.nextVictim = (entries.nextVictim + 1) % capacity
            }
            entries.values[key] = value
        }
    }
}
