import CLibSSH2
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// How the exporter reaches ssh-agent.
public enum AgentSetting: Sendable, Equatable {
    /// The socket named by `SSH_AUTH_SOCK`, when set.
    case environment
    /// This socket.
    case socket(String)
    /// Do not use an agent.
    case disabled
}

/// How to verify a host and authenticate to it, and how long to wait for it.
public struct SSHConnectionOptions: Sendable {
    /// The known_hosts file; nil means `~/.ssh/known_hosts`.
    public var knownHostsFile: String?
    /// Record the key of a host that is not yet in known_hosts instead of refusing it (`--accept-new-host-key`).
    /// A changed key is refused regardless.
    public var acceptNewHostKey = false
    /// Write recorded entries hashed (`|1|salt|hash`), as Debian's ssh does by default.
    public var hashRecordedHostNames = true
    /// Private key files to try, in order (`-i`). They must exist.
    public var identityFiles: [String] = []
    /// With no `identityFiles`, also try `~/.ssh/id_ed25519`, `id_ecdsa` and `id_rsa` when they exist.
    public var useDefaultIdentities = true
    /// Where ssh-agent is.
    public var agent: AgentSetting = .environment
    /// A password for password or keyboard-interactive authentication, tried after public keys.
    public var password: SecretSource?
    /// Where passphrases of encrypted identity files come from, tried in order.
    public var passphraseSources: [SecretSource] = [.environment("KDCT_SSH_PASSPHRASE")]
    /// Seconds a wait on the host may go without progress (`--timeout`): the TCP connect, every reply, every
    /// acknowledgement. During long remote operations (fsync, hashing the file on the host) the host counts as
    /// making progress while it answers SSH keepalives, sent every `timeout / 3` seconds.
    public var timeout: Double = 30
    /// Stops every wait (connect, handshake, authentication, transfer, verification) within
    /// `WaitPolicy.pollSlice` seconds of being cancelled.
    public var cancellation: CancellationToken?
    /// An absolute limit for the whole connection (monotonic seconds); used for cleanup connections.
    var deadline: Double?

    /// Defaults: `~/.ssh/known_hosts`, agent from the environment, default identities, no password, 30 s.
    public init() {}

    /// The user's home directory (`$HOME`, else the password database).
    public static var homeDirectory: String {
        if let home = getenv("HOME"), let text = String(validatingCString: home), !text.isEmpty { return text }
        if let entry = getpwuid(getuid()), let dir = entry.pointee.pw_dir { return String(cString: dir) }
        return "/"
    }

    /// The known_hosts path in effect.
    public var resolvedKnownHostsFile: String {
        knownHostsFile ?? FilePaths.join(Self.homeDirectory, ".ssh/known_hosts")
    }

    /// The waits these options ask for.
    var waitPolicy: WaitPolicy { WaitPolicy(timeout: timeout, cancellation: cancellation, deadline: deadline) }

    /// Resolves a password given by the environment or standard input now, so a missing one is reported before
    /// connecting and standard input is read once even when several connections are made.
    public mutating func resolvePassword() throws {
        guard let source = password else { return }
        switch source {
        case .environment(let name):
            guard let value = try source.resolve(prompt: "") else {
                throw KDCTError(.invalidArgument, "the environment variable \(name) is not set (it should hold the SSH password)",
                                field: name)
            }
            password = .value(value)
        case .standardInput:
            guard let value = try source.resolve(prompt: "") else {
                throw KDCTError(.invalidArgument, "standard input is empty (it should hold the SSH password on its first line)")
            }
            password = .value(value)
        case .value, .terminalPrompt:
            break
        }
    }
}

enum SSHLibrary {
    /// `libssh2_init` must run once before any session, and is not thread-safe itself. First, unless
    /// `KDCT_SSH_PLAIN_CTR` is set, AES-CTR gets a keystream produced ahead (batched_ctr.h in the CLibSSH2 shim):
    /// libssh2 1.10 encrypts one 16-byte block per OpenSSL call, the largest cost of an upload.
    static let initialized: Int32 = {
        if getenv("KDCT_SSH_PLAIN_CTR") == nil && kdct_ssh2_prefer_batched_ctr() == 1 {
            if kdct_ssh2_batched_ctr_self_test() != 1 { kdct_ssh2_plain_ctr() }
        }
        return libssh2_init(0)
    }()

