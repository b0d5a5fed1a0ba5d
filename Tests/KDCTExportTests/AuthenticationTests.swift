import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

@Suite("SSH authentication: identity files, ssh-agent, passwords")
struct AuthenticationTests {
    @Test("upload by ssh-agent; the arrived file's SHA-256 equals the local one")
    func uploadByAgent() throws {
        let server = try TestSSHServer()
        let agent = try TestSSHAgent(keys: [server.clientKey])
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 3 << 20, seed: 21)
        let result = try export(source, to: server, as: "disk.raw") {
            $0.connection.identityFiles = []
            $0.connection.agent = .socket(agent.socketPath)
        }
        #expect(result.authentication.contains("ssh-agent"))
        #expect(try fileSHA256(server.remoteDirectory + "/disk.raw") == fileSHA256(source))
    }

    @Test("upload by password; the arrived file's SHA-256 equals the local one")
    func uploadByPassword() throws {
        let server = try TestSSHServer(passwordAuthentication: true)
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 3 << 20, seed: 22)
        let result = try export(source, to: server, as: "disk.raw") {
            $0.connection.identityFiles = []
            $0.connection.password = .value(server.password)
        }
        #expect(result.authentication.hasPrefix("password"))
        #expect(try fileSHA256(server.remoteDirectory + "/disk.raw") == fileSHA256(source))
    }

    @Test("a wrong password gives a clear error: what the server offers and what was tried")
    func wrongPassword() throws {
        let server = try TestSSHServer(passwordAuthentication: true)
        var options = try server.options(identity: false)
        options.password = .value("not the password")
        let error = expectKDCTError(.authenticationFailed) {
            _ = try SSHConnection(endpoint: server.endpoint, options: options)
        }
        let text = error?.description ?? ""
        #expect(text.contains("publickey") && text.contains("password"), "\(text)")
        #expect(text.contains("rejected by the server"), "\(text)")
    }

    @Test("a missing identity file is named before anything is sent")
    func missingKey() throws {
        let server = try TestSSHServer()
        var options = try server.options(identity: false)
        options.identityFiles = [server.directory.file("no_such_key")]
        let error = expectKDCTError(.notFound) { _ = try SSHConnection(endpoint: server.endpoint, options: options) }
        #expect(error?.file == server.directory.file("no_such_key"))
    }

    @Test("a key the server does not know, and no other method: the error lists offers and attempts")
    func unauthorizedKey() throws {
        let server = try TestSSHServer()
        let stranger = server.directory.file("stranger")
        #expect(try runProcess(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger]).status == 0)
        var options = try server.options(identity: false)
        options.identityFiles = [stranger]
        let error = expectKDCTError(.authenticationFailed) { _ = try SSHConnection(endpoint: server.endpoint, options: options) }
        let text = error?.description ?? ""
        #expect(text.contains("The server accepts: publickey"), "\(text)")
        #expect(text.contains("identity file \(stranger): key rejected by the server"), "\(text)")
        // Nothing configured at all.
        let bare = try server.options(identity: false)
        let none = expectKDCTError(.authenticationFailed) { _ = try SSHConnection(endpoint: server.endpoint, options: bare) }
        #expect(none?.description.contains("--password-env") == true)
    }

    @Test("an encrypted identity file: passphrase from its source; missing or wrong passphrase explained")
    func encryptedKey() throws {
        let server = try TestSSHServer()
        var options = try server.options(identity: false)
        options.identityFiles = [server.encryptedClientKey]
        let missing = expectKDCTError(.authenticationFailed) { _ = try SSHConnection(endpoint: server.endpoint, options: options) }
        #expect(missing?.description.contains("encrypted and no passphrase") == true, "\(String(describing: missing))")
        options.passphraseSources = [.value("wrong")]
        let wrong = expectKDCTError(.authenticationFailed) { _ = try SSHConnection(endpoint: server.endpoint, options: options) }
        #expect(wrong?.description.contains("wrong passphrase") == true, "\(String(describing: wrong))")
        options.passphraseSources = [.environment("KDCT_TEST_UNSET_VARIABLE"), .value(server.clientKeyPassphrase)]
        let connection = try SSHConnection(endpoint: server.endpoint, options: options)
        #expect(connection.authentication.contains(server.encryptedClientKey))
    }
}
