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

/// How to verify a host and authenticate to it.
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
    /// Seconds to wait for the TCP connection.
    public var connectTimeout: Double = 20
    /// Seconds any single SSH operation may wait for the server (remote hashing of a large file is exempt).
    public var operationTimeout: Double = 300

    /// Defaults: `~/.ssh/known_hosts`, agent from the environment, default identities, no password.
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
}

enum SSHLibrary {
    /// `libssh2_init` must run once before any session, and is not thread-safe itself.
    static let initialized: Int32 = libssh2_init(0)

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

    /// True for the errors that mean the connection itself is gone.
    static func isConnectionLost(_ code: Int) -> Bool {
        [LIBSSH2_ERROR_SOCKET_SEND, LIBSSH2_ERROR_SOCKET_RECV, LIBSSH2_ERROR_SOCKET_DISCONNECT,
         LIBSSH2_ERROR_SOCKET_TIMEOUT, LIBSSH2_ERROR_TIMEOUT, LIBSSH2_ERROR_BAD_SOCKET,
         LIBSSH2_ERROR_CHANNEL_CLOSED, LIBSSH2_ERROR_CHANNEL_EOF_SENT].map(Int.init).contains(code)
    }
}

/// What a command run on the host over an exec channel produced.
public struct RemoteCommandResult: Sendable {
    /// The exit status (-1 when the server did not report one).
    public var status: Int32
    /// Standard output.
    public var output: [UInt8]
    /// Standard error.
    public var errorOutput: [UInt8]
}

