import Synchronization

/// A bounded, thread-safe cache for metadata loaded on demand (L2 tables, grain tables, table chunks).
///
/// At most `capacity` values are kept; eviction is first-in first-out, which suits the converter's sequential walk.
/// `value(for:load:)` loads outside the lock, so misses on different keys proceed in parallel (two threads may load
/// the same key; the first stored wins, which is harmless for immutable metadata).
public final class BoundedCache<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    private struct Entries {
        var values: [Key: Value] = [:]
        var order: [Key] = []
        var nextVictim = 0
    }

    private let entries = Mutex(Entries())
    /// Most values kept.
    public let capacity: Int

    /// A cache of at most `capacity` values (at least 1).
    public init(capacity: Int) { self.capacity = max(1, capacity) }

    /// The value for `key`, loaded with `load` on a miss.
    public func value(for key: Key, load: () throws -> Value) rethrows -> Value {
        if let hit = entries.withLock({ $0.values[key] }) { return hit }
        let loaded = try load()
        entries.withLock { entries in
            guard entries.values[key] == nil else { return }
            if entries.order.count < capacity {
                entries.order.append(key)
            } else {
                entries.values[entries.order[entries.nextVictim]] = nil
                entries.order[entries.nextVictim] = key
                entries.nextVictim = (entries.nextVictim + 1) % capacity
            }
            entries.values[key] = loaded
        }
        return loaded
    }
}