    /// True when AES-CTR runs through the batched keystream (checked against OpenSSL's own AES-CTR first).
    static var usesBatchedCTR: Bool {
        _ = initialized
        return kdct_ssh2_batched_ctr_self_test() == 1 && getenv("KDCT_SSH_PLAIN_CTR") == nil
    }

    /// The session's last error message.
    static func lastErrorMessage(_ session: OpaquePointer) -> String {
        var message: UnsafeMutablePointer<CChar>?
        var length: Int32 = 0
        _ = libssh2_session_last_error(session, &message, &length, 0)
        guard let message, length > 0 else { return "unknown error" }
        return String(cString: message)
    }

    /// Why an RSA key may be refused: libssh2 before 1.11 signs with SHA-1 (`ssh-rsa`), which OpenSSH 8.8 and
    /// later refuse by default.
    static var rsaHint: String {
        libssh2_version(0x010b00) == nil
            ? " (an RSA key: this libssh2 signs with SHA-1, which OpenSSH 8.8+ refuses; use an Ed25519 or ECDSA key)"
            : ""
    }

    /// True for the errors that mean the connection itself is gone (or unusable).
    static func isConnectionLost(_ code: Int) -> Bool {
        [LIBSSH2_ERROR_SOCKET_SEND, LIBSSH2_ERROR_SOCKET_RECV, LIBSSH2_ERROR_SOCKET_DISCONNECT,
         LIBSSH2_ERROR_SOCKET_TIMEOUT, LIBSSH2_ERROR_TIMEOUT, LIBSSH2_ERROR_BAD_SOCKET,
         LIBSSH2_ERROR_BAD_USE, LIBSSH2_ERROR_DECRYPT, LIBSSH2_ERROR_ENCRYPT].map(Int.init).contains(code)
    }
}

/// What a command run on the host over an exec channel produced.
public struct RemoteCommandResult: Sendable {
    /// The exit status (-1 when the server did not report one).
    public var status: Int32
    /// Standard output (up to the limit given to `run`).
    public var output: [UInt8]
    /// Standard error (up to the limit).
    public var errorOutput: [UInt8]
}

/// An authenticated SSH connection to one host: the host key checked against known_hosts before anything else
/// happens, then authentication by identity files, ssh-agent and password. libssh2 runs in non-blocking mode
/// under a `SessionDriver`, so every wait honours the timeout, the deadline and cancellation.
///
/// One connection is used from one thread at a time (libssh2 sessions are not thread-safe); parallel streams
/// use one connection each.
public final class SSHConnection {
    /// The host and user.
    public let endpoint: SSHEndpoint
    /// The key the host presented (and that known_hosts vouched for, or that was just recorded).
    public let hostKey: HostKey
    /// True when the host key was unknown and has been recorded (`acceptNewHostKey`).
    public let hostKeyWasRecorded: Bool
    /// How authentication succeeded, e.g. `publickey (identity file /root/.ssh/id_ed25519)`.
    public let authentication: String
    /// Remarks worth showing (skipped known_hosts lines, a recorded host key).
    public private(set) var notes: [String]
    /// Options that reach this host again without asking anything: the host key is known now, and the password
    /// or key passphrase that worked is given as a value.
    public let reconnectOptions: SSHConnectionOptions
    let driver: SessionDriver
    var session: OpaquePointer { driver.session }
    private var isOpen = true

