import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

/// A private OpenSSH server for one test: `/usr/sbin/sshd -D` on 127.0.0.1 and a free port, with its own host key,
/// an authorized client key and a dedicated test user, all generated here. Nothing is mocked.
///
/// The tests run as root (here and in CI): sshd needs root to log a user in, and the password test needs an
/// account with a password. Root's own password is never touched; the tests create the account `kdct-export-test`
/// (useradd) with a random password kept in `.build/` (so concurrent test processes agree on it). That server
/// only accepts this user, only on 127.0.0.1, only while the test runs.
final class TestSSHServer: @unchecked Sendable {
    static let user = "kdct-export-test"

    /// The account's password, or the reason the account could not be set up.
    static let account: Result<String, any Error> = Result {
        guard getuid() == 0 else {
            throw KDCTError(.unsupported, "the export tests must run as root: they create a test user and start sshd")
        }
        if getpwnam(user) == nil {
            let created = try runProcess(["useradd", "-m", "-s", "/bin/sh", user])
            guard created.status == 0 else { throw KDCTError(.io, "useradd failed: \(created.stderr)") }
        }
        let passwordFile = packageRoot.appendingPathComponent(".build/kdct-export-test.password").path
        var password = (try? String(contentsOfFile: passwordFile, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        if password.isEmpty {
            password = "kdct-" + UUID().uuidString
            guard FileManager.default.createFile(atPath: passwordFile, contents: Data(password.utf8),
                                                 attributes: [.posixPermissions: 0o600]) else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: passwordFile])
            }
        }
        let changed = try runProcess(["chpasswd"], stdin: Data("\(user):\(password)\n".utf8))
        guard changed.status == 0 else { throw KDCTError(.io, "chpasswd failed: \(changed.stderr)") }
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        return password
    }

    let directory: TemporaryDirectory
    let port: Int
    /// The server's host key (private) and its `.pub`.
    let hostKey: String
    /// An authorized client key without passphrase.
    let clientKey: String
    /// An authorized client key protected by `clientKeyPassphrase`.
    let encryptedClientKey: String
    let clientKeyPassphrase = "correct horse battery staple"
    /// A directory on the "host" the test user may write to.
    let remoteDirectory: String
    /// The test user's password.
    let password: String
    private let process: SpawnedProcess

    /// Starts a server. `passwordAuthentication` enables passwords; `sftp` false leaves out the SFTP subsystem;
    /// `sftpServerArguments` are given to sftp-server (e.g. `-P posix-rename@openssh.com` to refuse a request);
    /// `extraConfig` is appended to sshd_config.
    init(passwordAuthentication: Bool = false, sftp: Bool = true, sftpServerArguments: String = "",
         extraConfig: String = "") throws {
        password = try Self.account.get()
        directory = try TemporaryDirectory("kdct-sshd")
        chmod(directory.path, 0o755)
        hostKey = directory.file("host_ed25519_key")
        clientKey = directory.file("client_key")
        encryptedClientKey = directory.file("client_key_encrypted")
        for (path, passphrase) in [(hostKey, ""), (clientKey, ""), (encryptedClientKey, clientKeyPassphrase)] {
            let made = try runProcess(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "kdct-test", "-f", path])
            guard made.status == 0 else { throw KDCTError(.io, "ssh-keygen failed: \(made.stderr)") }
        }
        let authorized = try String(contentsOfFile: clientKey + ".pub", encoding: .utf8)
            + String(contentsOfFile: encryptedClientKey + ".pub", encoding: .utf8)
        guard FileManager.default.createFile(atPath: directory.file("authorized_keys"), contents: Data(authorized.utf8),
                                             attributes: [.posixPermissions: 0o644]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: directory.file("authorized_keys")])
        }
        remoteDirectory = directory.file("remote")
        try FileManager.default.createDirectory(atPath: remoteDirectory, withIntermediateDirectories: false)
        let chowned = try runProcess(["chown", Self.user, remoteDirectory])
        guard chowned.status == 0 else { throw KDCTError(.io, "chown failed: \(chowned.stderr)") }

        var lastLog = ""
        for _ in 0..<5 {
            let port = try Self.freePort()
            let config = """
                Port \(port)
                ListenAddress 127.0.0.1
                HostKey \(hostKey)
                PidFile none
                AuthorizedKeysFile \(directory.file("authorized_keys"))
                StrictModes no
                PubkeyAuthentication yes
                PasswordAuthentication \(passwordAuthentication ? "yes" : "no")
                KbdInteractiveAuthentication no
                UsePAM no
                PermitRootLogin no
                AllowUsers \(Self.user)
                MaxAuthTries 10
                LogLevel VERBOSE
                \(sftp ? "Subsystem sftp /usr/lib/openssh/sftp-server \(sftpServerArguments)" : "")
                \(extraConfig)

                """
            let configPath = directory.file("sshd_config")
            try config.write(toFile: configPath, atomically: true, encoding: .utf8)
            let logPath = directory.file("sshd.log")
            let process = try SpawnedProcess(["/usr/sbin/sshd", "-D", "-f", configPath, "-E", logPath])
            if Self.waitForListener(port: port, process: process) {
                self.port = port
                self.process = process
                return
            }
            process.terminate()
            lastLog = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        }
        throw KDCTError(.io, "sshd did not start: \(lastLog)")
    }

    deinit {
        pauseListener(false)
        pauseSessions(false)
        killSessions()
        process.terminate()
    }

    /// The listening sshd's process id.
    var listenerPID: pid_t { process.pid }

    /// The endpoint of the test user on this server.
    var endpoint: SSHEndpoint { SSHEndpoint(user: Self.user, host: "127.0.0.1", port: port) }

    /// `remoteDirectory/name` as a remote location.
    func location(_ name: String) -> RemoteLocation {
        RemoteLocation(endpoint: endpoint, path: remoteDirectory + "/" + name)
    }

    /// The host key's public line (`ssh-ed25519 AAAA... comment`).
    var hostPublicKey: String {
        (try? String(contentsOfFile: hostKey + ".pub", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
    }

    /// `ssh-keygen -l`'s SHA-256 fingerprint of the host key (the oracle for ours).
    func hostKeyFingerprint() throws -> String {
        let listed = try runProcess(["ssh-keygen", "-l", "-E", "sha256", "-f", hostKey + ".pub"])
        return listed.stdout.split(separator: " ").dropFirst().first.map(String.init) ?? ""
    }

    /// Writes a known_hosts file trusting this server (`[127.0.0.1]:port ssh-ed25519 ...`); returns its path.
    func writeKnownHosts(_ name: String = "known_hosts") throws -> String {
        let path = directory.file(name)
        try "[127.0.0.1]:\(port) \(hostPublicKey)\n".write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Options that trust this server and log in with `clientKey` (no agent, no default identities, nothing
    /// from the test runner's own ~/.ssh).
    func options(knownHosts: String? = nil, identity: Bool = true) throws -> SSHConnectionOptions {
        var options = SSHConnectionOptions()
        options.knownHostsFile = try knownHosts ?? writeKnownHosts()
        options.identityFiles = identity ? [clientKey] : []
        options.useDefaultIdentities = false
        options.agent = .disabled
        options.passphraseSources = []
        return options
    }

    /// SIGKILLs every process this sshd started (the per-connection sshd processes and their sftp-servers),
    /// which drops every connection at once; the listener itself keeps running.
    func killSessions() {
        for pid in Self.descendants(of: process.pid) { kill(pid, SIGKILL) }
    }

    /// The process ids below `root`, from /proc/*/stat.
    static func descendants(of root: Int32) -> [Int32] {
        var children: [Int32: [Int32]] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { children[parent, default: []].append(pid) }
        }
        var result: [Int32] = []
        var queue = children[root] ?? []
        while let pid = queue.popLast() {
            result.append(pid)
            queue += children[pid] ?? []
        }
        return result
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw KDCTError.io("socket", errno: errno) }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw KDCTError.io("bind", errno: errno) }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func waitForListener(port: Int, process: SpawnedProcess) -> Bool {
        for _ in 0..<200 {
            guard process.isRunning else { return false }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            close(fd)
            if connected == 0 { return true }
            usleep(50_000)
        }
        return false
    }
}

/// An ssh-agent of our own (`ssh-agent -D -a SOCKET`) holding the given keys.
final class TestSSHAgent: @unchecked Sendable {
    let socketPath: String
    private let process: SpawnedProcess
    private let directory: TemporaryDirectory

    init(keys: [String]) throws {
        directory = try TemporaryDirectory("kdct-agent")
        socketPath = directory.file("agent.sock")
        process = try SpawnedProcess(["/usr/bin/ssh-agent", "-D", "-a", socketPath])
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: socketPath) { usleep(20_000) }
        for key in keys {
            let added = try runProcess(["ssh-add", key], environment: ["SSH_AUTH_SOCK": socketPath])
            guard added.status == 0 else { throw KDCTError(.io, "ssh-add failed: \(added.stderr)") }
        }
    }

    deinit { process.terminate() }
}

