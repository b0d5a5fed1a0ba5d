import ArgumentParser
import KDCTExport
import KDCTFormats
import CKDCTShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// SSH options shared by `export` and by `convert` to an `sftp://` destination.
struct SSHOptions: ParsableArguments {
    @Option(name: .customShort("i"), help: ArgumentHelp("Private key file to authenticate with (repeatable); its passphrase comes from KDCT_SSH_PASSPHRASE or a terminal prompt.", valueName: "identity"))
    var identities: [String] = []

    @Option(name: .customLong("password-env"), help: ArgumentHelp("Read the SSH password from this environment variable.", valueName: "var"))
    var passwordVariable: String?

    @Flag(name: .customLong("password-stdin"), help: "Read the SSH password from the first line of standard input.")
    var passwordFromStandardInput = false

    @Option(name: .customLong("known-hosts"), help: ArgumentHelp("known_hosts file (default ~/.ssh/known_hosts).", valueName: "file"))
    var knownHosts: String?

    @Flag(name: .customLong("accept-new-host-key"), help: "Record the key of a host not yet in known_hosts (a changed key is always refused).")
    var acceptNewHostKey = false

    @Option(name: .customLong("timeout"), help: ArgumentHelp("Give up when the host shows no progress for this many seconds (default 30; long remote operations count keepalive replies as progress).", valueName: "seconds"))
    var timeout: Double = 30

    func validate() throws {
        if passwordVariable != nil && passwordFromStandardInput {
            throw ValidationError("--password-env and --password-stdin are exclusive")
        }
        if !(timeout > 0 && timeout <= 86400) { throw ValidationError("--timeout must be between 0 and 86400 seconds") }
    }

    /// The library's connection options, cancelled by SIGINT/SIGTERM.
    var connectionOptions: SSHConnectionOptions {
        var options = SSHConnectionOptions()
        options.knownHostsFile = knownHosts
        options.acceptNewHostKey = acceptNewHostKey
        options.identityFiles = identities
        if let passwordVariable {
            options.password = .environment(passwordVariable)
        } else if passwordFromStandardInput {
            options.password = .standardInput
        }
        options.passphraseSources = [.environment("KDCT_SSH_PASSPHRASE"), .terminalPrompt]
        options.timeout = timeout
        options.cancellation = Interruption.token
        return options
    }
}

/// `export`: send a disk image to a KVM host.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a disk image to a KVM host over SFTP: known host key, temporary name, SHA-256 check, fsync, then an atomic rename.",
        discussion: "An interrupted upload stays on the host under .NAME.kdct-export.part; --resume keeps every 64 MiB chunk of it that matches the local file and sends the rest. Zero runs are not sent (the remote file gets holes). Ctrl-C stops within 2 seconds (exit status 130; 143 for SIGTERM) and never leaves a file under the destination name.")

    @Option(name: .customShort("P"), help: ArgumentHelp("SSH port.", valueName: "port"))
    var port: Int = 22

    @OptionGroup(title: "SSH")
    var ssh: SSHOptions

    @Flag(name: .customLong("no-verify"), help: "Do not compare the remote file's SHA-256 with the local one.")
    var noVerify = false

    @Flag(help: "Continue an interrupted upload (chunks matching the local file are kept, the others sent again).")
    var resume = false

    @Flag(help: "Replace an existing destination, atomically (and discard an interrupted upload instead of resuming it).")
    var force = false

    @Option(name: .customLong("streams"), help: ArgumentHelp("SFTP connections writing chunks of the file at once (1 to \(ExportOptions.maximumStreams), default \(ExportOptions.defaultStreams)).", valueName: "n"))
    var streams: Int = ExportOptions.defaultStreams

    @OptionGroup var readAhead: ReadAheadOption

    @Option(name: .customShort("t"), help: ArgumentHelp("Destination cache mode, as convert's -t: unsafe skips the flush to the host's disk before the rename (a host crash soon after may leave a partly written file under the name); every other mode flushes.", valueName: "cache"))
    var cache: CacheMode?

    @Flag(name: .customShort("p"), help: "Show progress on a terminal.")
    var progressBar = false

    @Option(name: .customLong("progress"), help: "Progress for scripts: json (one object per line on stdout).")
    var progressStyle: ProgressStyle?

    @Option(name: .customLong("protocol"), help: "sftp (default) or scp (for hosts without SFTP: no holes, no resume, one stream, needs a shell on the host).")
    var transferProtocol: ExportOptions.TransferProtocol = .sftp

    @Argument(help: "Local image file.")
    var local: String

    @Argument(help: ArgumentHelp("Destination: USER@HOST:PATH (a directory keeps the local file name).", valueName: "user@host:path"))
    var destination: String

    func validate() throws {
        if !(1...65535).contains(port) { throw ValidationError("-P must be a port between 1 and 65535") }
        if resume && transferProtocol == .scp { throw ValidationError("--resume needs --protocol sftp") }
        if !(1...ExportOptions.maximumStreams).contains(streams) {
            throw ValidationError("--streams must be between 1 and \(ExportOptions.maximumStreams)")
        }
    }

    func run() throws {
        let printer = TransferProgressPrinter(bar: progressBar, json: progressStyle == .json)
        Interruption.install()
        let result: ExportResult
        do {
            let location = try RemoteLocation.parse(scpStyle: destination, port: port)
            var options = ExportOptions()
            options.connection = ssh.connectionOptions
            options.transferProtocol = transferProtocol
            options.overwrite = force
            options.resume = resume
            options.verify = !noVerify
            options.streams = transferProtocol == .scp ? 1 : streams
            options.readAhead = readAhead.depth
            options.flush = cache != .unsafe
            options.progress = { printer.report($0) }
            result = try DiskExporter.export(localPath: local, to: location, options: options)
        } catch {
            throw printer.fail(error)
        }
        for note in result.notes { printer.note(note) }
        var fields = JSONLine()
        fields.add("destination", result.destination.displayName)
        fields.add("size", result.size)
        fields.add("sent", result.sentBytes)
        fields.add("resumed", result.resumedBytes ?? 0)
        fields.add("skipped-zero-bytes", result.skippedZeroBytes)
        fields.add("streams", UInt64(result.streams))
        fields.add("verification", result.verification.rawValue)
        fields.add("placement", result.placement.rawValue)
        fields.add("flushed", result.flushed)
        fields.add("host-key", result.hostKeyFingerprint)
        fields.add("sha256", result.sha256)
        var line = "\(result.destination.displayName): \(ByteCount.human(result.size)), \(ByteCount.human(result.sentBytes)) sent"
        if let kept = result.resumedBytes, kept > 0 { line += ", \(ByteCount.human(kept)) kept from the interrupted upload" }
        if let sha = result.sha256 { line += ", SHA-256 \(sha) verified (\(result.verification.rawValue))" }
        else if result.verification == .skipped { line += ", not verified" }
        printer.done(fields, summary: line)
    }
}

