import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

/// Timestamps a @Sendable closure can set.
final class Moment: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Date?
    func mark() { lock.withLock { if value == nil { value = Date() } } }
    var date: Date? { lock.withLock { value } }
}

/// A sparse file of `size` bytes with pseudo-random 1 MiB blocks every 16 MiB (and at the very end): quick to
/// write and to upload (holes are not sent), yet every chunk has data, and hashing it reads all `size` bytes.
func writeSparseFile(_ path: String, size: UInt64, seed: UInt64 = 3) throws {
    try Data().write(to: URL(fileURLWithPath: path))
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.truncate(atOffset: size)
    var state = seed | 1
    var offsets = Array(stride(from: UInt64(0), to: size, by: 16 << 20))
    if size >= 1 << 20 { offsets.append(size - (1 << 20)) }
    for offset in offsets {
        var block = [UInt8](repeating: 0, count: Int(min(1 << 20, size - offset)))
        for index in block.indices {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            block[index] = UInt8(truncatingIfNeeded: state)
        }
        try handle.seek(toOffset: offset)
        handle.write(Data(block))
    }
}

/// A directory of tools for `SetEnv PATH=...`: `dd`, `tail`, `head`, `sha256sum` as they are, and an `openssl`
/// that waits `delay` seconds before each run, so the host's hashing (one run per 64 MiB chunk) lasts long
/// enough to be interrupted or stalled in.
func slowHashingTools(delay: Double) throws -> TemporaryDirectory {
    let tools = try TemporaryDirectory("kdct-slow-tools")
    chmod(tools.path, 0o755)
    for tool in ["dd", "tail", "head", "sha256sum", "sleep"] {
        try FileManager.default.createSymbolicLink(atPath: tools.file(tool), withDestinationPath: "/usr/bin/" + tool)
    }
    try "#!/bin/sh\n/usr/bin/sleep \(delay)\nexec /usr/bin/openssl \"$@\"\n".write(toFile: tools.file("openssl"), atomically: true, encoding: .utf8)
    chmod(tools.file("openssl"), 0o755)
    return tools
}

/// The CLI pointed at a test server: its arguments for `export` to `name` and an environment free of the
/// runner's own ~/.ssh and agent.
struct CLISetup {
    let work: TemporaryDirectory
    let environment: [String: String]
    let exportArguments: [String]
    let destination: String

    init(_ server: TestSSHServer, work: TemporaryDirectory, name: String = "disk.raw") throws {
        self.work = work
        environment = ["HOME": work.path, "SSH_AUTH_SOCK": "", "KDCT_SSH_PASSPHRASE": ""]
        exportArguments = ["export", "-P", "\(server.port)", "-i", server.clientKey, "--known-hosts", try server.writeKnownHosts()]
        destination = "\(TestSSHServer.user)@127.0.0.1:\(server.remoteDirectory)/\(name)"
    }
}