    /// Connects to `endpoint`, verifies its host key and authenticates.
    public init(endpoint: SSHEndpoint, options: SSHConnectionOptions) throws {
        _ = SSHLibrary.initialized
        for file in options.identityFiles where !FilePaths.isRegularFile(file) {
            throw KDCTError(.notFound, "identity file does not exist or is not a regular file", file: file)
        }
        let policy = options.waitPolicy
        let socket = try Self.connectSocket(host: endpoint.host, port: endpoint.port, policy: policy)
        guard let session = kdct_ssh2_session_init() else {
            close(socket)
            throw KDCTError(.io, "libssh2 could not create a session", file: endpoint.displayName)
        }
        let driver = SessionDriver(session: session, socket: socket, hostName: endpoint.displayName, policy: policy)
        do {
            let knownHosts = try KnownHostsFile(session: session, path: options.resolvedKnownHostsFile)
            let recordedTypes = knownHosts.recordedTypes(name: endpoint.knownHostsName)
            try Self.preferHostKeyTypes(recordedTypes, session: session)
            Self.preferCiphers(session: session)
            let rc = try driver.call("SSH handshake with \(endpoint.displayName)") { libssh2_session_handshake(session, socket) }
            try Self.checkHandshake(rc, session: session, endpoint: endpoint)
            let key = try Self.presentedKey(session: session, endpoint: endpoint)
            var notes: [String] = []
            if knownHosts.skippedLines > 0 {
                notes.append("\(knownHosts.skippedLines) line(s) of \(knownHosts.path) were not understood by libssh2 and were ignored")
            }
            let recorded = try Self.verify(key, endpoint: endpoint, knownHosts: knownHosts, recordedTypes: recordedTypes,
                                           options: options)
            if recorded {
                notes.append("recorded the \(key.type.name) key \(key.fingerprint) of \(endpoint.knownHostsName) in \(knownHosts.path)")
            }
            var authenticator = Authenticator(driver: driver, endpoint: endpoint, options: options)
            let method = try authenticator.run()
            var again = options
            again.acceptNewHostKey = false
            if let password = authenticator.usedPassword { again.password = .value(password) }
            if let (file, passphrase) = authenticator.usedIdentity {
                again.identityFiles = [file]
                again.passphraseSources = passphrase.map { [.value($0)] } ?? []
            }
            self.endpoint = endpoint
            self.hostKey = key
            self.hostKeyWasRecorded = recorded
            self.authentication = method
            self.notes = notes
            self.reconnectOptions = again
            self.driver = driver
        } catch {
            driver.abandon()
            libssh2_session_free(session)
            close(socket)
            throw error
        }
    }

    deinit {
        disconnect()
        // Anything still open fails at once on the shut-down socket, so this never waits.
        libssh2_session_free(driver.session)
        close(driver.socket)
    }

    /// True until the connection was lost, given up or disconnected.
    public var isUsable: Bool { isOpen && driver.isUsable }

    /// The timeout, deadline and cancellation in force (a cleanup may tighten them).
    var policy: WaitPolicy {
        get { driver.policy }
        set { driver.policy = newValue }
    }

    /// Says goodbye to the server (when the session is still usable, within a second) and shuts the socket
    /// down; the session's memory is released when the last SFTP object using it is gone.
    public func disconnect() {
        guard isOpen else { return }
        isOpen = false
        if driver.isUsable {
            let saved = driver.policy
            driver.policy = saved.forCleanup(seconds: 1)
            _ = try? driver.call("disconnecting") { kdct_ssh2_session_disconnect(session, "done") }
            driver.policy = saved
        }
        driver.abandon()
    }

    /// Gives the connection up at once (after a failure in another stream): no goodbye, every pending wait on
    /// it ends.
    func abandon() { driver.abandon() }

    /// An error for a failed libssh2 call on this connection.
    func error(_ operation: String, code: Int, file: String? = nil) -> KDCTError {
        let message = SSHLibrary.lastErrorMessage(session)
        var text = "\(operation) failed: \(message)"
        if SSHLibrary.isConnectionLost(code) {
            text = "\(operation) failed: the connection to \(endpoint.displayName) was lost (\(message))"
        }
        return KDCTError(.io, text + " (libssh2 error \(code))", file: file ?? endpoint.displayName)
    }

