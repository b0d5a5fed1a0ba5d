import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

@Suite("Host keys checked against known_hosts (libssh2 knownhost API)")
struct HostKeyTests {
    /// Connects to `server` with `configure` applied to its default options (trusting nothing by default).
    @discardableResult
    func connect(_ server: TestSSHServer, knownHosts: String,
                 configure: (inout SSHConnectionOptions) -> Void = { _ in }) throws -> SSHConnection {
        var options = try server.options(knownHosts: knownHosts)
        configure(&options)
        return try SSHConnection(endpoint: server.endpoint, options: options)
    }

    /// A fresh public key line of `type` (not the server's).
    func otherKey(_ type: String, in directory: TemporaryDirectory) throws -> String {
        let path = directory.file("other_\(type)_\(UUID().uuidString.prefix(8))")
        let made = try runProcess(["ssh-keygen", "-q", "-t", type, "-N", "", "-f", path])
        #expect(made.status == 0)
        return try String(contentsOfFile: path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("an unknown host is refused with its SHA-256 fingerprint, and nothing is recorded")
    func unknownHostRefused() throws {
        let server = try TestSSHServer()
        let knownHosts = server.directory.file("empty_known_hosts")
        let error = expectKDCTError(.hostKeyRefused) { try connect(server, knownHosts: knownHosts) }
        let fingerprint = try server.hostKeyFingerprint()
        #expect(fingerprint.hasPrefix("SHA256:"))
        #expect(error?.message.contains(fingerprint) == true, "\(String(describing: error)) should show \(fingerprint)")
        #expect(error?.message.contains("--accept-new-host-key") == true)
        #expect(!FileManager.default.fileExists(atPath: knownHosts))
    }

    @Test("--accept-new-host-key records a hashed [host]:port entry OpenSSH finds; the next connection needs no flag")
    func acceptNewRecords() throws {
        let server = try TestSSHServer()
        let knownHosts = server.directory.file("recorded_known_hosts")
        try "# a comment that must survive\n".write(toFile: knownHosts, atomically: true, encoding: .utf8)
        let first = try connect(server, knownHosts: knownHosts) { $0.acceptNewHostKey = true }
        #expect(first.hostKeyWasRecorded)
        #expect(first.hostKey.fingerprint == (try server.hostKeyFingerprint()))
        first.disconnect()
        let text = try String(contentsOfFile: knownHosts, encoding: .utf8)
        #expect(text.hasPrefix("# a comment that must survive\n"))
        #expect(text.contains("|1|"))
        #expect(!text.contains("127.0.0.1"), "the entry is hashed")
        // OpenSSH's own lookup finds the entry under [127.0.0.1]:port.
        let found = try runProcess(["ssh-keygen", "-F", "[127.0.0.1]:\(server.port)", "-f", knownHosts])
        #expect(found.status == 0)
        #expect(found.stdout.contains(String(server.hostPublicKey.split(separator: " ")[1])))
        let second = try connect(server, knownHosts: knownHosts)
        #expect(!second.hostKeyWasRecorded)
    }

    @Test("plain and ssh-keygen-hashed entries both match; an entry for port 22 does not vouch for another port")
    func entryForms() throws {
        let server = try TestSSHServer()
        let plain = try server.writeKnownHosts("plain")
        try connect(server, knownHosts: plain)
        let hashed = try server.writeKnownHosts("hashed")
        let hashing = try runProcess(["ssh-keygen", "-H", "-f", hashed])
        #expect(hashing.status == 0)
        #expect(!(try String(contentsOfFile: hashed, encoding: .utf8)).contains("127.0.0.1"))
        try connect(server, knownHosts: hashed)
        let portless = server.directory.file("portless")
        try "localhost,127.0.0.1 \(server.hostPublicKey)\n".write(toFile: portless, atomically: true, encoding: .utf8)
        expectKDCTError(.hostKeyRefused) { try connect(server, knownHosts: portless) }
    }

    @Test("a changed host key is refused, even with --accept-new-host-key, and known_hosts is left alone")
    func changedKeyRefused() throws {
        let server = try TestSSHServer()
        let knownHosts = server.directory.file("changed")
        let line = "[127.0.0.1]:\(server.port) \(try otherKey("ed25519", in: server.directory))\n"
        try line.write(toFile: knownHosts, atomically: true, encoding: .utf8)
        let error = expectKDCTError(.hostKeyRefused) {
            try connect(server, knownHosts: knownHosts) { $0.acceptNewHostKey = true }
        }
        #expect(error?.message.contains("HOST KEY CHANGED") == true)
        #expect(error?.message.contains(try server.hostKeyFingerprint()) == true)
        #expect(try String(contentsOfFile: knownHosts, encoding: .utf8) == line)
    }

    @Test("a host whose recorded key is of another type is treated as changed")
    func otherTypeRecorded() throws {
        let server = try TestSSHServer()
        let knownHosts = server.directory.file("ecdsa_only")
        try "[127.0.0.1]:\(server.port) \(try otherKey("ecdsa", in: server.directory))\n"
            .write(toFile: knownHosts, atomically: true, encoding: .utf8)
        let error = expectKDCTError(.hostKeyRefused) {
            try connect(server, knownHosts: knownHosts) { $0.acceptNewHostKey = true }
        }
        #expect(error?.message.contains("ecdsa-sha2-nistp256") == true)
    }

    @Test("a revoked key is refused even when it is also listed as known")
    func revokedKey() throws {
        let server = try TestSSHServer()
        let knownHosts = server.directory.file("revoked")
        try "[127.0.0.1]:\(server.port) \(server.hostPublicKey)\n@revoked * \(server.hostPublicKey)\n"
            .write(toFile: knownHosts, atomically: true, encoding: .utf8)
        let error = expectKDCTError(.hostKeyRefused) { try connect(server, knownHosts: knownHosts) }
        #expect(error?.message.contains("@revoked") == true)
    }
}
