import Foundation
import KDCTExport
import KDCTFormats
import KDCTTestSupport
import Testing

/// Polls a path with lstat(2) from its own thread until stopped, counting the polls that found nothing.
final class PathWatcher: @unchecked Sendable {
    private let path: String
    private let lock = NSLock()
    private var running = true
    private var polls = 0
    private var missing = 0
    private var inodes: Set<UInt64> = []
    private let thread: Thread

    init(_ path: String) {
        self.path = path
        let box = WatchBox()
        thread = Thread { box.watcher?.run() }
        box.watcher = self
        thread.start()
    }

    private func run() {
        while lock.withLock({ running }) {
            var st = stat()
            let found = lstat(path, &st) == 0
            lock.withLock {
                polls += 1
                if found { inodes.insert(UInt64(st.st_ino)) } else { missing += 1 }
            }
        }
    }

    /// Stops; returns (polls, polls that found no file, distinct inodes seen).
    func stop() -> (polls: Int, missing: Int, inodes: Int) {
        lock.withLock { running = false }
        while !thread.isFinished { usleep(1000) }
        return lock.withLock { (polls, missing, inodes.count) }
    }
}

private final class WatchBox: @unchecked Sendable {
    weak var watcher: PathWatcher?
}

/// Progress reports collected from any thread.
final class ProgressLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [ExportProgress] = []
    func add(_ event: ExportProgress) { lock.withLock { events.append(event) } }
    var all: [ExportProgress] { lock.withLock { events } }
}

@Suite("Atomic --force, cleanup of remote conversions, honest progress, parallel streams")
struct ReplaceCleanupProgressTests {
    @Test("--force replaces the destination atomically (posix-rename@openssh.com): a watcher polling it never finds it missing")
    func atomicReplace() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-replace")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 8 << 20, seed: 51)
        let remote = server.remoteDirectory + "/disk.raw"
        // A large old file: removing it (the old way) takes long enough for any poller to notice.
        try writeRandomFile(remote, size: 96 << 20, seed: 52)
        let watcher = PathWatcher(remote)
        let result = try export(source, to: server, as: "disk.raw") { $0.overwrite = true }
        let seen = watcher.stop()
        #expect(result.placement == .atomicReplace)
        #expect(seen.missing == 0, "the destination was missing in \(seen.missing) of \(seen.polls) polls")
        #expect(seen.polls > 1000 && seen.inodes == 2, "\(seen)")
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("a server refusing posix-rename: --force replaces with mv -f on the host, still never missing; with no shell either, the old file is removed first and a note says so")
    func replaceFallbacks() throws {
        let refusing = try TestSSHServer(sftpServerArguments: "-P posix-rename")
        let work = try TemporaryDirectory("kdct-replace")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 4 << 20, seed: 53)
        let remote = refusing.remoteDirectory + "/disk.raw"
        try writeRandomFile(remote, size: 64 << 20, seed: 54)
        let watcher = PathWatcher(remote)
        let byCommand = try export(source, to: refusing, as: "disk.raw") { $0.overwrite = true }
        let seen = watcher.stop()
        #expect(byCommand.placement == .atomicReplaceByCommand)
        #expect(byCommand.notes.contains { $0.contains("posix-rename") && $0.contains("mv -f") }, "\(byCommand.notes)")
        #expect(seen.missing == 0 && seen.polls > 100, "\(seen)")
        #expect(try fileSHA256(remote) == fileSHA256(source))

