import CLibSSH2
import Crypto
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// A host key type: what libssh2 reports for the key a server presented, with the names OpenSSH uses.
public enum HostKeyType: Sendable, CaseIterable {
    /// `ssh-ed25519`.
    case ed25519
    /// `ecdsa-sha2-nistp256`.
    case ecdsa256
    /// `ecdsa-sha2-nistp384`.
    case ecdsa384
    /// `ecdsa-sha2-nistp521`.
    case ecdsa521
    /// `ssh-rsa` (also used with the rsa-sha2-256/512 signatures).
    case rsa
    /// `ssh-dss` (DSA; OpenSSH no longer accepts it by default).
    case dss

    /// From `libssh2_session_hostkey`'s type, or nil for a type libssh2 cannot name.
    init?(libssh2Type: Int32) {
        switch libssh2Type {
        case LIBSSH2_HOSTKEY_TYPE_ED25519: self = .ed25519
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: self = .ecdsa256
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: self = .ecdsa384
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: self = .ecdsa521
        case LIBSSH2_HOSTKEY_TYPE_RSA: self = .rsa
        case LIBSSH2_HOSTKEY_TYPE_DSS: self = .dss
        default: return nil
        }
    }

    /// The key's name in known_hosts and `ssh-keygen -l` output.
    public var name: String {
        switch self {
        case .ed25519: return "ssh-ed25519"
        case .ecdsa256: return "ecdsa-sha2-nistp256"
        case .ecdsa384: return "ecdsa-sha2-nistp384"
        case .ecdsa521: return "ecdsa-sha2-nistp521"
        case .rsa: return "ssh-rsa"
        case .dss: return "ssh-dss"
        }
    }

    /// The host key algorithms (libssh2 1.10 names) that yield a key of this type.
    var algorithms: [String] {
        switch self {
        case .rsa: return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        default: return [name]
        }
    }

    /// libssh2's known-hosts key type bits.
    var knownHostMask: Int32 {
        switch self {
        case .ed25519: return LIBSSH2_KNOWNHOST_KEY_ED25519
        case .ecdsa256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256
        case .ecdsa384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384
        case .ecdsa521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521
        case .rsa: return LIBSSH2_KNOWNHOST_KEY_SSHRSA
        case .dss: return LIBSSH2_KNOWNHOST_KEY_SSHDSS
        }
    }

    /// Our order of preference when no key is known yet: OpenSSH's (Ed25519, then ECDSA, then RSA). DSA keys
    /// are only accepted when known_hosts already holds one.
    static let preference: [HostKeyType] = [.ed25519, .ecdsa256, .ecdsa384, .ecdsa521, .rsa]
}

/// A server's host key as presented during the handshake.
public struct HostKey: Sendable, Equatable {
    /// The key type.
    public var type: HostKeyType
    /// The public key blob (SSH wire encoding).
    public var blob: [UInt8]

    /// OpenSSH's fingerprint: `SHA256:` and the unpadded Base64 of the SHA-256 of the blob, as `ssh-keygen -l`
    /// and ssh's prompts print it.
    public var fingerprint: String {
        "SHA256:" + TextEncoding.base64(SHA256.hash(data: blob), padded: false)
    }
}

/// A known_hosts file read through libssh2's known-hosts API: plain and hashed (`|1|salt|hash`) host names,
/// `[host]:port` entries for other ports, comma-separated name lists. `@revoked` lines are read here (libssh2
/// ignores their usual `*` pattern): a key listed there is refused whatever host it names. Lines libssh2 cannot
/// use (key types it does not know, `@cert-authority` lines, wildcard patterns) are skipped; they never make a
/// key acceptable.
final class KnownHostsFile {
    /// The file's path.
    let path: String
    /// Lines that were skipped.
    private(set) var skippedLines = 0
    private let hosts: OpaquePointer
    /// (key type name, Base64 key) of every `@revoked` line.
    private var revoked: [(type: String, key: String)] = []

    /// The result of looking a host key up.
    enum Lookup: Equatable {
        /// The file has this key for this host.
        case match
        /// The file has a different key of the same type for this host.
        case mismatch
        /// The file has no key of this type for this host.
        case notFound
    }

