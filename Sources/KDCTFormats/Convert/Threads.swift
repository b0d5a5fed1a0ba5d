#if canImport(Glibc)
import Glibc
#endif

/// A started OS thread that can be joined. The conversion pipeline uses plain threads (not the Dispatch pool or the
/// Swift concurrency pool) so its blocking workers never starve a caller that is itself running on either.
final class JoinableThread {
    /// The body, moved to the new thread. A class so one retained pointer crosses `pthread_create`.
    private final class Body {
        let run: () -> Void
        init(_ run: sending @escaping () -> Void) { self.run = run }
    }

    private let thread: pthread_t

    /// Starts a thread running `body`. `body` is sent to that thread: what it captures is no longer used here.
    init(_ body: sending @escaping () -> Void) throws {
        thread = try Self.start(body)
    }

    /// Waits for the thread to end.
    func join() { pthread_join(thread, nil) }

    /// Starts a thread running `body` that nobody joins: its resources are freed when it ends.
    static func detach(_ body: sending @escaping () -> Void) throws {
        pthread_detach(try start(body))
    }

    private static func start(_ body: sending @escaping () -> Void) throws -> pthread_t {
        let box = Unmanaged.passRetained(Body(body)).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            Unmanaged<Body>.fromOpaque(context).takeRetainedValue().run()
            return nil
        }, box)
        guard result == 0 else {
            Unmanaged<Body>.fromOpaque(box).release()
            throw KDCTError.io("pthread_create", errno: result)
        }
        return handle
    }
}

/// Number of online CPUs, the default worker count.
func onlineProcessorCount() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
