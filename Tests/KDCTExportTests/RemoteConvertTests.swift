import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

@Suite("Direct conversion to the host (SFTPFileTarget) and the CLI")
struct RemoteConvertTests {
    /// A QCOW2 source made by qemu-img from the test pattern, in `work`.
    func makeSource(in work: TemporaryDirectory, size: UInt64 = 24 << 20) throws -> String {
        let raw = try TestPattern.writeRaw(to: work.file("pattern.raw"), size: size)
        let source = work.file("source.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, source)
        return source
    }

    @Test("DiskConverter + SFTPFileTarget: a remote QCOW2 qemu-img finds identical to the source and clean")
    func qcow2ToHost() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-convert")
        let source = try makeSource(in: work)
        let location = server.location("converted.qcow2")
        let target = try SFTPFileTarget(location: location, connectionOptions: try server.options(), overwrite: false)
        #expect(target.temporaryPath.hasPrefix(server.remoteDirectory + "/.converted.qcow2.kdct-"))
        var options = ConvertOptions(outputFormat: .qcow2)
        options.pipeline.workers = 2
        try DiskConverter.convert(try ImageOpener.open(source), to: target, options: options)
        try expectQemuIdentical(source, location.path, formatA: "qcow2", formatB: "qcow2")
        try expectQemuCheckClean(location.path)
        let report = try #require(target.report)
        #expect(report.verification == .remoteCommand)
        #expect(report.flushed)
        // The header cluster, written last, is verified as its own range.
        #expect(report.digests.count == 2)
        #expect(report.digests.first?.length == 65536)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: server.remoteDirectory)
        #expect(leftovers == ["converted.qcow2"])
    }

    @Test("a host without openssl verifies with sha256sum (the QCOW2 header range cut with tail and head)")
    func sha256sumOnly() throws {
        // The session's PATH holds only sha256sum, tail and head, so `command -v openssl` fails on the "host".
        let tools = try TemporaryDirectory("kdct-tools")
        chmod(tools.path, 0o755)
        for tool in ["sha256sum", "tail", "head"] {
            try FileManager.default.createSymbolicLink(atPath: tools.file(tool), withDestinationPath: "/usr/bin/" + tool)
        }
        let server = try TestSSHServer(extraConfig: "SetEnv PATH=\(tools.path)")
        let probe = try SSHConnection(endpoint: server.endpoint, options: try server.options())
        let which = try probe.run("command -v openssl || echo none; command -v sha256sum")
        #expect(String(decoding: which.output, as: UTF8.self) == "none\n\(tools.path)/sha256sum\n")
        probe.disconnect()
        let work = try TemporaryDirectory("kdct-convert")
        let source = try makeSource(in: work)
        let location = server.location("converted.qcow2")
        let target = try SFTPFileTarget(location: location, connectionOptions: try server.options(), overwrite: false)
        try DiskConverter.convert(try ImageOpener.open(source), to: target, options: ConvertOptions(outputFormat: .qcow2))
        #expect(target.report?.verification == .remoteCommand)
        #expect(target.report?.digests.count == 2)
        try expectQemuIdentical(source, location.path, formatA: "qcow2", formatB: "qcow2")
    }