    /// Reads `path` (a missing file is an empty list) with `session`'s allocator.
    init(session: OpaquePointer, path: String) throws {
        guard let hosts = libssh2_knownhost_init(session) else {
            throw KDCTError(.io, "libssh2_knownhost_init failed", file: path)
        }
        self.path = path
        self.hosts = hosts
        guard FilePaths.exists(path) else { return }
        let file = try ReadOnlyFile(path: path)
        guard file.size <= 64 << 20 else {
            throw KDCTError.limit("known_hosts size", value: file.size, limit: 64 << 20, file: path)
        }
        let bytes = try file.readBytes(count: Int(file.size), at: 0, what: "known_hosts")
        for rawLine in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: true) {
            var line = Array(rawLine)
            if line.last == UInt8(ascii: "\r") { line.removeLast() }
            let trimmed = line.drop { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
            if trimmed.isEmpty || trimmed.first == UInt8(ascii: "#") { continue }
            let content = Array(trimmed)
            if content.first == UInt8(ascii: "@") {
                // "@revoked HOSTS KEYTYPE BASE64 [comment]"
                let fields = content.split(whereSeparator: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") })
                    .map { String(decoding: $0, as: UTF8.self) }
                if fields.count >= 4 && fields[0] == "@revoked" {
                    revoked.append((fields[2], fields[3]))
                } else {
                    skippedLines += 1
                }
                continue
            }
            let rc = content.withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) {
                    libssh2_knownhost_readline(hosts, $0.baseAddress, $0.count, LIBSSH2_KNOWNHOST_FILE_OPENSSH)
                }
            }
            if rc != 0 { skippedLines += 1 }
        }
    }

    deinit { libssh2_knownhost_free(hosts) }

    /// Looks up `key` for the known_hosts name `name` (`host` or `[host]:port`). Only that exact name is
    /// checked: a key recorded for port 22 does not vouch for another port, as with OpenSSH.
    func lookup(name: String, key: HostKey) -> Lookup {
        let typemask = LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | key.type.knownHostMask
        let rc = key.blob.withUnsafeBufferPointer { blob in
            blob.withMemoryRebound(to: CChar.self) {
                libssh2_knownhost_checkp(hosts, name, -1, $0.baseAddress, $0.count, typemask, nil)
            }
        }
        switch rc {
        case LIBSSH2_KNOWNHOST_CHECK_MATCH: return .match
        case LIBSSH2_KNOWNHOST_CHECK_MISMATCH: return .mismatch
        default: return .notFound
        }
    }

    /// The key types the file holds for `name`. libssh2 has no query for this; a lookup with a key that cannot
    /// be right reports `mismatch` exactly when a key of that type is recorded (hashed names included).
    func recordedTypes(name: String) -> [HostKeyType] {
        HostKeyType.allCases.filter { lookup(name: name, key: HostKey(type: $0, blob: [0])) == .mismatch }
    }

    /// True when `key` is listed in an `@revoked` line (whatever host pattern that line names).
    func isRevoked(_ key: HostKey) -> Bool {
        let encoded = TextEncoding.base64(key.blob)
        return revoked.contains { $0.type == key.type.name && $0.key == encoded }
    }

    /// Appends an entry for `name` and `key` to the file (creating it, and its directory, owner-only), hashed as
    /// `|1|salt|HMAC-SHA1(salt, name)` when `hashed` (what Debian's ssh does by default, `HashKnownHosts yes`).
    /// The line is formatted by libssh2 and appended, so the rest of the file is left exactly as it was.
    func record(name: String, key: HostKey, hashed: Bool) throws {
        var typemask = LIBSSH2_KNOWNHOST_KEYENC_RAW | key.type.knownHostMask
        var hostField = name
        var saltField: String?
        if hashed {
            var generator = SystemRandomNumberGenerator()
            let salt = (0..<20).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Array(name.utf8), using: SymmetricKey(data: salt))
            hostField = TextEncoding.base64(mac)
            saltField = TextEncoding.base64(salt)
            typemask |= LIBSSH2_KNOWNHOST_TYPE_SHA1
        } else {
            typemask |= LIBSSH2_KNOWNHOST_TYPE_PLAIN
        }
        var stored: UnsafeMutablePointer<libssh2_knownhost>?
        let added = key.blob.withUnsafeBufferPointer { blob in
            blob.withMemoryRebound(to: CChar.self) {
                libssh2_knownhost_addc(hosts, hostField, saltField, $0.baseAddress, $0.count, nil, 0, typemask, &stored)
            }
        }
        guard added == 0, let stored else {
            throw KDCTError(.io, "libssh2 could not add a known_hosts entry for \(name) (error \(added))", file: path)
        }
        var line = [CChar](repeating: 0, count: 16384)
        var length = 0
        let written = libssh2_knownhost_writeline(hosts, stored, &line, line.count, &length, LIBSSH2_KNOWNHOST_FILE_OPENSSH)
        guard written == 0, length > 0 else {
            throw KDCTError(.io, "libssh2 could not format a known_hosts line for \(name) (error \(written))", file: path)
        }
        var text = line[0..<length].map { UInt8(bitPattern: $0) }
        if text.last != UInt8(ascii: "\n") { text.append(UInt8(ascii: "\n")) }
        try append(text)
    }

    private func append(_ line: [UInt8]) throws {
        let directory = FilePaths.directory(of: path)
        if !FilePaths.exists(directory) && mkdir(directory, 0o700) != 0 {
            throw KDCTError.io("mkdir", errno: errno, file: directory)
        }
        let fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw KDCTError.io("open for appending", errno: errno, file: path) }
        defer { close(fd) }
        var bytes = line
        // Never glue the new entry onto a last line that lacks its newline.
        var st = stat()
        if fstat(fd, &st) == 0, st.st_size > 0 {
            var last: UInt8 = 0
            if pread(fd, &last, 1, st.st_size - 1) == 1, last != UInt8(ascii: "\n") {
                bytes.insert(UInt8(ascii: "\n"), at: 0)
            }
        }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw KDCTError.io("write", errno: errno, file: path)
            }
            done += n
        }
        if fsync(fd) != 0 { throw KDCTError.io("fsync", errno: errno, file: path) }
    }
}
