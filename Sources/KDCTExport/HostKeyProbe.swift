import CLibSSH2
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// How known_hosts judges the key a host presents.
public enum HostKeyStatus: String, Sendable {
    /// known_hosts holds this key for the host.
    case known
    /// known_hosts holds no key for the host: the user must compare the fingerprint before trusting it.
    case unknown
    /// known_hosts holds a different key for the host (of this type, or only keys of other types): refused.
    case changed
    /// The key is listed in an `@revoked` line: refused.
    case revoked
}

extension KnownHostsFile {
    /// The verdict on `key` presented under the known_hosts name `name`; `recordedTypes` are the key types the
    /// file holds for that name (`recordedTypes(name:)`).
    func status(of key: HostKey, name: String, recordedTypes: [HostKeyType]) -> HostKeyStatus {
        if isRevoked(key) { return .revoked }
        switch lookup(name: name, key: key) {
        case .match: return .known
        case .mismatch: return .changed
        case .notFound: return recordedTypes.isEmpty ? .unknown : .changed
        }
    }
}

/// What a host presented before any authentication.
public struct HostKeyProbeResult: Sendable {
    /// The host probed, as given.
    public var host: String
    /// The TCP port probed.
    public var port: Int
    /// The name known_hosts files the host under (`host`, or `[host]:port` for another port than 22).
    public var knownHostsName: String
    /// The key the host presented.
    public var key: HostKey
    /// known_hosts' verdict.
    public var status: HostKeyStatus
    /// The known_hosts file consulted.
    public var knownHostsFile: String
    /// True when `trust` recorded the key in this call.
    public var recorded: Bool
}

/// Looks at a host's key without logging in (`POST /hosts/probe` of the service, the first step of ssh's
/// "are you sure you want to continue connecting" dialog), and records a key the user has compared
/// (`trust`), under the same rules as an export: the same known_hosts file, host key type order and verdicts;
/// a changed or revoked key is refused, never replaced.
public enum HostKeyProbe {
    /// Connects to `host`:`port`, runs the SSH handshake and reports the host key and known_hosts' verdict.
    /// Nothing is sent beyond the key exchange.
    public static func probe(host: String, port: Int, options: SSHConnectionOptions) throws -> HostKeyProbeResult {
        try withHandshake(host: host, port: port, options: options) { _, _, _, result in result }
    }

    /// Records the host's key in known_hosts after checking that it is still the one whose `fingerprint` the
    /// user confirmed. A key already known is left as it is; a changed or revoked key is refused
    /// (`hostKeyRefused`), exactly as an export would refuse it.
    public static func trust(host: String, port: Int, fingerprint: String,
                             options: SSHConnectionOptions) throws -> HostKeyProbeResult {
        try withHandshake(host: host, port: port, options: options) { endpoint, knownHosts, recordedTypes, result in
            guard result.key.fingerprint == fingerprint else {
                throw KDCTError(.hostKeyRefused,
                                "\(result.knownHostsName) now presents the \(result.key.type.name) key \(result.key.fingerprint), not the key \(fingerprint) that was confirmed; nothing was recorded",
                                file: endpoint.displayName, field: "fingerprint")
            }
            var accepting = options
            accepting.acceptNewHostKey = true
            var trusted = result
            trusted.recorded = try SSHConnection.verify(result.key, endpoint: endpoint, knownHosts: knownHosts,
                                                        recordedTypes: recordedTypes, options: accepting)
            trusted.status = .known
            return trusted
        }
    }

    /// Connects, shakes hands and hands the presented key and known_hosts to `body`; always disconnects.
    private static func withHandshake<T>(host: String, port: Int, options: SSHConnectionOptions,
                                         _ body: (SSHEndpoint, KnownHostsFile, [HostKeyType], HostKeyProbeResult) throws -> T) throws -> T {
        _ = SSHLibrary.initialized
        guard (1...65535).contains(port) else {
            throw KDCTError(.invalidArgument, "port \(port) is not between 1 and 65535", field: "port")
        }
        // The user name plays no part before authentication.
        let endpoint = SSHEndpoint(user: "kdct", host: host, port: port)
        let policy = options.waitPolicy
        let socket = try SSHConnection.connectSocket(host: host, port: port, policy: policy)
        guard let session = kdct_ssh2_session_init() else {
            close(socket)
            throw KDCTError(.io, "libssh2 could not create a session", file: endpoint.displayName)
        }
        let driver = SessionDriver(session: session, socket: socket, hostName: endpoint.displayName, policy: policy)
        defer {
            if driver.isUsable {
                driver.policy = policy.forCleanup(seconds: 1)
                _ = try? driver.call("disconnecting") { kdct_ssh2_session_disconnect(session, "host key probe") }
            }
            driver.abandon()
            libssh2_session_free(session)
            close(socket)
        }
        let knownHosts = try KnownHostsFile(session: session, path: options.resolvedKnownHostsFile)
        let recordedTypes = knownHosts.recordedTypes(name: endpoint.knownHostsName)
        try SSHConnection.preferHostKeyTypes(recordedTypes, session: session)
        let rc = try driver.call("SSH handshake with \(endpoint.displayName)") { libssh2_session_handshake(session, socket) }
        try SSHConnection.checkHandshake(rc, session: session, endpoint: endpoint)
        let key = try SSHConnection.presentedKey(session: session, endpoint: endpoint)
        let result = HostKeyProbeResult(host: host, port: port, knownHostsName: endpoint.knownHostsName, key: key,
                                        status: knownHosts.status(of: key, name: endpoint.knownHostsName,
                                                                  recordedTypes: recordedTypes),
                                        knownHostsFile: knownHosts.path, recorded: false)
        return try body(endpoint, knownHosts, recordedTypes, result)
    }
}
