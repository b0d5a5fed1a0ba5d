import KDCTFormats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs a closure on its own thread (a plain pthread, so it never waits behind the caller's executor) and hands
/// its result back on `join`.
final class BackgroundWork<Value: Sendable>: @unchecked Sendable {
    /// Where the thread leaves its outcome.
    private final class Outcome: Sendable {
        let value = Mutex<Result<Value, any Error>?>(nil)
    }
    private let result = Outcome()
    private var thread = pthread_t()
    private var joined = false

    /// Starts `body` at once.
    init(_ body: @escaping @Sendable () throws -> Value) throws {
        let box = Unmanaged.passRetained(ThreadBody { [result] in
            let outcome = Result { try body() }
            result.value.withLock { $0 = outcome }
        }).toOpaque()
        let rc = pthread_create(&thread, nil, { context in
            guard let context else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(context).takeRetainedValue().run()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<ThreadBody>.fromOpaque(box).release()
            throw KDCTError.io("pthread_create", errno: rc)
        }
    }

    deinit { if !joined { pthread_join(thread, nil) } }

    /// True once the closure has returned.
    var isFinished: Bool { result.value.withLock { $0 != nil } }

    /// Waits for the closure and returns its value or rethrows its error.
    func join() throws -> Value {
        if !joined {
            pthread_join(thread, nil)
            joined = true
        }
        guard let outcome = result.value.withLock({ $0 }) else {
            throw KDCTError(.io, "a worker thread ended without a result")
        }
        return try outcome.get()
    }
}

/// The closure a `BackgroundWork` thread runs, passed through pthread_create's context pointer.
private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

/// Hands a value that is not `Sendable` (an SSH connection, an open remote file: used by one thread at a time)
/// to exactly one other thread, which uses it from then on.
struct HandOver<Value>: @unchecked Sendable {
    let value: Value
}

/// A counter one thread writes and another reads.
final class AtomicCounter: Sendable {
    private let value = Atomic<UInt64>(0)
    func store(_ newValue: UInt64) { value.store(newValue, ordering: .relaxed) }
    func add(_ count: UInt64) { value.add(count, ordering: .relaxed) }
    func load() -> UInt64 { value.load(ordering: .relaxed) }
}