extension ExportOptions.TransferProtocol: ExpressibleByArgument {}

/// `convert SRC sftp://USER@HOST[:PORT]/path`: the converted image streams to the host.
enum RemoteConvert {
    /// Converts `device` (opened from `source`) to the `sftp://` URL `destination`, always verified (convert's
    /// `--no-verify` is about appliance manifests). Progress has the export's layout (`uploading` is the
    /// conversion); SIGINT/SIGTERM end it within 2 s with exit status 130/143 and the temporary file removed.
    static func run(_ device: any BlockDevice, source: String, destination: String, options: ConvertOptions,
                    ssh: SSHOptions, bar: Bool, json: Bool) throws {
        let printer = TransferProgressPrinter(bar: bar, json: json)
        Interruption.install()
        var target: SFTPFileTarget?
        let report: RemoteCommitReport
        do {
            let location = try RemoteLocation.parse(url: destination)
            var status = stat()
            let mode = stat(source, &status) == 0 ? Int32(status.st_mode & 0o777) : 0o644
            let remote = try SFTPFileTarget(location: location, connectionOptions: ssh.connectionOptions,
                                            overwrite: options.overwrite, verify: true, mode: mode,
                                            expectedSize: device.virtualSize, progress: { printer.report($0) })
            remote.flush = options.destination.flush
            target = remote
            var options = options
            let sentBytes = remote.sentBytesReader
            options.pipeline.isCancelled = { Interruption.token.isCancelled }
            options.pipeline.progress = { progress in
                printer.report(ExportProgress(phase: .uploading, processedBytes: progress.processedBytes,
                                              totalBytes: progress.totalBytes, sentBytes: sentBytes()))
            }
            try DiskConverter.convert(device, to: remote, options: options)
            guard let committed = remote.report else { throw KDCTError(.io, "the remote output was not committed") }
            report = committed
        } catch {
            if let failure = target?.cleanupFailure { printer.note(failure) }
            throw printer.fail(error)
        }
        for note in report.notes { printer.note(note) }
        var fields = JSONLine()
        fields.add("output", destination)
        fields.add("virtual-size", device.virtualSize)
        fields.add("size", report.size)
        fields.add("sent", target?.sentBytes ?? 0)
        fields.add("verification", report.verification.rawValue)
        fields.add("placement", report.placement.rawValue)
        fields.add("flushed", report.flushed)
        printer.done(fields, summary: nil)
    }
}

/// Progress of an export or a conversion to a host, as Benchmarks' progress spec lays it out: one JSON object per
/// line on stdout (`--progress json`), a bar on stderr (`-p`, on a terminal), then exactly one final object
/// (`done` or `failed`). The byte rate comes from bytes this run actually moved: sent bytes while uploading (kept
/// bytes of a resumed upload are reported apart, as `resumed`), hashed bytes while verifying.
final class TransferProgressPrinter: Sendable {
    /// Where the output stands; the exporter's threads and the command's own share it.
    private struct Printed {
        var phase: ExportProgress.Phase?
        var phaseStart = 0.0
        var processedAtPhaseStart: UInt64 = 0
        var sentAtPhaseStart: UInt64 = 0
        var lastLine = 0.0
        var completedPhase = false
        var drewBar = false
        var ended = false
    }