    /// Runs `command` through the user's shell on the host (an exec channel) and collects its output (at most
    /// `outputLimit` bytes of each stream). `onOutput` sees standard output as it arrives (the hashing command
    /// prints one line per chunk, which is the verification's progress). A `.longOperation` wait lets the host
    /// stay silent as long as it answers keepalives.
    public func run(_ command: String, outputLimit: Int = 1 << 20, longOperation: Bool = false,
                    onOutput: (ArraySlice<UInt8>) throws -> Void = { _ in }) throws -> RemoteCommandResult {
        let wait: SessionDriver.Wait = longOperation ? .longOperation : .reply
        guard let channel = try driver.callPointer("opening an exec channel", .reply, { kdct_ssh2_channel_open_session(session) }) else {
            throw error("opening an exec channel", code: Int(libssh2_session_last_errno(session)))
        }
        defer { freeChannel(channel) }
        let started = try driver.call("starting a remote command") { kdct_ssh2_channel_exec(channel, command) }
        guard started == 0 else { throw error("starting a remote command", code: Int(started)) }
        // Our commands read no input. Closing it also ends a server-side substitute that would wait for input
        // forever (e.g. `ForceCommand internal-sftp` accounts run the SFTP server instead of the command).
        _ = try driver.call("starting a remote command") { libssh2_channel_send_eof(channel) }
        var output: [UInt8] = []
        var errorOutput: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32768, alignment: 16)
        defer { buffer.deallocate() }
        var lastProgress = MonotonicClock.now
        while true {
            var moved = false
            for stream in [Int32(0), SSH_EXTENDED_DATA_STDERR] {
                while true {
                    let n = libssh2_channel_read_ex(channel, stream, buffer.baseAddress?.assumingMemoryBound(to: CChar.self),
                                                    buffer.count)
                    if n == LIBSSH2_ERROR_EAGAIN || n == 0 { break }
                    if n < 0 {
                        if SSHLibrary.isConnectionLost(n) { driver.abandon() }
                        throw error("reading a remote command's output", code: n)
                    }
                    moved = true
                    let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                    if stream == 0 {
                        try onOutput(ArraySlice(bytes))
                        if output.count < outputLimit { output.append(contentsOf: bytes.prefix(outputLimit - output.count)) }
                    } else if errorOutput.count < outputLimit {
                        errorOutput.append(contentsOf: bytes.prefix(outputLimit - errorOutput.count))
                    }
                }
            }
            if moved {
                lastProgress = MonotonicClock.now
            } else if libssh2_channel_eof(channel) != 0 {
                break
            } else {
                try driver.waitForSocket({ "waiting for a remote command" }, wait, lastProgress: &lastProgress)
            }
        }
        _ = try driver.call("closing an exec channel") { libssh2_channel_close(channel) }
        _ = try driver.call("closing an exec channel") { libssh2_channel_wait_closed(channel) }
        let status = libssh2_channel_get_exit_status(channel)
        return RemoteCommandResult(status: status, output: output, errorOutput: errorOutput)
    }

    /// Frees a channel: waits (within the policy) for the server's close while the session is usable, otherwise
    /// just releases the memory.
    func freeChannel(_ channel: OpaquePointer) {
        if driver.isUsable, (try? driver.call("closing a channel") { libssh2_channel_free(channel) }) != nil { return }
        driver.abandon()
        _ = libssh2_channel_free(channel)
    }

    /// Opens an SFTP session (our own SFTP client on a `sftp` subsystem channel).
    public func openSFTP() throws -> SFTPSession { try SFTPSession(connection: self) }

    // MARK: Connecting

    /// A connected TCP socket to `host`:`port` (every resolved address tried in turn, each within
    /// `policy.timeout`, cancellation checked every `pollSlice`), with TCP keepalive probes.
    static func connectSocket(host: String, port: Int, policy: WaitPolicy) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_protocol = Int32(IPPROTO_TCP)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &list)
        guard resolved == 0 else {
            throw KDCTError(.io, "cannot resolve host '\(host)': \(String(cString: gai_strerror(resolved)))")
        }
        defer { freeaddrinfo(list) }
        var lastErrno: Int32 = ECONNREFUSED
        var entry = list
        while let address = entry {
            entry = address.pointee.ai_next
            let fd = Glibc.socket(address.pointee.ai_family, address.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue),
                                  address.pointee.ai_protocol)
            guard fd >= 0 else { lastErrno = errno; continue }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            var rc = connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen)
            if rc != 0 && errno == EINPROGRESS {
                let started = MonotonicClock.now
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                repeat {
                    if let token = policy.cancellation, token.isCancelled {
                        close(fd)
                        throw token.cancellationError()
                    }
                    var limit = min(WaitPolicy.pollSlice, policy.timeout - (MonotonicClock.now - started))
                    if let deadline = policy.deadline { limit = min(limit, deadline - MonotonicClock.now) }
                    if limit <= 0 { rc = 0; break }
                    rc = poll(&poller, 1, Int32(max(1, limit * 1000)))
                } while rc == 0 || (rc < 0 && errno == EINTR)
                if rc == 0 {
                    close(fd)
                    lastErrno = ETIMEDOUT
                    continue
                }
                var socketError: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &socketError, &length)
                rc = socketError == 0 ? 0 : -1
                if socketError != 0 { errno = socketError }
            }
            guard rc == 0 else {
                lastErrno = errno
                close(fd)
                continue
            }
            var on: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, socklen_t(MemoryLayout<Int32>.size))
            var idle: Int32 = 30, interval: Int32 = 10, count: Int32 = 9
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, socklen_t(MemoryLayout<Int32>.size))
            return fd
        }
        if lastErrno == ETIMEDOUT {
            throw KDCTError(.io, "cannot connect to \(host) port \(port): no answer within \(SessionDriver.seconds(policy.timeout)) (--timeout)")
        }
        throw KDCTError(.io, "cannot connect to \(host) port \(port)", errno: lastErrno)
    }

    /// Turns libssh2's handshake result into an error naming the host and, for a key exchange failure, the likely
    /// reason.
    static func checkHandshake(_ rc: Int32, session: OpaquePointer, endpoint: SSHEndpoint) throws {
        guard rc == 0 else {
            let hint = rc == LIBSSH2_ERROR_KEX_FAILURE
                ? "; no algorithm in common: libssh2 \(String(cString: libssh2_version(0))) needs an Ed25519 or ECDSA host key (its RSA host keys use SHA-1, which OpenSSH 8.8+ refuses)"
                : ""
            throw KDCTError(.io, "SSH handshake failed: \(SSHLibrary.lastErrorMessage(session)) (libssh2 error \(rc))\(hint)",
                            file: endpoint.displayName)
        }
    }

    /// Puts the host key algorithms of keys already recorded for this host first (as OpenSSH does), so a host
    /// with several keys presents the one known_hosts can vouch for.
    static func preferHostKeyTypes(_ recorded: [HostKeyType], session: OpaquePointer) throws {
        let supported = Set(supportedAlgorithms(session: session, method: LIBSSH2_METHOD_HOSTKEY))
        guard !supported.isEmpty else { return }
        var order: [String] = []
        for type in recorded + HostKeyType.preference {
            for name in type.algorithms where supported.contains(name) && !order.contains(name) { order.append(name) }
        }
        guard !order.isEmpty else { return }
        _ = libssh2_session_method_pref(session, LIBSSH2_METHOD_HOSTKEY, order.joined(separator: ","))
    }

    /// AES-128-CTR first, then the other CTR ciphers: libssh2 1.10 encrypts one 16-byte block per OpenSSL call
    /// (Benchmarks/RESULTS.md, export), so the cipher with fewer rounds is the cheapest one OpenSSH servers offer by
    /// default. The rest of libssh2's list follows, so a server without CTR ciphers still negotiates.
    private static func preferCiphers(session: OpaquePointer) {
        for method in [LIBSSH2_METHOD_CRYPT_CS, LIBSSH2_METHOD_CRYPT_SC] {
            let supported = supportedAlgorithms(session: session, method: method)
            let preferred = ["aes128-ctr", "aes192-ctr", "aes256-ctr"].filter(supported.contains)
            let order = preferred + supported.filter { !preferred.contains($0) && $0 != "none" }
            guard !order.isEmpty else { continue }
            _ = libssh2_session_method_pref(session, method, order.joined(separator: ","))
        }
    }

    /// The algorithms libssh2 supports for `method` (`LIBSSH2_METHOD_HOSTKEY`, `LIBSSH2_METHOD_CRYPT_CS`...), in
    /// its order of preference; empty when it cannot say.
    private static func supportedAlgorithms(session: OpaquePointer, method: Int32) -> [String] {
        var list: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        let count = libssh2_session_supported_algs(session, method, &list)
        guard count > 0, let list else { return [] }
        defer { libssh2_free(session, list) }
        return (0..<Int(count)).compactMap { list[$0].map { String(cString: $0) } }
    }

    static func presentedKey(session: OpaquePointer, endpoint: SSHEndpoint) throws -> HostKey {
        var length = 0
        var type: Int32 = 0
        guard let raw = libssh2_session_hostkey(session, &length, &type), length > 0 else {
            throw KDCTError(.io, "the server presented no host key", file: endpoint.displayName)
        }
        guard let keyType = HostKeyType(libssh2Type: type) else {
            throw KDCTError(.hostKeyRefused, "the server's host key is of a type libssh2 cannot check (type \(type))",
                            file: endpoint.displayName)
        }
        let blob = UnsafeRawBufferPointer(start: raw, count: length)
        return HostKey(type: keyType, blob: Array(blob))
    }

    /// Checks `key` against known_hosts: a match passes; a different key of the same type, a key of a type other
    /// than the recorded ones, or a revoked key is refused; an unknown host is refused unless `acceptNewHostKey`,
    /// which records it. Returns true when the key was recorded.
    static func verify(_ key: HostKey, endpoint: SSHEndpoint, knownHosts: KnownHostsFile,
                               recordedTypes: [HostKeyType], options: SSHConnectionOptions) throws -> Bool {
        let name = endpoint.knownHostsName
        let file = knownHosts.path
        let removal = "if the host was really reinstalled, remove the old entry with: ssh-keygen -R '\(name)' -f '\(file)'"
        switch knownHosts.status(of: key, name: name, recordedTypes: recordedTypes) {
        case .revoked:
            throw KDCTError(.hostKeyRefused, "the \(key.type.name) host key \(key.fingerprint) of \(name) is marked @revoked in \(file); not connecting",
                            file: endpoint.displayName)
        case .known:
            return false
        case .changed where recordedTypes.contains(key.type):
            throw KDCTError(.hostKeyRefused,
                            "HOST KEY CHANGED: \(name) presented the \(key.type.name) key \(key.fingerprint), which differs from the \(key.type.name) key recorded in \(file). Someone could be intercepting the connection; nothing was sent. \(removal)",
                            file: endpoint.displayName)
        case .changed:
            let types = recordedTypes.map(\.name).joined(separator: ", ")
            throw KDCTError(.hostKeyRefused,
                            "HOST KEY CHANGED: \(name) presented a \(key.type.name) key (\(key.fingerprint)) but \(file) records only \(types) keys for it; treated as a changed key, nothing was sent. \(removal)",
                            file: endpoint.displayName)
        case .unknown:
            guard options.acceptNewHostKey else {
                throw KDCTError(.hostKeyRefused,
                                "unknown host \(name): its \(key.type.name) key fingerprint is \(key.fingerprint). Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_\(Self.keyFileStem(key.type))_key.pub` run on the host, then rerun with --accept-new-host-key to record it in \(file)",
                                file: endpoint.displayName)
            }
            try knownHosts.record(name: name, key: key, hashed: options.hashRecordedHostNames)
            return true
        }
    }

    private static func keyFileStem(_ type: HostKeyType) -> String {
        switch type {
        case .ed25519: return "ed25519"
        case .ecdsa256, .ecdsa384, .ecdsa521: return "ecdsa"
        case .rsa: return "rsa"
        case .dss: return "dsa"
        }
    }
}

