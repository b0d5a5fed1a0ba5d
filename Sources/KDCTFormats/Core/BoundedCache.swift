/// A bounded, thread-safe cache for metadata loaded on demand (L2 tables, grain tables, table chunks).
///
/// At most `capacity` values are kept; eviction is first-in first-out, which suits the converter's sequential walk.
/// `value(for:load:)` loads outside the lock, so misses on different keys proceed in parallel (two threads may load
/// the same key; the first stored wins, which is harmless for immutable metadata).
public final class BoundedCache<Key: Hashable & Sendable, Value>: @unchecked Sendable {
    private let lock = ConditionLock()
    private var values: [Key: Value] = [:]
    private var order: [Key] = []
    private var nextVictim = 0
    /// Most values kept.
    public let capacity: Int

    /// A cache of at most `capacity` values (at least 1).
    public init(capacity: Int) { self.capacity = max(1, capacity) }

    /// The value for `key`, loaded with `load` on a miss.
    public func value(for key: Key, load: () throws -> Value) rethrows -> Value {
        if let hit = lock.withLock({ values[key] }) { return hit }
        let loaded = try load()
        lock.withLock {
            guard values[key] == nil else { return }
            if order.count < capacity {
                order.append(key)
            } else {
                values[order[nextVictim]] = nil
                order[nextVictim] = key
                nextVictim = (nextVictim + 1) % capacity
            }
            values[key] = loaded
        }
        return loaded
    }
}
