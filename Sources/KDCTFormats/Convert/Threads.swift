#if canImport(Glibc)
import Glibc
#endif

/// A started OS thread that can be joined. The conversion pipeline uses plain threads (not the Dispatch pool) so
/// its workers never starve a caller that is itself running on Dispatch.
final class JoinableThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var thread: pthread_t

    /// Starts a thread running `body`.
    init(_ body: @escaping () -> Void) throws {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var handle = pthread_t()
        let result = pthread_create(&handle, nil, { context in
            guard let context else { return nil }
            let box = Unmanaged<Box>.fromOpaque(context).takeRetainedValue()
            box.body()
            return nil
        }, box)
        guard result == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            throw KDCTError.io("pthread_create", errno: result)
        }
        thread = handle
    }

    /// Waits for the thread to end.
    func join() { pthread_join(thread, nil) }
}

/// Number of online CPUs, the default worker count.
public func onlineProcessorCount() -> Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