/// An authenticated SSH connection to one host (libssh2, blocking mode): the host key checked against known_hosts
/// before anything else happens, then authentication by identity files, ssh-agent and password.
///
/// One connection is used from one thread at a time (libssh2 sessions are not thread-safe).
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
    let session: OpaquePointer
    private let socket: Int32
    private let options: SSHConnectionOptions
    private var isOpen = true

    /// Connects to `endpoint`, verifies its host key and authenticates.
    public init(endpoint: SSHEndpoint, options: SSHConnectionOptions) throws {
        _ = SSHLibrary.initialized
        for file in options.identityFiles where !FilePaths.isRegularFile(file) {
            throw KDCTError(.notFound, "identity file does not exist or is not a regular file", file: file)
        }
        let socket = try Self.connectSocket(host: endpoint.host, port: endpoint.port, timeout: options.connectTimeout)
        guard let session = kdct_ssh2_session_init() else {
            close(socket)
            throw KDCTError(.io, "libssh2 could not create a session", file: endpoint.displayName)
        }
        do {
            libssh2_session_set_blocking(session, 1)
            libssh2_session_set_timeout(session, Int(options.operationTimeout * 1000))
            let knownHosts = try KnownHostsFile(session: session, path: options.resolvedKnownHostsFile)
            let recordedTypes = knownHosts.recordedTypes(name: endpoint.knownHostsName)
            try Self.preferHostKeyTypes(recordedTypes, session: session)
            Self.preferCiphers(session: session)
            try Self.handshake(session: session, socket: socket, endpoint: endpoint)
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
            var authenticator = Authenticator(session: session, endpoint: endpoint, options: options)
            let method = try authenticator.run()
            self.endpoint = endpoint
            self.hostKey = key
            self.hostKeyWasRecorded = recorded
            self.authentication = method
            self.notes = notes
            self.session = session
            self.socket = socket
            self.options = options
        } catch {
            libssh2_session_free(session)
            close(socket)
            throw error
        }
    }

    deinit { disconnect() }

    /// Says goodbye to the server and closes the socket (also done on deinit).
    public func disconnect() {
        guard isOpen else { return }
        isOpen = false
        // A short timeout: the peer may already be gone.
        libssh2_session_set_timeout(session, 2000)
        _ = kdct_ssh2_session_disconnect(session, "done")
        libssh2_session_free(session)
        close(socket)
    }

    /// An error for a failed libssh2 call on this connection.
    func error(_ operation: String, code: Int, file: String? = nil) -> KDCTError {
        let message = SSHLibrary.lastErrorMessage(session)
        var text = "\(operation) failed: \(message)"
        if SSHLibrary.isConnectionLost(code) { text = "\(operation) failed: the connection to \(endpoint.displayName) was lost (\(message))" }
        return KDCTError(.io, text + " (libssh2 error \(code))", file: file ?? endpoint.displayName)
    }

    /// Sets libssh2's per-operation timeout; 0 waits forever (TCP keepalive still notices a dead peer).
    func setOperationTimeout(_ seconds: Double?) {
        libssh2_session_set_timeout(session, Int((seconds ?? options.operationTimeout) * 1000))
    }

    /// Runs `command` through the user's shell on the host (an exec channel) and collects its output (at most
    /// `outputLimit` bytes of each stream). `waitIndefinitely` lifts the operation timeout, for commands that
    /// read a whole disk image before printing anything.
    public func run(_ command: String, outputLimit: Int = 1 << 20, waitIndefinitely: Bool = false) throws -> RemoteCommandResult {
        if waitIndefinitely { setOperationTimeout(0) }
        defer { if waitIndefinitely { setOperationTimeout(nil) } }
        guard let channel = kdct_ssh2_channel_open_session(session) else {
            throw error("opening an exec channel", code: Int(libssh2_session_last_errno(session)))
        }
        defer { libssh2_channel_free(channel) }
        let started = kdct_ssh2_channel_exec(channel, command)
        guard started == 0 else { throw error("starting a remote command", code: Int(started)) }
        // Our commands read no input. Closing it also ends a server-side substitute that would wait for input
        // forever (e.g. `ForceCommand internal-sftp` accounts run the SFTP server instead of the command).
        _ = libssh2_channel_send_eof(channel)
        let output = try readAll(channel, limit: outputLimit, stream: 0)
        let errorOutput = try readAll(channel, limit: outputLimit, stream: SSH_EXTENDED_DATA_STDERR)
        _ = libssh2_channel_close(channel)
        _ = libssh2_channel_wait_closed(channel)
        let status = libssh2_channel_get_exit_status(channel)
        return RemoteCommandResult(status: status, output: output, errorOutput: errorOutput)
    }

    private func readAll(_ channel: OpaquePointer, limit: Int, stream: Int32) throws -> [UInt8] {
        var result: [UInt8] = []
        var buffer = [CChar](repeating: 0, count: 32768)
        while true {
            let n = buffer.withUnsafeMutableBufferPointer { libssh2_channel_read_ex(channel, stream, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 { throw error("reading a remote command's output", code: n) }
            if result.count < limit {
                result.append(contentsOf: buffer[0..<min(n, limit - result.count)].map { UInt8(bitPattern: $0) })
            }
        }
        return result
    }

    /// Opens the SFTP subsystem.
    public func openSFTP() throws -> SFTPSession { try SFTPSession(connection: self) }

    // MARK: Connecting

    /// A connected TCP socket to `host`:`port` (every resolved address tried in turn), with keepalive probes so a
    /// vanished peer is noticed within about two minutes even while waiting indefinitely.
    static func connectSocket(host: String, port: Int, timeout: Double) throws -> Int32 {
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
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var rc = connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen)
            if rc != 0 && errno == EINPROGRESS {
                var poller = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                repeat { rc = poll(&poller, 1, Int32(timeout * 1000)) } while rc < 0 && errno == EINTR
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
            _ = fcntl(fd, F_SETFL, flags)
            var on: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, socklen_t(MemoryLayout<Int32>.size))
            var idle: Int32 = 30, interval: Int32 = 10, count: Int32 = 9
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, socklen_t(MemoryLayout<Int32>.size))
            return fd
        }
        throw KDCTError(.io, "cannot connect to \(host) port \(port)", errno: lastErrno)
    }

    /// Runs the SSH handshake on a connected socket; a failure names the host and, for a key exchange failure,
    /// the likely reason.
    static func handshake(session: OpaquePointer, socket: Int32, endpoint: SSHEndpoint) throws {
        let rc = libssh2_session_handshake(session, socket)
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

/// Tries the configured authentication methods in OpenSSH's order (public keys: explicit identity files, then
/// ssh-agent, then default identity files; then password and keyboard-interactive) and, when all fail, says what
/// the server offered and what happened to each attempt.
struct Authenticator {
    let session: OpaquePointer
    let endpoint: SSHEndpoint
    let options: SSHConnectionOptions
    private var attempts: [String] = []

    init(session: OpaquePointer, endpoint: SSHEndpoint, options: SSHConnectionOptions) {
        self.session = session
        self.endpoint = endpoint
        self.options = options
    }

    /// Authenticates; returns how.
    mutating func run() throws -> String {
        let user = endpoint.user
        guard let list = libssh2_userauth_list(session, user, UInt32(user.utf8.count)) else {
            if libssh2_userauth_authenticated(session) != 0 { return "none (the server asked for no authentication)" }
            let code = Int(libssh2_session_last_errno(session))
            throw KDCTError(.authenticationFailed,
                            "the server did not list its authentication methods: \(SSHLibrary.lastErrorMessage(session)) (libssh2 error \(code))",
                            file: endpoint.displayName)
        }
        let offered = String(cString: list).split(separator: ",").map(String.init)
        if offered.contains("publickey") {
            for file in options.identityFiles {
                if let method = try tryIdentityFile(file) { return method }
            }
            if let method = try tryAgent() { return method }
            if options.identityFiles.isEmpty && options.useDefaultIdentities {
                for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                    let file = FilePaths.join(SSHConnectionOptions.homeDirectory, ".ssh/" + name)
                    guard FilePaths.isRegularFile(file) else { continue }
                    if let method = try tryIdentityFile(file) { return method }
                }
            }
        } else if !options.identityFiles.isEmpty || options.agent != .disabled {
            attempts.append("public keys: not tried, the server does not accept publickey")
        }
        if let source = options.password {
            if let method = try tryPassword(source: source, offered: offered) { return method }
        }
        if attempts.isEmpty {
            attempts.append("nothing: no identity file, ssh-agent or password was available (use -i, ssh-agent, --password-env or --password-stdin)")
        }
        throw failure()
    }

    private func failure(extra: String = "") -> KDCTError {
        KDCTError(.authenticationFailed,
                  "\(endpoint.user) was not let in. The server accepts: \(offeredText). Tried: \(attempts.joined(separator: "; ")).\(extra)",
                  file: endpoint.displayName)
    }

    private var offeredText: String {
        guard let list = libssh2_userauth_list(session, endpoint.user, UInt32(endpoint.user.utf8.count)) else { return "(unknown)" }
        return String(cString: list).split(separator: ",").joined(separator: ", ")
    }

    /// Throws when the last failure means the server hung up (OpenSSH closes after MaxAuthTries failures).
    private func checkStillConnected(_ code: Int32) throws {
        if SSHLibrary.isConnectionLost(Int(code)) {
            throw KDCTError(.authenticationFailed,
                            "\(endpoint.user) was not let in and the server closed the connection (too many attempts? OpenSSH allows MaxAuthTries, 6 by default). Tried: \(attempts.joined(separator: "; ")).",
                            file: endpoint.displayName)
        }
    }

    private mutating func tryIdentityFile(_ file: String) throws -> String? {
        guard FilePaths.isRegularFile(file) else {
            attempts.append("identity file \(file): not found")
            return nil
        }
        var passphrase: String?
        if IdentityFileInspector.isEncrypted(path: file) {
            for source in options.passphraseSources {
                if let value = try source.resolve(prompt: "Enter passphrase for key '\(file)': ") {
                    passphrase = value
                    break
                }
            }
            if passphrase == nil {
                attempts.append("identity file \(file): encrypted and no passphrase was given (set KDCT_SSH_PASSPHRASE or run on a terminal)")
                return nil
            }
        }
        let rc = kdct_ssh2_userauth_publickey_fromfile(session, endpoint.user, nil, file, passphrase)
        if rc == 0 { return "publickey (identity file \(file))" }
        switch rc {
        case LIBSSH2_ERROR_FILE:
            attempts.append("identity file \(file): could not be loaded (\(passphrase == nil ? "" : "wrong passphrase, or ")a key format libssh2 does not read: \(SSHLibrary.lastErrorMessage(session)))")
        case LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED, LIBSSH2_ERROR_AUTHENTICATION_FAILED:
            attempts.append("identity file \(file): key rejected by the server"
                            + (IdentityFileInspector.keyType(path: file) == "ssh-rsa" ? SSHLibrary.rsaHint : ""))
        default:
            attempts.append("identity file \(file): \(SSHLibrary.lastErrorMessage(session)) (libssh2 error \(rc))")
        }
        try checkStillConnected(rc)
        return nil
    }

    private mutating func tryAgent() throws -> String? {
        let socketPath: String
        switch options.agent {
        case .disabled:
            return nil
        case let .socket(path):
            socketPath = path
        case .environment:
            guard let raw = getenv("SSH_AUTH_SOCK"), let path = String(validatingCString: raw), !path.isEmpty else {
                if options.identityFiles.isEmpty { attempts.append("ssh-agent: none (SSH_AUTH_SOCK is not set)") }
                return nil
            }
            socketPath = path
        }
        guard let agent = libssh2_agent_init(session) else {
            attempts.append("ssh-agent: libssh2 could not set up an agent client")
            return nil
        }
        defer {
            _ = libssh2_agent_disconnect(agent)
            libssh2_agent_free(agent)
        }
        libssh2_agent_set_identity_path(agent, socketPath)
        guard libssh2_agent_connect(agent) == 0 else {
            attempts.append("ssh-agent at \(socketPath): cannot connect")
            return nil
        }
        guard libssh2_agent_list_identities(agent) == 0 else {
            attempts.append("ssh-agent at \(socketPath): could not list its keys")
            return nil
        }
        var previous: UnsafeMutablePointer<libssh2_agent_publickey>?
        var rejected: [String] = []
        while true {
            var identity: UnsafeMutablePointer<libssh2_agent_publickey>?
            guard libssh2_agent_get_identity(agent, &identity, previous) == 0, let identity else { break }
            let comment = identity.pointee.comment.map { String(cString: $0) } ?? "?"
            let rc = libssh2_agent_userauth(agent, endpoint.user, identity)
            if rc == 0 { return "publickey (ssh-agent key \(comment))" }
            let isRSA = identity.pointee.blob.map { blob in
                let reader = ByteReader(Array(UnsafeBufferPointer(start: blob, count: min(identity.pointee.blob_len, 64))),
                                        structure: "agent key")
                return (try? reader.u32be(0)) == 7 && (try? reader.ascii(4, 7)) == "ssh-rsa"
            } ?? false
            rejected.append(comment + (isRSA ? SSHLibrary.rsaHint : ""))
            if SSHLibrary.isConnectionLost(Int(rc)) {
                attempts.append("ssh-agent: keys rejected (\(rejected.joined(separator: ", ")))")
                try checkStillConnected(rc)
            }
            previous = identity
        }
        attempts.append(rejected.isEmpty ? "ssh-agent at \(socketPath): holds no keys"
                                         : "ssh-agent: \(rejected.count) key(s) rejected by the server (\(rejected.joined(separator: ", ")))")
        return nil
    }

    private mutating func tryPassword(source: SecretSource, offered: [String]) throws -> String? {
        guard offered.contains("password") || offered.contains("keyboard-interactive") else {
            attempts.append("password: not tried, the server accepts neither password nor keyboard-interactive")
            return nil
        }
        guard let password = try source.resolve(prompt: "\(endpoint.displayName)'s password: ") else {
            attempts.append("password: \(source.descriptionForMessages) gave none")
            return nil
        }
        if offered.contains("password") {
            let rc = kdct_ssh2_userauth_password(session, endpoint.user, password)
            if rc == 0 { return "password (from \(source.descriptionForMessages))" }
            attempts.append(rc == LIBSSH2_ERROR_PASSWORD_EXPIRED
                            ? "password: expired on the server"
                            : "password from \(source.descriptionForMessages): rejected by the server")
            try checkStillConnected(rc)
        }
        if offered.contains("keyboard-interactive") {
            let rc = kdct_ssh2_userauth_kbdint_password(session, endpoint.user, password)
            if rc == 0 { return "keyboard-interactive (password from \(source.descriptionForMessages))" }
            attempts.append("keyboard-interactive with the password from \(source.descriptionForMessages): rejected by the server")
            try checkStillConnected(rc)
        }
        return nil
    }
}

