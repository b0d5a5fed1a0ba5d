import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

/// A flag a @Sendable progress closure can set once.
final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var fired = false
    /// True the first time only.
    func fire() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if fired { return false }
        fired = true
        return true
    }
}

/// Exports `source` to `name` in the server's writable directory with `configure` applied to the options.
@discardableResult
func export(_ source: String, to server: TestSSHServer, as name: String,
            configure: (inout ExportOptions) throws -> Void = { _ in }) throws -> ExportResult {
    var options = ExportOptions()
    options.connection = try server.options()
    try configure(&options)
    return try DiskExporter.export(localPath: source, to: server.location(name), options: options)
}

@Suite("Export transfers against a real sshd")
struct ExportTransferTests {
    @Test("upload by identity file; the arrived file's SHA-256 equals the local one")
    func uploadByKey() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 5 << 20 + 12345)
        let result = try export(source, to: server, as: "disk.raw")
        let arrived = server.remoteDirectory + "/disk.raw"
        #expect(try fileSHA256(arrived) == fileSHA256(source))
        #expect(result.sha256 == (try fileSHA256(source)))
        #expect(result.verification == .remoteCommand)
        #expect(result.flushed)
        #expect(result.sentBytes == 5 << 20 + 12345)
        #expect(result.authentication.contains("identity file"))
        #expect(!FileManager.default.fileExists(atPath: DiskExporter.temporaryPath(for: arrived)))
    }

    @Test("a directory destination keeps the local name; read-back verification works too")
    func directoryDestinationAndReadBack() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("vm-disk.qcow2")
        try writeRandomFile(source, size: 3 << 20, seed: 7)
        var options = ExportOptions()
        options.connection = try server.options()
        options.verification = .readBack
        let result = try DiskExporter.export(localPath: source,
                                             to: RemoteLocation(endpoint: server.endpoint, path: server.remoteDirectory),
                                             options: options)
        #expect(result.destination.path == server.remoteDirectory + "/vm-disk.qcow2")
        #expect(result.verification == .readBack)
        #expect(try fileSHA256(server.remoteDirectory + "/vm-disk.qcow2") == fileSHA256(source))
    }

    @Test("an SFTP-only account (ForceCommand internal-sftp) runs no sha256sum: verified by reading back, resume too")
    func sftpOnlyAccount() throws {
        let server = try TestSSHServer(extraConfig: "ForceCommand internal-sftp")
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 4 << 20, seed: 17)
        let remote = server.remoteDirectory + "/disk.raw"
        let local = try Data(contentsOf: URL(fileURLWithPath: source))
        try writePartial(local.prefix(1 << 20), to: DiskExporter.temporaryPath(for: remote))
        let result = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect(result.resumedBytes == 1 << 20)
        #expect(result.verification == .readBack)
        #expect(result.notes.contains { $0.contains("read the file back") }, "\(result.notes)")
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("an existing destination is refused without --force and replaced with it")
    func existingDestination() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 1 << 20, seed: 3)
        let remote = server.remoteDirectory + "/disk.raw"
        try "precious".write(toFile: remote, atomically: true, encoding: .utf8)
        let error = expectKDCTError(.alreadyExists) { try export(source, to: server, as: "disk.raw") }
        #expect(error?.description.contains("--force") == true)
        #expect(try String(contentsOfFile: remote, encoding: .utf8) == "precious")
        #expect(!FileManager.default.fileExists(atPath: DiskExporter.temporaryPath(for: remote)))
        try export(source, to: server, as: "disk.raw") { $0.overwrite = true }
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("connection killed mid-transfer: nothing under the destination name; --resume completes and verifies")
    func killedThenResumed() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        let size = 48 << 20
        try writeRandomFile(source, size: size, seed: 11)
        let remote = server.remoteDirectory + "/disk.raw"
        let partial = DiskExporter.temporaryPath(for: remote)
        let once = OnceFlag()
        let failure = expectKDCTError(.io) {
            try export(source, to: server, as: "disk.raw") { options in
                options.progress = { progress in
                    if progress.phase == .uploading && progress.processedBytes >= UInt64(size) * 2 / 5 && once.fire() {
                        server.killSessions()
                    }
                }
            }
        }
        #expect(failure?.description.contains("--resume") == true)
        #expect(!FileManager.default.fileExists(atPath: remote))
        let kept = try FileManager.default.attributesOfItem(atPath: partial)[.size] as? UInt64 ?? 0
        #expect(kept > 0 && kept < UInt64(size), "the partial upload holds \(kept) bytes")

        let result = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect(result.resumedBytes == kept)
        #expect(!result.restartedPartialUpload)
        #expect(result.sentBytes == UInt64(size) - kept)
        #expect(result.verification == .remoteCommand)
        #expect(try fileSHA256(remote) == fileSHA256(source))
        #expect(!FileManager.default.fileExists(atPath: partial))
    }

    @Test("a partial upload that matches the local prefix is continued; one that differs is restarted, not appended to")
    func resumeChecksThePrefix() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        let size = 6 << 20
        try writeRandomFile(source, size: size, seed: 5)
        let remote = server.remoteDirectory + "/disk.raw"
        let partial = DiskExporter.temporaryPath(for: remote)
        let local = try Data(contentsOf: URL(fileURLWithPath: source))

        // The first 2.5 MiB, as an interrupted upload would have left them.
        let prefix = 5 << 19
        try writePartial(local.prefix(prefix), to: partial)
        let continued = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect(continued.resumedBytes == UInt64(prefix))
        #expect(continued.sentBytes == UInt64(size - prefix))
        #expect(try fileSHA256(remote) == fileSHA256(source))

        // Same length, one byte different: must start over.
        try FileManager.default.removeItem(atPath: remote)
        var corrupted = local.prefix(prefix)
        corrupted[corrupted.startIndex + 1_000_000] ^= 0xff
        try writePartial(corrupted, to: partial)
        let restarted = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect(restarted.restartedPartialUpload)
        #expect(restarted.resumedBytes == nil)
        #expect(restarted.sentBytes == UInt64(size))
        #expect(try fileSHA256(remote) == fileSHA256(source))

        // Longer than the local file: restarted too.
        try FileManager.default.removeItem(atPath: remote)
        try writePartial(local + Data(count: 4096), to: partial)
        let longer = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect(longer.restartedPartialUpload)
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("a partial upload without --resume is refused (it names --resume); --force starts over")
    func partialWithoutResume() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 2 << 20, seed: 9)
        let remote = server.remoteDirectory + "/disk.raw"
        try writePartial(Data(repeating: 1, count: 1000), to: DiskExporter.temporaryPath(for: remote))
        let error = expectKDCTError(.alreadyExists) { try export(source, to: server, as: "disk.raw") }
        #expect(error?.description.contains("--resume") == true)
        #expect(!FileManager.default.fileExists(atPath: remote))
        try export(source, to: server, as: "disk.raw") { $0.overwrite = true }
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("cancelling during the upload keeps the partial upload for --resume")
    func cancelKeepsPartial() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 16 << 20, seed: 13)
        let remote = server.remoteDirectory + "/disk.raw"
        let token = CancellationToken()
        expectKDCTError(.cancelled) {
            try export(source, to: server, as: "disk.raw") { options in
                options.connection.cancellation = token
                options.progress = { if $0.phase == .uploading && $0.processedBytes > 0 { token.cancel() } }
            }
        }
        #expect(!FileManager.default.fileExists(atPath: remote))
        #expect(FileManager.default.fileExists(atPath: DiskExporter.temporaryPath(for: remote)))
        let result = try export(source, to: server, as: "disk.raw") { $0.resume = true }
        #expect((result.resumedBytes ?? 0) > 0)
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("the server renews the session keys every 4 MiB (RekeyLimit): non-blocking transfers on several streams go through the key exchanges")
    func rekeying() throws {
        let server = try TestSSHServer(extraConfig: "RekeyLimit 4M")
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 150 << 20, seed: 71)
        let result = try export(source, to: server, as: "disk.raw") { $0.streams = 3 }
        #expect(result.streams == 3)
        #expect(try fileSHA256(server.remoteDirectory + "/disk.raw") == fileSHA256(source))
    }

    @Test("a sparse raw image exports only its data and the remote file is sparse")
    func sparseRaw() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("sparse.raw")
        let size: UInt64 = 64 << 20
        try TestPattern.writeRaw(to: source, size: size)
        let result = try export(source, to: server, as: "sparse.raw")
        let remote = server.remoteDirectory + "/sparse.raw"
        #expect(try fileSHA256(remote) == fileSHA256(source))
        #expect(result.size == size)
        // The pattern holds about 0.7 MiB of data in 64 MiB; runs closer than 1 MiB are sent with the zeros between.
        #expect(result.sentBytes < 4 << 20, "sent \(result.sentBytes) bytes of a 64 MiB image")
        #expect(result.skippedZeroBytes > 60 << 20)
        var st = stat()
        #expect(stat(remote, &st) == 0)
        #expect(UInt64(st.st_size) == size)
        #expect(UInt64(st.st_blocks) * 512 < 8 << 20, "remote file allocates \(st.st_blocks * 512) bytes")
    }

    @Test("scp protocol: temporary name, sha256sum, rename; an existing destination is refused")
    func scpProtocol() throws {
        let server = try TestSSHServer(sftp: false)
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try TestPattern.writeRaw(to: source, size: 12 << 20)
        // Without an SFTP subsystem, SFTP fails and says to use scp.
        let refused = expectKDCTError(.io) { try export(source, to: server, as: "disk.raw") }
        #expect(refused?.description.contains("--protocol scp") == true)

        let result = try export(source, to: server, as: "disk.raw") { $0.transferProtocol = .scp }
        let remote = server.remoteDirectory + "/disk.raw"
        #expect(try fileSHA256(remote) == fileSHA256(source))
        #expect(result.sha256 == (try fileSHA256(source)))
        #expect(result.verification == .remoteCommand)
        #expect(result.sentBytes == 12 << 20)
        #expect(!FileManager.default.fileExists(atPath: DiskExporter.temporaryPath(for: remote)))
        expectKDCTError(.alreadyExists) { try export(source, to: server, as: "disk.raw") { $0.transferProtocol = .scp } }
        expectKDCTError(.unsupported) {
            try export(source, to: server, as: "other.raw") { $0.transferProtocol = .scp; $0.resume = true }
        }
        try export(source, to: server, as: "disk.raw") { $0.transferProtocol = .scp; $0.overwrite = true }
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("flush false (-t unsafe) skips the host's fsync: not flushed, and no note about a server without fsync@openssh.com (which one flushing export gets)")
    func unsafeSkipsTheFlush() throws {
        let work = try TemporaryDirectory("kdct-export")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 3 << 20, seed: 61)
        let server = try TestSSHServer()
        #expect(try export(source, to: server, as: "flushed.raw").flushed)
        let unflushed = try export(source, to: server, as: "unsafe.raw") { $0.flush = false }
        #expect(!unflushed.flushed)
        #expect(try fileSHA256(server.remoteDirectory + "/unsafe.raw") == fileSHA256(source))

        // sftp-server -P fsync does not offer the extension: a flushing export says so, an unsafe one has nothing to say.
        let withoutFsync = try TestSSHServer(sftpServerArguments: "-P fsync")
        let noted = try export(source, to: withoutFsync, as: "flushed.raw")
        #expect(!noted.flushed && noted.notes.contains { $0.contains("fsync@openssh.com") }, "\(noted.notes)")
        let quiet = try export(source, to: withoutFsync, as: "unsafe.raw") { $0.flush = false }
        #expect(!quiet.notes.contains { $0.contains("fsync") }, "\(quiet.notes)")
        #expect(try fileSHA256(withoutFsync.remoteDirectory + "/unsafe.raw") == fileSHA256(source))
    }
}

/// Writes `data` as a partial upload owned by the test user (as the interrupted exporter would have).
func writePartial(_ data: Data, to path: String) throws {
    try data.write(to: URL(fileURLWithPath: path))
    let chowned = try runProcess(["chown", TestSSHServer.user, path])
    #expect(chowned.status == 0)
}
