import CLibSSH2
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// Drives one libssh2 session in non-blocking mode. libssh2's own blocking mode waits inside the library, where
/// neither a signal nor a deadline can reach it (a stalled host kept the old exporter waiting 300 s per call,
/// deaf to Ctrl-C). Here every libssh2 function is called again while it answers `EAGAIN`, and in between this
/// driver polls the socket in slices of `WaitPolicy.pollSlice`, checking cancellation, the deadline and the
/// time since the host last showed progress.
///
/// Progress means bytes moving in the direction libssh2 waits for. During a long remote operation (fsync, a
/// remote SHA-256) the host may rightly stay silent, so those waits send SSH keepalives and count their replies
/// (as OpenSSH's `ServerAliveInterval` does); ordinary waits send none, so a host that answers keepalives but
/// no longer acknowledges data still times out.
///
/// A call abandoned midway (cancelled, timed out) may leave half a packet in libssh2's send buffer, after which
/// libssh2 refuses to send anything else on the session. `abandon()` therefore shuts the socket down: every
/// later call fails at once, and cleanup uses a new connection.
final class SessionDriver {
    /// How long a wait may be silent.
    enum Wait {
        /// The host owes bytes now (a reply, a window adjustment, an acknowledgement).
        case reply
        /// The host works before it answers (fsync, hashing a file): keepalives prove it alive meanwhile.
        case longOperation
    }

    let session: OpaquePointer
    let socket: Int32
    /// `user@host`, for messages.
    let hostName: String
    var policy: WaitPolicy
    /// False once a call was abandoned or the connection was lost: nothing more may be sent.
    private(set) var isUsable = true
    private var lastKeepalive = 0.0

    init(session: OpaquePointer, socket: Int32, hostName: String, policy: WaitPolicy) {
        self.session = session
        self.socket = socket
        self.hostName = hostName
        self.policy = policy
        libssh2_session_set_blocking(session, 0)
        // libssh2's own minimum; `sendKeepaliveIfDue` decides when (always 2 s or more after the last one).
        libssh2_keepalive_config(session, 1, 2)
    }

    /// Calls `operation` (a libssh2 function returning a status or a byte count) until it stops answering
    /// `EAGAIN`; returns its final result. Errors other than timeouts and cancellation are left to the caller.
    func call<Result: FixedWidthInteger>(_ what: @autoclosure () -> String, _ wait: Wait = .reply,
                                         _ operation: () -> Result) throws -> Result {
        try requireUsable(what())
        var lastProgress = MonotonicClock.now
        while true {
            let result = operation()
            if result != Result(LIBSSH2_ERROR_EAGAIN) {
                if result < 0 && SSHLibrary.isConnectionLost(Int(result)) { abandon() }
                return result
            }
            try waitForSocket(what, wait, lastProgress: &lastProgress)
        }
    }

    /// Calls `operation` (a libssh2 function returning a pointer, nil with `EAGAIN` as the session's last error
    /// while it would block) until it returns something or fails.
    func callPointer<Pointer>(_ what: @autoclosure () -> String, _ wait: Wait = .reply,
                              _ operation: () -> Pointer?) throws -> Pointer? {
        try requireUsable(what())
        var lastProgress = MonotonicClock.now
        while true {
            if let result = operation() { return result }
            let code = libssh2_session_last_errno(session)
            guard code == LIBSSH2_ERROR_EAGAIN else {
                if SSHLibrary.isConnectionLost(Int(code)) { abandon() }
                return nil
            }
            try waitForSocket(what, wait, lastProgress: &lastProgress)
        }
    }

    /// Throws when the session can no longer be used.
    func requireUsable(_ what: @autoclosure () -> String) throws {
        guard isUsable else {
            throw KDCTError(.io, "\(what()): the connection to \(hostName) is no longer usable (an earlier operation was interrupted or the connection was lost)",
                            file: hostName)
        }
    }

    /// Waits until the socket is ready in a direction libssh2 is blocked on (any readiness counts as progress
    /// and updates `lastProgress`), or returns after a short slice when libssh2 did not say what it waits for.
    /// Throws on cancellation, at the deadline, or after `policy.timeout` seconds without progress.
    func waitForSocket(_ what: () -> String, _ wait: Wait, lastProgress: inout Double) throws {
        while true {
            if let token = policy.cancellation, token.isCancelled {
                abandon()
                throw token.cancellationError()
            }
            let now = MonotonicClock.now
            if let deadline = policy.deadline, now >= deadline {
                abandon()
                throw KDCTError(.io, "\(what()): gave up, the time allowed for it ran out", file: hostName)
            }
            // A long operation is judged by keepalive replies, which come every `keepaliveInterval` (2 s at
            // least): it gets three intervals however short the timeout.
            let limit = wait == .longOperation ? max(policy.timeout, 3 * Double(policy.keepaliveInterval)) : policy.timeout
            let silent = now - lastProgress
            if silent >= limit {
                abandon()
                throw KDCTError(.io, "\(what()): \(hostName) showed no sign of progress for \(Self.seconds(limit)) (--timeout); gave up on the connection",
                                file: hostName)
            }
            let directions = libssh2_session_block_directions(session)
            if wait == .longOperation && directions & LIBSSH2_SESSION_BLOCK_OUTBOUND == 0 {
                sendKeepaliveIfDue(now: now)
            }
            var events: Int16 = 0
            if directions & LIBSSH2_SESSION_BLOCK_INBOUND != 0 { events |= Int16(POLLIN) }
            if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 { events |= Int16(POLLOUT) }
            var slice = WaitPolicy.pollSlice
            let directionKnown = events != 0
            if !directionKnown {
                events = Int16(POLLIN)
                slice = 0.01
            }
            slice = min(slice, limit - silent)
            if let deadline = policy.deadline { slice = min(slice, deadline - now) }
            var descriptor = pollfd(fd: socket, events: events, revents: 0)
            let ready = poll(&descriptor, 1, Int32(max(1, (slice * 1000).rounded(.up))))
            if ready > 0 {
                lastProgress = MonotonicClock.now
                return
            }
            if ready < 0 && errno != EINTR {
                let code = errno
                abandon()
                throw KDCTError.io("\(what()): waiting for \(hostName)", errno: code, file: hostName)
            }
            if !directionKnown { return }
        }
    }

    /// Sends an SSH keepalive (a global request the server must answer) when the last one is `keepaliveInterval`
    /// old, and only when libssh2 has no half-sent packet (then `BLOCK_OUTBOUND` would be set) and the socket
    /// takes the few bytes at once: a keepalive that itself blocked would leave libssh2 holding a packet that
    /// points into its stack.
    private func sendKeepaliveIfDue(now: Double) {
        guard now - lastKeepalive >= Double(policy.keepaliveInterval) else { return }
        var probe = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
        guard poll(&probe, 1, 0) == 1, probe.revents & Int16(POLLOUT) != 0 else { return }
        var next: Int32 = 0
        _ = libssh2_keepalive_send(session, &next)
        lastKeepalive = now
    }

    /// Gives the session up: shuts the socket down, so every later libssh2 call fails at once instead of
    /// sending on a session that may hold half a packet. Safe to call more than once.
    func abandon() {
        guard isUsable else { return }
        isUsable = false
        shutdown(socket, Int32(SHUT_RDWR))
    }

    /// `30 s`, `2.5 s`.
    static func seconds(_ value: Double) -> String {
        value == value.rounded() ? "\(Int(value)) s" : "\(value) s"
    }
}
