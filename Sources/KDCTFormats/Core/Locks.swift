#if canImport(Glibc)
import Glibc
#endif

/// A mutex with a condition variable (pthread), for the few places that coordinate threads: the conversion
/// pipeline's scheduler and bounded caches. Not reentrant.
public final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// Creates an unlocked lock.
    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Acquires the lock.
    public func lock() { pthread_mutex_lock(mutex) }
    /// Releases the lock.
    public func unlock() { pthread_mutex_unlock(mutex) }
    /// Atomically releases the lock and waits for a signal; reacquires before returning.
    public func wait() { pthread_cond_wait(condition, mutex) }
    /// Wakes every waiter.
    public func broadcast() { pthread_cond_broadcast(condition) }

    /// Runs `body` with the lock held.
    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

/// A pool of reusable, non-thread-safe objects (decompressor contexts, scratch buffers), so a reader shared by
/// many threads gives each call its own instance without allocating one per call.
public final class ObjectPool<Object>: @unchecked Sendable {
    private let lock = ConditionLock()
    private var free: [Object] = []
    private let make: () throws -> Object
    private let maxKept: Int

    /// A pool that creates objects with `make` and keeps at most `maxKept` idle ones.
    public init(maxKept: Int = 16, make: @escaping () throws -> Object) {
        self.make = make
        self.maxKept = maxKept
    }

    /// Runs `body` with an object taken from the pool (or a new one), then returns it.
    public func with<T>(_ body: (Object) throws -> T) throws -> T {
        let object = try lock.withLock { free.popLast() } ?? make()
        defer { lock.withLock { if free.count < maxKept { free.append(object) } } }
        return try body(object)
    }
}