/// A long-running helper (sshd, ssh-agent) started with posix_spawn. Foundation's `Process` cannot be used for
/// these: it learns that a child ended when a socket it passed to the child closes, and sshd and ssh-agent close
/// every inherited descriptor at startup, so `Process` would block waiting for them.
final class SpawnedProcess: @unchecked Sendable {
    let pid: pid_t
    private var reaped = false

    /// Starts `arguments[0]` (an absolute path) with stdin, stdout and stderr on /dev/null.
    init(_ arguments: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        pid = try Self.spawn(arguments, actions: &actions, environment: nil)
    }

    /// posix_spawn with nothing blocked and default signal handlers. Test threads block signals, and a spawned
    /// program inherits the mask: ssh-agent would then never see SIGTERM, kdct-native never SIGINT.
    /// `environment` nil keeps this process's.
    static func spawn(_ arguments: [String], actions: inout posix_spawn_file_actions_t,
                      environment: [String: String]?) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigfillset(&defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { $0.map { strdup("\($0.key)=\($0.value)") } + [nil] }
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp ?? [] { free(pointer) }
        }
        var pid: pid_t = 0
        let rc = envp.map { posix_spawn(&pid, arguments[0], &actions, &attributes, argv, $0) }
            ?? posix_spawn(&pid, arguments[0], &actions, &attributes, argv, environ)
        guard rc == 0 else { throw KDCTError.io("posix_spawn \(arguments[0])", errno: rc) }
        return pid
    }

    /// True until the process has exited.
    var isRunning: Bool {
        guard !reaped else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { reaped = true }
        return !reaped
    }

    /// SIGTERM, then waits for it (SIGKILL after five seconds).
    func terminate() {
        guard !reaped else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        for _ in 0..<500 {
            if waitpid(pid, &status, WNOHANG) == pid { reaped = true; return }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        _ = waitpid(pid, &status, 0)
        reaped = true
    }
}

/// SHA-256 of a file, by `sha256sum` (the oracle).
func fileSHA256(_ path: String) throws -> String {
    let result = try runProcess(["sha256sum", path])
    return String(result.stdout.prefix(64))
}

/// Writes `size` bytes of deterministic pseudo-random data to `path`: the AES-128-CTR keystream of a key made
/// from `seed` (openssl, fast even for hundreds of MiB in a debug build).
func writeRandomFile(_ path: String, size: Int, seed: UInt64 = 1) throws {
    let key = String(format: "%032llx", seed &* 0x9E37_79B9_7F4A_7C15)
    let made = try runProcess(["sh", "-c", "head -c \(size) /dev/zero | openssl enc -aes-128-ctr -nosalt -K \(key) -iv 0 > \"$0\"", path])
    guard made.status == 0 else { throw KDCTError(.io, "making random data failed: \(made.stderr)") }
}