    private let bar: Bool
    private let json: Bool
    private let start = ProgressReporter.now()
    private let printed = Mutex(Printed())

    init(bar: Bool, json: Bool) {
        self.bar = bar && isatty(STDERR_FILENO) != 0
        self.json = json
    }

    /// Prints `progress` (throttled to 5 lines a second per phase; a phase's first line and its 100% line always,
    /// the latter once).
    func report(_ progress: ExportProgress) {
        printed.withLock { printed in
            guard !printed.ended else { return }
            let now = ProgressReporter.now()
            if progress.phase != printed.phase {
                endBarLine(&printed)
                printed.phase = progress.phase
                printed.phaseStart = now
                printed.processedAtPhaseStart = progress.processedBytes
                printed.sentAtPhaseStart = progress.sentBytes
                printed.lastLine = 0
                printed.completedPhase = false
            }
            let complete = progress.totalBytes > 0 && progress.processedBytes >= progress.totalBytes
            if complete && printed.completedPhase { return }
            guard complete || printed.lastLine == 0 || now - printed.lastLine >= 0.2 else { return }
            printed.lastLine = now
            printed.completedPhase = complete
            let elapsed = now - printed.phaseStart
            let moved = progress.processedBytes - min(progress.processedBytes, printed.processedAtPhaseStart)
            let sent = progress.sentBytes - min(progress.sentBytes, printed.sentAtPhaseStart)
            // Rates need a little time to mean anything; before that they are 0 and the ETA unknown.
            let measurable = elapsed >= 0.25
            let byteRate = measurable ? Double(progress.phase == .uploading ? sent : moved) / elapsed : 0
            let progressRate = measurable ? Double(moved) / elapsed : 0
            let left = progress.totalBytes - min(progress.totalBytes, progress.processedBytes)
            let eta: Double? = left == 0 ? 0 : progressRate > 0 ? Double(left) / progressRate : nil
            if json {
                var line = JSONLine()
                line.add("event", "progress")
                line.add("phase", progress.phase.rawValue)
                line.add("processed", progress.processedBytes)
                line.add("total", progress.totalBytes)
                line.add("percent", progress.fraction * 100)
                line.add("elapsed-seconds", now - start)
                line.add("bytes-per-second", UInt64(byteRate))
                line.add("eta-seconds", eta)
                line.add("sent", progress.sentBytes)
                line.add("resumed", progress.resumedBytes)
                Console.out(line.text + "\n")
            }
            if bar {
                let columns = max(50, Int(kdct_terminal_columns(STDERR_FILENO)))
                var text = " \(progress.phase.rawValue) \(String(format2: progress.fraction * 100))%  \(ByteCount.human(progress.processedBytes))/\(ByteCount.human(progress.totalBytes))  \(ByteCount.human(UInt64(byteRate)))/s"
                text += eta.map { "  ETA \(Int($0.rounded()))s" } ?? "  ETA --"
                if progress.resumedBytes > 0 { text += "  (\(ByteCount.human(progress.resumedBytes)) kept)" }
                let width = max(10, columns - text.count - 3)
                let filled = Int(Double(width) * progress.fraction)
                Console.error("\r[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "]" + text)
                printed.drewBar = true
            }
        }
    }

    /// Prints a remark on stderr.
    func note(_ text: String) {
        printed.withLock { printed in
            endBarLine(&printed)
            Console.error("note: \(text)\n")
        }
    }

    /// Ends with success: the `done` object (`fields` after `event` and `elapsed-seconds`) in JSON mode, else
    /// `summary` on stdout.
    func done(_ fields: JSONLine, summary: String?) {
        printed.withLock { printed in
            endBarLine(&printed)
            printed.ended = true
            if json {
                var line = JSONLine()
                line.add("event", "done")
                line.add("elapsed-seconds", ProgressReporter.now() - start)
                Console.out(line.appending(fields).text + "\n")
            } else if let summary {
                Console.out(summary + "\n")
            }
        }
    }

    /// Ends with a failure: one line on stderr and, in JSON mode, the `failed` object; returns the exit to throw.
    func fail(_ error: any Error) -> CommandExit {
        let status = exitStatus(for: error)
        printed.withLock { printed in
            endBarLine(&printed)
            printed.ended = true
            Console.error("kdct-native: \(error)\n")
            guard json else { return }
            var line = JSONLine()
            line.add("event", "failed")
            line.add("elapsed-seconds", ProgressReporter.now() - start)
            line.add("exit-status", UInt64(status))
            line.add("error", object: JSONLine(describing: error))
            Console.out(line.text + "\n")
        }
        return CommandExit(code: status)
    }

    private func endBarLine(_ printed: inout Printed) {
        if printed.drewBar { Console.error("\n") }
        printed.drewBar = false
    }
}
