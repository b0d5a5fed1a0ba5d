import KDCTFormats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A flag that stops an export or a remote conversion: every wait on the network checks it at least every
/// `WaitPolicy.pollSlice` seconds, every local loop between chunks. Setting it is async-signal-safe (one atomic
/// compare-and-exchange), so a SIGINT/SIGTERM handler may call `cancel(signal:)`.
public final class CancellationToken: Sendable {
    /// 0 while running; the signal number, or -1 for a cancellation without a signal, once cancelled.
    private let state = Atomic<Int32>(0)
    /// A token whose cancellation cancels this one too.
    private let parent: CancellationToken?

    /// A token that is not cancelled; it counts as cancelled once `parent` is.
    public init(parent: CancellationToken? = nil) { self.parent = parent }

    /// Cancels; the first call wins (its signal is the one reported). Safe to call from a signal handler.
    public func cancel(signal: Int32 = -1) {
        _ = state.compareExchange(expected: 0, desired: signal == 0 ? -1 : signal, ordering: .relaxed)
    }

    /// True once cancelled.
    public var isCancelled: Bool { state.load(ordering: .relaxed) != 0 || parent?.isCancelled == true }

    /// The signal that cancelled, or nil (not cancelled, or cancelled by a call).
    public var signal: Int32? {
        if let signal = parent?.signal { return signal }
        let value = state.load(ordering: .relaxed)
        return value > 0 ? value : nil
    }

    /// Throws `cancelled` once cancelled.
    public func check() throws {
        if isCancelled { throw cancellationError() }
    }

    /// The error a cancelled operation ends with, naming the signal.
    public func cancellationError() -> KDCTError {
        switch signal {
        case SIGINT: return KDCTError(.cancelled, "interrupted (SIGINT)")
        case SIGTERM: return KDCTError(.cancelled, "terminated (SIGTERM)")
        case let number?: return KDCTError(.cancelled, "stopped by signal \(number)")
        case nil: return KDCTError(.cancelled, "cancelled")
        }
    }
}

/// When waiting for the host ends: after `timeout` seconds in which nothing arrived from it (and, during long
/// remote operations, no keepalive was answered), at an absolute `deadline`, or on cancellation.
public struct WaitPolicy: Sendable {
    /// Seconds without any progress on the connection before giving up (`--timeout`).
    public var timeout: Double
    /// Stops every wait when cancelled.
    public var cancellation: CancellationToken?
    /// An absolute limit (monotonic seconds, `MonotonicClock.now`), used for cleanup after a failure.
    public var deadline: Double?

    /// The granularity of every wait: cancellation and deadlines are noticed within this many seconds.
    static let pollSlice = 0.1

    /// A policy.
    public init(timeout: Double = 30, cancellation: CancellationToken? = nil, deadline: Double? = nil) {
        self.timeout = timeout
        self.cancellation = cancellation
        self.deadline = deadline
    }

    /// Seconds between keepalive requests while the host works on a long operation: a third of the timeout, so
    /// an answering host never looks silent for long (libssh2 counts whole seconds, 2 at least; a long operation
    /// is therefore given up after `max(timeout, 3 * keepaliveInterval)` seconds of silence).
    var keepaliveInterval: UInt32 { UInt32(max(2, (timeout / 3).rounded(.down))) }

    /// The same policy with a hard deadline `seconds` from now (the earlier one wins) and no cancellation: for
    /// removing a temporary file after the operation itself was cancelled.
    func forCleanup(seconds: Double) -> WaitPolicy {
        var copy = self
        copy.cancellation = nil
        let limit = MonotonicClock.now + seconds
        copy.deadline = min(deadline ?? limit, limit)
        copy.timeout = min(timeout, seconds)
        return copy
    }
}

/// CLOCK_MONOTONIC in seconds.
public enum MonotonicClock {
    /// Seconds since an arbitrary start, never going back.
    public static var now: Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