        let bare = try TestSSHServer(extraConfig: "ForceCommand internal-sftp -P posix-rename")
        let bareRemote = bare.remoteDirectory + "/disk.raw"
        try "old".write(toFile: bareRemote, atomically: true, encoding: .utf8)
        let removed = try export(source, to: bare, as: "disk.raw") { $0.overwrite = true }
        #expect(removed.placement == .removeThenRename)
        #expect(removed.notes.contains { $0.contains("for a moment no file had the name") }, "\(removed.notes)")
        #expect(try fileSHA256(bareRemote) == fileSHA256(source))
    }

    @Test("a symbolic link at the destination: --force replaces its target and the link stays")
    func symlinkDestination() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-replace")
        let source = work.file("disk.raw")
        try writeRandomFile(source, size: 1 << 20, seed: 55)
        let target = server.remoteDirectory + "/real.raw"
        try "old".write(toFile: target, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: server.remoteDirectory + "/link.raw", withDestinationPath: target)
        let result = try export(source, to: server, as: "link.raw") { $0.overwrite = true }
        #expect(result.destination.path == URL(fileURLWithPath: target).standardizedFileURL.path)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: server.remoteDirectory + "/link.raw") == target)
        #expect(try fileSHA256(target) == fileSHA256(source))
    }

    @Test("convert to the host: a dropped connection leaves no temporary file (removed over a new connection); a leftover of a run that could not clean up is removed by the next one")
    func droppedConversionCleansUp() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-drop")
        let raw = work.file("pattern.raw")
        try writeSparseFile(raw, size: 256 << 20)
        let source = work.file("source.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, source)
        let location = server.location("converted.raw")
        let target = try SFTPFileTarget(location: location, connectionOptions: try server.options(), overwrite: false,
                                        expectedSize: 256 << 20)
        #expect(target.temporaryPath == server.remoteDirectory + "/.converted.raw.kdct-convert.part")
        var options = ConvertOptions(outputFormat: .raw)
        options.pipeline.workers = 2
        let once = OnceFlag()
        options.pipeline.progress = { progress in
            if progress.processedBytes >= 100 << 20 && once.fire() { server.killSessions() }
        }
        expectKDCTError(.io) { try DiskConverter.convert(try ImageOpener.open(source), to: target, options: options) }
        #expect(target.cleanupFailure == nil, "\(target.cleanupFailure ?? "")")
        #expect(server.remoteFiles().isEmpty, "\(server.remoteFiles())")

        // As if a run had died where it could not clean up: the next conversion finds the stable name.
        try writePartial(Data(repeating: 7, count: 5000), to: target.temporaryPath)
        let next = try SFTPFileTarget(location: location, connectionOptions: try server.options(), overwrite: false)
        try DiskConverter.convert(try ImageOpener.open(source), to: next, options: ConvertOptions(outputFormat: .raw))
        #expect(next.report?.notes.contains { $0.contains("left by an earlier conversion") } == true, "\(next.report?.notes ?? [])")
        #expect(server.remoteFiles() == ["converted.raw"])
        try expectQemuIdentical(source, location.path, formatA: "qcow2", formatB: "raw")
    }

    @Test("convert to sftp:// keeps the source file's permission bits, as export does")
    func conversionKeepsMode() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-mode")
        let raw = try TestPattern.writeRaw(to: work.file("pattern.raw"), size: 8 << 20)
        let source = work.file("source.qcow2")
        try qemuImg("convert", "-f", "raw", "-O", "qcow2", raw, source)
        chmod(source, 0o640)
        let remote = server.remoteDirectory + "/mode.qcow2"
        let result = try CLI.run(["convert", "-O", "qcow2", source, "sftp://\(TestSSHServer.user)@127.0.0.1:\(server.port)\(remote)",
                                  "-i", server.clientKey, "--known-hosts", try server.writeKnownHosts()],
                                 environment: ["HOME": work.path, "SSH_AUTH_SOCK": ""])
        #expect(result.status == 0, "\(result.stderr)")
        var st = stat()
        #expect(stat(remote, &st) == 0 && st.st_mode & 0o777 == 0o640, "mode \(String(st.st_mode & 0o777, radix: 8))")
    }

    @Test("progress after --resume starts at the kept bytes with no rate; checking and verifying report as they go; JSON numbers are numbers")
    func progressAfterResume() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-progress")
        let source = work.file("disk.raw")
        let size: UInt64 = 200 << 20
        try writeSparseFile(source, size: size)
        let remote = server.remoteDirectory + "/disk.raw"
        let kept = 100 << 20
        let local = try FileHandle(forReadingFrom: URL(fileURLWithPath: source)).readData(ofLength: kept)
        try writePartial(local, to: DiskExporter.temporaryPath(for: remote))

        let log = ProgressLog()
        let result = try export(source, to: server, as: "disk.raw") { options in
            options.resume = true
            options.progress = { log.add($0) }
        }
        #expect(result.resumedBytes == UInt64(kept))
        let events = log.all
        #expect(events.first?.phase == .connecting)
        #expect(Array(Set(events.map(\.phase))).sorted { $0.rawValue < $1.rawValue } == ExportProgress.Phase.allCases.sorted { $0.rawValue < $1.rawValue })
        let uploading = events.filter { $0.phase == .uploading }
        let first = try #require(uploading.first)
        #expect(first.processedBytes == UInt64(kept) && first.resumedBytes == UInt64(kept) && first.sentBytes == 0, "\(first)")
        #expect(uploading.allSatisfy { $0.sentBytes <= $0.processedBytes - $0.resumedBytes }, "sent counts only this run")
        // 100 MiB compared in two chunks, 200 MiB verified in four: each reports between 0 and 100%.
        #expect(events.contains { $0.phase == .checking && $0.processedBytes > 0 && $0.processedBytes < $0.totalBytes })
        #expect(events.contains { $0.phase == .verifying && $0.processedBytes > 0 && $0.processedBytes < $0.totalBytes })
        #expect(try fileSHA256(remote) == fileSHA256(source))

        // The CLI's JSON: the first uploading line starts at the kept bytes with no rate or ETA yet.
        try FileManager.default.removeItem(atPath: remote)
        try writePartial(local, to: DiskExporter.temporaryPath(for: remote))
        let cli = try CLI.run(["export", "-P", "\(server.port)", "-i", server.clientKey, "--known-hosts", try server.writeKnownHosts(),
                               "--resume", "--progress", "json", source, "\(TestSSHServer.user)@127.0.0.1:\(remote)"],
                              environment: ["HOME": work.path, "SSH_AUTH_SOCK": ""])
        #expect(cli.status == 0, "\(cli.stderr)")
        let lines = cli.stdout.split(separator: "\n").map(String.init)
        let firstUpload = try #require(lines.first { phase(of: $0) == "uploading" })
        #expect(number("processed", in: firstUpload) == Double(kept) && number("resumed", in: firstUpload) == Double(kept)
                && number("sent", in: firstUpload) == 0, "\(firstUpload)")
        #expect(number("bytes-per-second", in: firstUpload) == 0 && firstUpload.contains("\"eta-seconds\":null"), "\(firstUpload)")
        for line in lines where line.contains("\"event\":\"progress\"") {
            #expect((number("bytes-per-second", in: line) ?? -1) < 20e9, "an impossible rate: \(line)")
            #expect(line.contains("\"percent\":") && !line.contains("\"percent\":\""), "percent is a number: \(line)")
        }
        #expect(lines.filter { $0.contains("\"percent\":100.00") && phase(of: $0) == "uploading" }.count <= 1)
        let done = try #require(lines.last)
        #expect(done.hasPrefix("{\"event\":\"done\",\"elapsed-seconds\":"), "\(done)")
        #expect(lines.filter { $0.contains("\"event\":\"done\"") || $0.contains("\"event\":\"failed\"") }.count == 1)
    }

    @Test("-p on a terminal draws a bar for every phase, with the kept bytes of a resumed upload")
    func progressBar() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-bar")
        let source = work.file("disk.raw")
        try writeSparseFile(source, size: 160 << 20)
        let remote = server.remoteDirectory + "/disk.raw"
        let local = try FileHandle(forReadingFrom: URL(fileURLWithPath: source)).readData(ofLength: 32 << 20)
        try writePartial(local, to: DiskExporter.temporaryPath(for: remote))
        let setup = try CLISetup(server, work: work)
        let command = ([CLI.binary] + setup.exportArguments + ["-p", "--resume", source, setup.destination])
            .map(TextEncoding.shellQuoted).joined(separator: " ")
        // script(1) gives the command a terminal; what it draws comes back on script's stdout.
        let drawn = try runProcess(["script", "-qefc", command, "/dev/null"], environment: setup.environment)
        #expect(drawn.status == 0, "\(drawn.stdout)")
        for phase in ["connecting", "checking", "uploading", "verifying", "committing"] {
            #expect(drawn.stdout.contains("] \(phase) "), "no \(phase) bar in: \(drawn.stdout.suffix(2000))")
        }
        #expect(drawn.stdout.contains("(32 MiB kept)") && drawn.stdout.contains("ETA"), "\(drawn.stdout.suffix(2000))")
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }

    @Test("three streams write one file; killed midway, --resume keeps the chunks that arrived and resends only the others")
    func parallelStreamsResume() throws {
        let server = try TestSSHServer()
        let work = try TemporaryDirectory("kdct-streams")
        let source = work.file("disk.raw")
        // Five 64 MiB chunks: the streams take chunks 1-3, then 4 and 5; at 75% the first three have arrived.
        let size = 320 << 20
        try writeRandomFile(source, size: size, seed: 61)
        let remote = server.remoteDirectory + "/disk.raw"
        let once = OnceFlag()
        expectKDCTError(.io) {
            try export(source, to: server, as: "disk.raw") { options in
                options.streams = 3
                options.progress = { progress in
                    if progress.phase == .uploading && progress.processedBytes >= UInt64(size) * 3 / 4 && once.fire() {
                        server.killSessions()
                    }
                }
            }
        }
        #expect(!FileManager.default.fileExists(atPath: remote))
        let resumed = try export(source, to: server, as: "disk.raw") { options in
            options.streams = 3
            options.resume = true
        }
        #expect(resumed.streams >= 2, "two chunks or more were left to send")
        let kept = try #require(resumed.resumedBytes)
        #expect(kept >= 64 << 20, "kept \(kept) bytes")
        #expect(kept + resumed.sentBytes <= UInt64(size) + (64 << 20) * 3, "resent at most the chunks in flight")
        #expect(resumed.sentBytes < UInt64(size))
        #expect(try fileSHA256(remote) == fileSHA256(source))
    }
}