    @Test("RAW to the host, verified by reading back; holes stay holes")
    func rawToHostReadBack() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-convert")
        let source = try makeSource(in: work, size: 48 << 20)
        let location = server.location("converted.raw")
        let target = try SFTPFileTarget(location: location, connectionOptions: try server.options(), overwrite: false,
                                        verification: .readBack)
        try DiskConverter.convert(try ImageOpener.open(source), to: target, options: ConvertOptions(outputFormat: .raw))
        try expectQemuIdentical(source, location.path, formatA: "qcow2", formatB: "raw")
        #expect(target.report?.verification == .readBack)
        var st = stat()
        #expect(stat(location.path, &st) == 0)
        #expect(UInt64(st.st_size) == 48 << 20)
        #expect(UInt64(st.st_blocks) * 512 < 8 << 20)
    }

    @Test("an existing remote destination is refused and left alone; a failed conversion leaves no temporary file")
    func existingAndFailure() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-convert")
        let source = try makeSource(in: work)
        let location = server.location("taken.qcow2")
        try "precious".write(toFile: location.path, atomically: true, encoding: .utf8)
        expectKDCTError(.alreadyExists) {
            _ = try SFTPFileTarget(location: location, connectionOptions: try server.options(), overwrite: false)
        }
        #expect(try String(contentsOfFile: location.path, encoding: .utf8) == "precious")
        // Preallocation cannot be done remotely: the conversion fails and removes its temporary file.
        let target = try SFTPFileTarget(location: server.location("prealloc.raw"), connectionOptions: try server.options(),
                                        overwrite: false)
        var options = ConvertOptions(outputFormat: .raw)
        options.rawPreallocation = .falloc
        expectKDCTError(.unsupported) { try DiskConverter.convert(try ImageOpener.open(source), to: target, options: options) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: server.remoteDirectory) == ["taken.qcow2"])
    }

    @Test("CLI: convert SRC sftp://USER@HOST:PORT/path writes a remote QCOW2 identical to the source")
    func cliConvert() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-convert")
        let source = try makeSource(in: work)
        let knownHosts = try server.writeKnownHosts()
        let remote = server.remoteDirectory + "/cli.qcow2"
        let url = "sftp://\(TestSSHServer.user)@127.0.0.1:\(server.port)\(remote)"
        let result = try CLI.run(["convert", "-O", "qcow2", source, url, "-i", server.clientKey, "--known-hosts", knownHosts],
                                 environment: isolatedEnvironment(work))
        #expect(result.status == 0, "\(result.stderr)")
        try expectQemuIdentical(source, remote, formatA: "qcow2", formatB: "qcow2")
        try expectQemuCheckClean(remote)
        // A second run refuses the existing destination.
        let again = try CLI.run(["convert", "-O", "qcow2", source, url, "-i", server.clientKey, "--known-hosts", knownHosts],
                                environment: isolatedEnvironment(work))
        #expect(again.status == 1)
        #expect(again.stderr.contains("already exists"), "\(again.stderr)")
    }

    @Test("CLI: -t unsafe skips the host's fsync for convert to sftp:// and for export (no note about a server without fsync@openssh.com, which a flushing run prints)")
    func cliUnsafeCacheMode() throws {
        let server = try TestSSHServer(sftpServerArguments: "-P fsync")
        let work = try TemporaryDirectory("kdct-convert")
        let source = try makeSource(in: work, size: 8 << 20)
        let knownHosts = try server.writeKnownHosts()
        let ssh = ["-i", server.clientKey, "--known-hosts", knownHosts]
        let url = { (name: String) in "sftp://\(TestSSHServer.user)@127.0.0.1:\(server.port)\(server.remoteDirectory)/\(name)" }
        let destination = { (name: String) in "\(TestSSHServer.user)@127.0.0.1:\(server.remoteDirectory)/\(name)" }
        let runs: [(name: String, arguments: [String], unsafe: Bool)] = [
            ("flushed.qcow2", ["convert", "-O", "qcow2", source, url("flushed.qcow2")], false),
            ("unsafe.qcow2", ["convert", "-t", "unsafe", "-O", "qcow2", source, url("unsafe.qcow2")], true),
            ("exported.qcow2", ["export", "-P", "\(server.port)", source, destination("exported.qcow2")], false),
            ("exported-unsafe.qcow2", ["export", "-P", "\(server.port)", "-t", "unsafe", source, destination("exported-unsafe.qcow2")], true),
        ]
        for run in runs {
            let result = try CLI.run(run.arguments + ssh, environment: isolatedEnvironment(work))
            #expect(result.status == 0, "\(run.arguments): \(result.stderr)")
            let output = result.stdout + result.stderr
            #expect(output.contains("fsync@openssh.com") != run.unsafe, "\(run.arguments): \(output)")
            try expectQemuIdentical(source, server.remoteDirectory + "/" + run.name, formatA: "qcow2", formatB: "qcow2")
            try expectQemuCheckClean(server.remoteDirectory + "/" + run.name)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: server.remoteDirectory).sorted()
        #expect(left == runs.map(\.name).sorted(), "\(left)")
    }

    @Test("CLI: export by --password-env and --password-stdin, JSON progress, unknown host refused with its fingerprint")
    func cliExport() throws {
        let server = try TestSSHServer(passwordAuthentication: true)
        let work = try TemporaryDirectory("kdct-export-cli")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 6 << 20, seed: 31)
        let destination = "\(TestSSHServer.user)@127.0.0.1:\(server.remoteDirectory)/"
        let knownHosts = work.file("known_hosts")
        var environment = isolatedEnvironment(work)

        // Unknown host: refused, fingerprint on stderr, nothing uploaded.
        let unknown = try CLI.run(["export", "-P", "\(server.port)", "--known-hosts", knownHosts, source, destination],
                                  environment: environment)
        #expect(unknown.status == 1)
        #expect(unknown.stderr.contains(try server.hostKeyFingerprint()), "\(unknown.stderr)")
        #expect(unknown.stderr.contains("host key refused"))

        // Accept it, password from an environment variable, JSON progress.
        environment["KDCT_TEST_PASSWORD"] = server.password
        let first = try CLI.run(["export", "-P", "\(server.port)", "--known-hosts", knownHosts, "--accept-new-host-key",
                                 "--password-env", "KDCT_TEST_PASSWORD", "--progress", "json", source, destination],
                                environment: environment)
        #expect(first.status == 0, "\(first.stderr)")
        let lines = first.stdout.split(separator: "\n")
        #expect(lines.contains { $0.contains("\"phase\":\"uploading\"") }, "\(first.stdout)")
        let last = try #require(lines.last)
        let sha = try fileSHA256(source)
        #expect(last.contains("\"event\":\"done\"") && last.contains(sha), "\(last)")
        #expect(try fileSHA256(server.remoteDirectory + "/disk.raw") == sha)

        // Password on stdin; --force replaces; the summary names the digest.
        let second = try CLI.run(["export", "-P", "\(server.port)", "--known-hosts", knownHosts, "--password-stdin", "--force",
                                  source, destination], stdin: Data((server.password + "\n").utf8), environment: environment)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("SHA-256 \(sha) verified"), "\(second.stdout)")

        // A wrong password: exit 1, the offered and tried methods named.
        let wrong = try CLI.run(["export", "-P", "\(server.port)", "--known-hosts", knownHosts, "--password-stdin", "--force",
                                 source, destination], stdin: Data("nope\n".utf8), environment: environment)
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("authentication failed") && wrong.stderr.contains("password"), "\(wrong.stderr)")
    }

    /// HOME in the test's directory and no agent, so the runner's own ~/.ssh and ssh-agent play no part.
    func isolatedEnvironment(_ work: TemporaryDirectory) -> [String: String] {
        ["HOME": work.path, "SSH_AUTH_SOCK": "", "KDCT_SSH_PASSPHRASE": ""]
    }
}