@Suite("Liveness: a stalled host times out, a signal stops every phase within 2 s")
struct LivenessTests {
    @Test("a stalled host (its sshd stopped mid-upload) ends the export within the timeout with a clear message; --resume then finishes")
    func stalledUpload() throws {
        let server = try TestSSHServer()
        defer { server.pauseSessions(false) }
        let work = try TemporaryDirectory("kdct-stall")
        let source = work.file("disk.raw")
        let size = 96 << 20
        try writeRandomFile(source, size: size, seed: 41)
        let stopped = Moment()
        let once = OnceFlag()
        let failure = expectKDCTError(.io) {
            try export(source, to: server, as: "disk.raw") { options in
                options.connection.timeout = 2
                options.streams = 1
                options.progress = { progress in
                    if progress.phase == .uploading && progress.processedBytes >= UInt64(size) / 4 && once.fire() {
                        server.pauseSessions(true)
                        stopped.mark()
                    }
                }
            }
        }
        let waited = Date().timeIntervalSince(try #require(stopped.date))
        #expect(waited < 2 + 2.5, "gave up \(waited) s after the host stopped (timeout 2 s)")
        #expect(waited >= 1.5, "gave up after \(waited) s, before the timeout")
        let text = failure?.description ?? ""
        #expect(text.contains("no sign of progress for 2 s") && text.contains("--timeout"), "\(text)")
        #expect(text.contains("--resume"), "\(text)")
        let remote = server.remoteDirectory + "/disk.raw"
        #expect(!FileManager.default.fileExists(atPath: remote))
        server.pauseSessions(false)
        server.killSessions()
        let resumed = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect((resumed.resumedBytes ?? 0) > 0)
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("a host that stops answering while it hashes the file (keepalives unanswered) times out; one that only connects, too")
    func stalledVerificationAndConnect() throws {
        let tools = try slowHashingTools(delay: 1)
        let server = try TestSSHServer(extraConfig: "SetEnv PATH=\(tools.path)")
        defer {
            server.pauseSessions(false)
            server.pauseListener(false)
        }
        let work = try TemporaryDirectory("kdct-stall")
        let source = work.file("disk.raw")
        try writeSparseFile(source, size: 192 << 20)
        let stopped = Moment()
        let once = OnceFlag()
        let failure = expectKDCTError(.io) {
            try export(source, to: server, as: "disk.raw") { options in
                options.connection.timeout = 2
                options.progress = { progress in
                    if progress.phase == .verifying && once.fire() {
                        server.pauseSessions(true)
                        stopped.mark()
                    }
                }
            }
        }
        // A long operation is given 3 keepalive intervals (2 s each) of silence.
        let waited = Date().timeIntervalSince(try #require(stopped.date))
        #expect(waited < 6 + 2.5, "gave up \(waited) s after the host stopped")
        #expect(failure?.description.contains("no sign of progress") == true, "\(failure?.description ?? "")")
        #expect(!FileManager.default.fileExists(atPath: server.remoteDirectory + "/disk.raw"))
        server.pauseSessions(false)
        server.killSessions()

        // A listener that accepts but never says hello.
        server.pauseListener(true)
        let started = Date()
        var options = ExportOptions()
        options.connection = try server.options()
        options.connection.timeout = 1
        let hung = expectKDCTError(.io) {
            _ = try DiskExporter.export(localPath: source, to: server.location("other.raw"), options: options)
        }
        #expect(Date().timeIntervalSince(started) < 1 + 2)
        #expect(hung?.description.contains("SSH handshake") == true, "\(hung?.description ?? "")")
    }

    /// Runs the CLI, sends SIGINT once `trigger` accepts a progress line, and checks it exits with `status`
    /// within 2 s of the signal. Returns the child (for its output).
    @discardableResult
    func interrupt(_ arguments: [String], environment: [String: String], work: TemporaryDirectory,
                   signal: Int32 = SIGINT, status: Int32 = 130, sourceLocation: SourceLocation = #_sourceLocation,
                   when trigger: (String) -> Bool) throws -> CLIChild {
        let child = try CLIChild(arguments + ["--progress", "json"], environment: environment, directory: work)
        let line = child.waitForLine(timeout: 60, trigger)
        #expect(line != nil, "the trigger line never came: \(child.lines.suffix(3)) \(child.errorOutput)",
                sourceLocation: sourceLocation)
        let sent = Date()
        child.send(signal)
        let code = child.wait(timeout: 10)
        let took = Date().timeIntervalSince(sent)
        #expect(code == status, "exit status \(String(describing: code)); stderr: \(child.errorOutput)", sourceLocation: sourceLocation)
        #expect(took < 2, "took \(took) s to stop after the signal", sourceLocation: sourceLocation)
        let last = child.lines.last ?? ""
        #expect(last.contains("\"event\":\"failed\"") && last.contains("\"exit-status\":\(status)")
                && last.contains("\"code\":\"cancelled\""), "\(last)", sourceLocation: sourceLocation)
        return child
    }

    @Test("export: SIGINT while connecting, checking, uploading and verifying (host hashing and read-back) exits 130 within 2 s, nothing under the final name; SIGTERM exits 143")
    func signalsInEveryExportPhase() throws {
        let tools = try slowHashingTools(delay: 1)
        let server = try TestSSHServer(extraConfig: "SetEnv PATH=\(tools.path)")
        defer { server.pauseListener(false) }
        let work = try TemporaryDirectory("kdct-sigint")
        let source = work.file("disk.raw")
        try writeSparseFile(source, size: 192 << 20)
        let setup = try CLISetup(server, work: work)
        let (environment, destination, base) = (setup.environment, setup.destination, setup.exportArguments)
        let remote = server.remoteDirectory + "/disk.raw"
        let partial = DiskExporter.temporaryPath(for: remote)

        // Connecting: the listener accepts but never answers.
        server.pauseListener(true)
        try interrupt(base + [source, destination], environment: environment, work: work) { phase(of: $0) == "connecting" }
        server.pauseListener(false)

        // Uploading: the partial upload stays for --resume.
        try interrupt(base + ["--streams", "1", source, destination], environment: environment, work: work) {
            phase(of: $0) == "uploading" && (number("processed", in: $0) ?? 0) > 0
        }
        #expect(!FileManager.default.fileExists(atPath: remote))
        #expect(FileManager.default.fileExists(atPath: partial))

        // Checking (resume compares the partial upload with the host's slow hashing).
        try interrupt(base + ["--resume", source, destination], environment: environment, work: work) { phase(of: $0) == "checking" }
        #expect(!FileManager.default.fileExists(atPath: remote))

        // Verifying (the host hashing): never committed; the complete upload is kept, so --resume only checks
        // and places it.
        try interrupt(base + ["--resume", source, destination], environment: environment, work: work) { phase(of: $0) == "verifying" }
        #expect(!FileManager.default.fileExists(atPath: remote))
        let finish = try CLI.run(base + ["--resume", "--progress", "json", source, destination], environment: environment)
        #expect(finish.status == 0, "\(finish.stderr)")
        let done = finish.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(number("sent", in: done) == 0 && number("resumed", in: done) == Double(192 << 20), "\(done)")
        #expect(try fileSHA256(remote) == fileSHA256(source))

        // SIGTERM: 143.
        try interrupt(base + ["--force", source, destination], environment: environment, work: work, signal: SIGTERM,
                      status: 143) { phase(of: $0) == "verifying" }
        #expect(try fileSHA256(remote) == fileSHA256(source), "the old file is untouched")
    }

    @Test("export to an SFTP-only account: SIGINT during the read-back verification exits 130 within 2 s and commits nothing")
    func signalDuringReadBack() throws {
        let server = try TestSSHServer(extraConfig: "ForceCommand internal-sftp")
        let work = try TemporaryDirectory("kdct-sigint")
        let source = work.file("disk.raw")
        try writeSparseFile(source, size: 1 << 30)
        let setup = try CLISetup(server, work: work)
        try interrupt(setup.exportArguments + [source, setup.destination], environment: setup.environment, work: work) {
            phase(of: $0) == "verifying" && (number("processed", in: $0) ?? 0) > 0
        }
        #expect(!FileManager.default.fileExists(atPath: server.remoteDirectory + "/disk.raw"))
    }

    @Test("convert to sftp://: SIGINT while converting and while verifying exits 130 within 2 s and leaves no file at all on the host")
    func signalsDuringRemoteConvert() throws {
        let tools = try slowHashingTools(delay: 1)
        let server = try TestSSHServer(extraConfig: "SetEnv PATH=\(tools.path)")
        let work = try TemporaryDirectory("kdct-sigint")
        let raw = work.file("pattern.raw")
        try writeSparseFile(raw, size: 512 << 20)
        let source = work.file("source.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, source)
        let knownHosts = try server.writeKnownHosts()
        let environment = ["HOME": work.path, "SSH_AUTH_SOCK": "", "KDCT_SSH_PASSPHRASE": ""]
        let url = "sftp://\(TestSSHServer.user)@127.0.0.1:\(server.port)\(server.remoteDirectory)/converted.raw"
        let base = ["convert", "-O", "raw", source, url, "-i", server.clientKey, "--known-hosts", knownHosts]
        try interrupt(base, environment: environment, work: work) {
            phase(of: $0) == "uploading" && (number("sent", in: $0) ?? 0) > 0
        }
        #expect(server.remoteFiles().isEmpty, "\(server.remoteFiles())")
        try interrupt(base, environment: environment, work: work) { phase(of: $0) == "verifying" }
        #expect(server.remoteFiles().isEmpty, "\(server.remoteFiles())")
    }

    @Test("CLI --timeout: a host that accepts the connection but never answers is given up after that many seconds")
    func cliTimeout() throws {
        let server = try TestSSHServer()
        defer { server.pauseListener(false) }
        server.pauseListener(true)
        let work = try TemporaryDirectory("kdct-timeout")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 4096)
        let setup = try CLISetup(server, work: work)
        let started = Date()
        let result = try CLI.run(setup.exportArguments + ["--timeout", "1", "--progress", "json", source, setup.destination],
                                 environment: setup.environment)
        let took = Date().timeIntervalSince(started)
        #expect(result.status == 1)
        #expect(result.stderr.contains("no sign of progress for 1 s (--timeout)"), "\(result.stderr)")
        #expect(took < 4, "took \(took) s")
        let last = result.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.contains("\"event\":\"failed\"") && last.contains("\"exit-status\":1") && last.contains("\"code\":\"io\""), "\(last)")
    }

    @Test("an unset --password-env variable is reported before connecting")
    func unsetPasswordVariable() throws {
        let server = try TestSSHServer(passwordAuthentication: true)
        defer { server.pauseListener(false) }
        server.pauseListener(true)
        let work = try TemporaryDirectory("kdct-password")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 4096)
        let started = Date()
        let result = try CLI.run(["export", "-P", "\(server.port)", "--known-hosts", try server.writeKnownHosts(),
                                  "--password-env", "KDCT_NO_SUCH_VARIABLE", source,
                                  "\(TestSSHServer.user)@127.0.0.1:\(server.remoteDirectory)/"],
                                 environment: ["HOME": work.path, "SSH_AUTH_SOCK": ""])
        #expect(result.status == 1)
        #expect(result.stderr.contains("KDCT_NO_SUCH_VARIABLE is not set"), "\(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 5, "it waited for the (stopped) host")
    }
}