/// Looks inside a private key file just enough to know whether it needs a passphrase.
enum IdentityFileInspector {
    /// The key type (`ssh-rsa`, `ssh-ed25519`...) named by the `.pub` file beside `path`, or by a PEM header.
    static func keyType(path: String) -> String? {
        if let file = try? ReadOnlyFile(path: path + ".pub"), file.size <= 1 << 16,
           let bytes = try? file.readBytes(count: Int(file.size), at: 0) {
            return String(decoding: bytes, as: UTF8.self).split(separator: " ").first.map(String.init)
        }
        guard let file = try? ReadOnlyFile(path: path), file.size <= 1 << 20,
              let bytes = try? file.readBytes(count: min(Int(file.size), 64), at: 0) else { return nil }
        return String(decoding: bytes, as: UTF8.self).hasPrefix("-----BEGIN RSA PRIVATE KEY-----") ? "ssh-rsa" : nil
    }

    /// True for an OpenSSH-format key whose cipher is not `none`, or a PEM key marked `ENCRYPTED`.
    static func isEncrypted(path: String) -> Bool {
        guard let file = try? ReadOnlyFile(path: path), file.size <= 1 << 20,
              let bytes = try? file.readBytes(count: Int(file.size), at: 0) else { return false }
        let text = String(decoding: bytes, as: UTF8.self)
        let begin = "-----BEGIN OPENSSH PRIVATE KEY-----"
        if let start = text.firstRange(of: begin), let end = text.firstRange(of: "-----END OPENSSH PRIVATE KEY-----") {
            guard start.upperBound <= end.lowerBound,
                  let decoded = TextEncoding.decodeBase64(text[start.upperBound..<end.lowerBound]) else { return false }
            // "openssh-key-v1\0", then string ciphername (PROTOCOL.key).
            let magic = Array("openssh-key-v1".utf8) + [0]
            guard decoded.count > magic.count + 4, Array(decoded[0..<magic.count]) == magic else { return false }
            let reader = ByteReader(decoded, structure: "OpenSSH private key")
            guard let length = try? reader.u32be(magic.count), length <= 64,
                  let name = try? reader.ascii(magic.count + 4, Int(length)) else { return false }
            return name != "none"
        }
        return text.contains("ENCRYPTED")
    }
}
