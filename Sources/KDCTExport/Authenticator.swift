import CLibSSH2
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// Tries the configured authentication methods in OpenSSH's order (public keys: explicit identity files, then
/// ssh-agent, then default identity files; then password and keyboard-interactive) and, when all fail, says what
/// the server offered and what happened to each attempt.
struct Authenticator {
    let driver: SessionDriver
    let endpoint: SSHEndpoint
    let options: SSHConnectionOptions
    private var attempts: [String] = []
    private var offered: [String] = []
    /// The password, and the passphrase of the identity file, that let us in: a further connection to the same
    /// host (another stream, a cleanup) reuses them instead of asking again.
    private(set) var usedPassword: String?
    private(set) var usedIdentity: (file: String, passphrase: String?)?

    var session: OpaquePointer { driver.session }

    init(driver: SessionDriver, endpoint: SSHEndpoint, options: SSHConnectionOptions) {
        self.driver = driver
        self.endpoint = endpoint
        self.options = options
    }

    /// Authenticates; returns how.
    mutating func run() throws -> String {
        let user = endpoint.user
        guard let list = try driver.callPointer("asking for the authentication methods", .reply, {
            libssh2_userauth_list(session, user, UInt32(user.utf8.count))
        }) else {
            if libssh2_userauth_authenticated(session) != 0 { return "none (the server asked for no authentication)" }
            let code = Int(libssh2_session_last_errno(session))
            throw KDCTError(.authenticationFailed,
                            "the server did not list its authentication methods: \(SSHLibrary.lastErrorMessage(session)) (libssh2 error \(code))",
                            file: endpoint.displayName)
        }
        offered = String(cString: list).split(separator: ",").map(String.init)
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
        offered.isEmpty ? "(unknown)" : offered.joined(separator: ", ")
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
        let rc = try driver.call("authenticating with \(file)") {
            kdct_ssh2_userauth_publickey_fromfile(session, endpoint.user, nil, file, passphrase)
        }
        if rc == 0 {
            usedIdentity = (file, passphrase)
            return "publickey (identity file \(file))"
        }
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
            let rc = try driver.call("authenticating with ssh-agent") { libssh2_agent_userauth(agent, endpoint.user, identity) }
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
            let rc = try driver.call("authenticating with a password") { kdct_ssh2_userauth_password(session, endpoint.user, password) }
            if rc == 0 {
                usedPassword = password
                return "password (from \(source.descriptionForMessages))"
            }
            attempts.append(rc == LIBSSH2_ERROR_PASSWORD_EXPIRED
                            ? "password: expired on the server"
                            : "password from \(source.descriptionForMessages): rejected by the server")
            try checkStillConnected(rc)
        }
        if offered.contains("keyboard-interactive") {
            let rc = try password.withCString { text in
                try driver.call("authenticating by keyboard-interactive") { kdct_ssh2_userauth_kbdint_password(session, endpoint.user, text) }
            }
            if rc == 0 {
                usedPassword = password
                return "keyboard-interactive (password from \(source.descriptionForMessages))"
            }
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
