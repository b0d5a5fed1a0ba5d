#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A value shared by threads that sleep until it reaches a state they wait for: a pthread mutex and condition
/// variable around it.
///
/// Synchronization's `Mutex` serves every other shared value; it has no condition variable, and the conversion
/// pipeline's threads must block (not spin) while they wait for a free buffer or for the next segment in guest
/// order. Every access wakes all waiters when it ends, so a waiter re-checks its condition after any change; the
/// pipeline has a few threads, so a broadcast per change costs nothing measurable.
final class ConditionMutex<Value: Sendable>: @unchecked Sendable {
    // @unchecked: `value` is only read or written between pthread_mutex_lock and pthread_mutex_unlock of `mutex`,
    // which the compiler cannot see; the value itself is Sendable, so handing parts of it to other threads is safe.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Value

    /// Guards `value`.
    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Runs `body` on the value with the mutex held, then wakes every waiter.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        return try body(&value)
    }

    /// Sleeps until `ready` holds for the value, then runs `body` on it with the mutex held, then wakes every
    /// waiter. `ready` is evaluated with the mutex held, after every change another thread makes.
    func withLock<Result>(when ready: (Value) -> Bool, _ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer {
            pthread_cond_broadcast(condition)
            pthread_mutex_unlock(mutex)
        }
        while !ready(value) { pthread_cond_wait(condition, mutex) }
        return try body(&value)
    }
}

/// A pool of reusable objects that are not thread-safe (decompressor contexts, scratch buffers), so a reader shared
/// by many threads gives each call its own instance without allocating one per call. An object is used by one
/// thread at a time: taken from the pool under its mutex, lent to one `with` body, given back under the mutex.
final class ObjectPool<Object>: Sendable {
    /// An idle object.
    private struct Idle: @unchecked Sendable {
        // @unchecked: an object is reachable from one thread at a time. `with` takes it out of the pool, lends it to
        // its body for the length of the call (the body must not keep it), and puts it back; the compiler cannot
        // see that the body does not keep it, since `with`'s body is an ordinary closure.
        let object: Object
    }

    private let idle = Mutex<[Idle]>([])
    private let make: @Sendable () throws -> Object
    private let maxKept: Int

    /// A pool that creates objects with `make` and keeps at most `maxKept` idle ones.
    init(maxKept: Int = 16, make: @escaping @Sendable () throws -> Object) {
        self.make = make
        self.maxKept = maxKept
    }

    /// Runs `body` with an object taken from the pool (or a new one), then returns it to the pool. `body` must not
    /// keep the object beyond the call.
    func with<T>(_ body: (Object) throws -> T) throws -> T {
        let object = try idle.withLock { $0.popLast() }?.object ?? make()
        defer {
            let returned = Idle(object: object)
            idle.withLock { idle in
                if idle.count < maxKept { idle.append(returned) }
            }
        }
        return try body(object)
    }
}
