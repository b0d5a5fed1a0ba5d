import ArgumentParser
import KDCTExport
import KDCTFormats
import CKDCTShims
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

    func validate() throws {
        if passwordVariable != nil && passwordFromStandardInput {
            throw ValidationError("--password-env and --password-stdin are exclusive")
        }
    }

    /// The library's connection options.
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
        return options
    }
}

/// `export`: send a disk image to a KVM host.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a disk image to a KVM host over SFTP: known host key, temporary name, fsync, SHA-256 check, then rename.",
        discussion: "An interrupted upload stays on the host under .NAME.kdct-export.part; --resume continues it after checking it against the local file. Zero runs of raw images are not sent (the remote file gets holes).")

    @Option(name: .customShort("P"), help: ArgumentHelp("SSH port.", valueName: "port"))
    var port: Int = 22

    @OptionGroup(title: "SSH")
    var ssh: SSHOptions

    @Flag(name: .customLong("no-verify"), help: "Do not compare the remote file's SHA-256 with the local one.")
    var noVerify = false

    @Flag(help: "Continue an interrupted upload (its content is checked against the local file first; a mismatch starts over).")
    var resume = false

    @Flag(help: "Replace an existing destination (and discard an interrupted upload instead of resuming it).")
    var force = false

    @Flag(name: .customShort("p"), help: "Show progress on a terminal.")
    var progressBar = false

    @Option(name: .customLong("progress"), help: "Progress for scripts: json (one object per line on stdout).")
    var progressStyle: ProgressStyle?

    @Option(name: .customLong("protocol"), help: "sftp (default) or scp (for hosts without SFTP: no holes, no resume, needs a shell on the host).")
    var transferProtocol: ExportOptions.TransferProtocol = .sftp

    @Argument(help: "Local image file.")
    var local: String

    @Argument(help: ArgumentHelp("Destination: USER@HOST:PATH (a directory keeps the local file name).", valueName: "user@host:path"))
    var destination: String

    func validate() throws {
        if !(1...65535).contains(port) { throw ValidationError("-P must be a port between 1 and 65535") }
        if resume && transferProtocol == .scp { throw ValidationError("--resume needs --protocol sftp") }
    }

    func run() throws {
        let location = try RemoteLocation.parse(scpStyle: destination, port: port)
        var options = ExportOptions()
        options.connection = ssh.connectionOptions
        options.transferProtocol = transferProtocol
        options.overwrite = force
        options.resume = resume
        options.verify = !noVerify
        let printer = ExportProgressPrinter(bar: progressBar, json: progressStyle == .json)
        options.progress = { printer.report($0) }
        options.isCancelled = { Interruption.requested }
        Interruption.install()
        let result: ExportResult
        do {
            result = try DiskExporter.export(localPath: local, to: location, options: options)
        } catch {
            printer.finish()
            throw error
        }
        printer.finish()
        for note in result.notes { Console.error("note: \(note)\n") }
        if progressStyle == .json {
            var fields: [(String, InfoValue)] = [
                ("event", .string("done")),
                ("destination", .string(result.destination.displayName)),
                ("size", .unsigned(result.size)),
                ("sent", .unsigned(result.sentBytes)),
                ("skipped-zero-bytes", .unsigned(result.skippedZeroBytes)),
                ("verification", .string(result.verification.rawValue)),
                ("flushed", .bool(result.flushed)),
                ("host-key", .string(result.hostKeyFingerprint)),
            ]
            if let sha = result.sha256 { fields.append(("sha256", .string(sha))) }
            if let resumed = result.resumedFrom { fields.append(("resumed-from", .unsigned(resumed))) }
            Console.out(InfoValue.object(fields).jsonText(indent: 0) + "\n")
        } else {
            var line = "\(result.destination.displayName): \(ByteCount.human(result.size)), \(ByteCount.human(result.sentBytes)) sent"
            if let resumed = result.resumedFrom { line += ", \(ByteCount.human(resumed)) kept from the interrupted upload" }
            if let sha = result.sha256 { line += ", SHA-256 \(sha) verified (\(result.verification.rawValue))" }
            else if result.verification == .skipped { line += ", not verified" }
            Console.out(line + "\n")
        }
    }
}

extension ExportOptions.TransferProtocol: ExpressibleByArgument {}

/// `convert SRC sftp://USER@HOST[:PORT]/path`: the converted image streams to the host.
enum RemoteConvert {
    /// Converts `device` to the `sftp://` URL `destination`, always verified (convert's `--no-verify` is about
    /// appliance manifests).
    static func run(_ device: any BlockDevice, destination: String, options: ConvertOptions, ssh: SSHOptions) throws {
        let location = try RemoteLocation.parse(url: destination)
        let target = try SFTPFileTarget(location: location, connectionOptions: ssh.connectionOptions,
                                        overwrite: options.overwrite, verify: true)
        try DiskConverter.convert(device, to: target, options: options)
        for note in target.report?.notes ?? [] { Console.error("note: \(note)\n") }
    }
}

/// Export progress: a bar with percent, bytes, rate and ETA on stderr when it is a terminal (`-p`), JSON lines
/// on stdout (`--progress json`).
final class ExportProgressPrinter: @unchecked Sendable {
    private let bar: Bool
    private let json: Bool
    private var phaseStart = ProgressReporter.now()
    private var phase: ExportProgress.Phase?
    private var lastDraw = 0.0
    private var drewBar = false

    init(bar: Bool, json: Bool) {
        self.bar = bar && isatty(STDERR_FILENO) != 0
        self.json = json
    }

    func report(_ progress: ExportProgress) {
        let now = ProgressReporter.now()
        if progress.phase != phase {
            if drewBar { Console.error("\n") }
            drewBar = false
            phase = progress.phase
            phaseStart = now
            lastDraw = 0
        }
        let done = progress.processedBytes >= progress.totalBytes
        guard done || now - lastDraw >= 0.2 else { return }
        lastDraw = now
        let elapsed = max(now - phaseStart, 1e-6)
        let rate = Double(progress.processedBytes) / elapsed
        let left = Double(progress.totalBytes - min(progress.totalBytes, progress.processedBytes))
        let eta = rate > 0 ? left / rate : 0
        if json {
            Console.out(InfoValue.object([
                ("phase", .string(progress.phase.rawValue)),
                ("processed", .unsigned(progress.processedBytes)),
                ("total", .unsigned(progress.totalBytes)),
                ("sent", .unsigned(progress.sentBytes)),
                ("percent", .string(String(format2: progress.fraction * 100))),
                ("bytes-per-second", .unsigned(UInt64(rate))),
                ("eta-seconds", .string(String(format2: eta))),
            ]).jsonText(indent: 0) + "\n")
        }
        if bar {
            let columns = max(50, Int(kdct_terminal_columns(STDERR_FILENO)))
            let text = " \(progress.phase.rawValue) \(String(format2: progress.fraction * 100))%  \(ByteCount.human(progress.processedBytes))/\(ByteCount.human(progress.totalBytes))  \(ByteCount.human(UInt64(rate)))/s  ETA \(Int(eta))s"
            let width = max(10, columns - text.count - 3)
            let filled = Int(Double(width) * progress.fraction)
            Console.error("\r[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "]" + text)
            drewBar = true
        }
    }

    func finish() {
        if drewBar { Console.error("\n") }
        drewBar = false
    }
}
