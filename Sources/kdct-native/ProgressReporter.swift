import KDCTExport
import KDCTFormats
import CKDCTShims
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Progress of a command, as /work/notes/progress-spec.md lays it out: `--progress json` prints one JSON object
/// per line on stdout (`"event":"progress"` lines, then exactly one `done` or `failed` object); `-p` draws the
/// same information as a bar on stderr when stderr is a terminal.
final class ProgressReporter: @unchecked Sendable {
    private let bar: Bool
    private let json: Bool
    private let phase: String
    private let start = ProgressReporter.now()
    private var lastDraw = 0.0
    private var drewBar = false
    private var reportedComplete = false
    private var ended = false

    /// A reporter for `phase` (`converting` for a local conversion).
    init(bar: Bool, json: Bool, phase: String = "converting") {
        self.bar = bar && isatty(STDERR_FILENO) != 0
        self.json = json
        self.phase = phase
    }

    /// Seconds on the monotonic clock.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Seconds since the reporter was made.
    var elapsed: Double { max(Self.now() - start, 0) }

    /// Reports a conversion's progress: at most every 0.2 s, and the 100% line once.
    func report(_ progress: ConvertProgress) {
        report(processed: progress.processedBytes, total: progress.totalBytes,
               extra: [("data-read", .unsigned(progress.dataBytesRead))])
    }

    /// Reports `processed` of `total` bytes with command-specific `extra` keys.
    func report(processed: UInt64, total: UInt64, extra: [(String, JSONLine.Value)] = []) {
        let now = Self.now()
        let complete = processed >= total
        if complete {
            if reportedComplete { return }
            reportedComplete = true
        } else if now - lastDraw < 0.2 {
            return
        }
        lastDraw = now
        let elapsed = max(now - start, 0)
        let fraction = total == 0 ? 1 : Double(min(processed, total)) / Double(total)
        let rate = elapsed > 0 ? Double(processed) / elapsed : 0
        let eta: Double? = complete ? 0 : (rate > 0 && processed > 0 ? Double(total - processed) / rate : nil)
        if json {
            var line = JSONLine()
            line.add("event", .string("progress"))
            line.add("phase", .string(phase))
            line.add("processed", .unsigned(processed))
            line.add("total", .unsigned(total))
            line.add("percent", .decimal(fraction * 100, places: 2))
            line.add("elapsed-seconds", .decimal(elapsed, places: 3))
            line.add("bytes-per-second", .unsigned(UInt64(rate)))
            line.add("eta-seconds", eta.map { .decimal($0, places: 1) } ?? .null)
            for (key, value) in extra { line.add(key, value) }
            Console.out(line.text + "\n")
        }
        if bar {
            let columns = max(40, Int(kdct_terminal_columns(STDERR_FILENO)))
            let etaText = eta.map { "ETA \(Int($0))s" } ?? "ETA -"
            let text = " \(String(format2: fraction * 100))%  \(ByteCount.human(processed))/\(ByteCount.human(total))  \(ByteCount.human(UInt64(rate)))/s  \(etaText)"
            let width = max(10, columns - text.count - 3)
            let filled = min(width, Int(Double(width) * fraction))
            let line = "[" + String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled) + "]" + text
            Console.error("\r" + line)
            drewBar = true
        }
    }

    /// Ends the stream with the `done` object holding `result` keys.
    func done(_ result: [(String, JSONLine.Value)]) {
        endBar()
        guard json, !ended else { return }
        ended = true
        var line = JSONLine()
        line.add("event", .string("done"))
        line.add("elapsed-seconds", .decimal(elapsed, places: 3))
        for (key, value) in result { line.add(key, value) }
        Console.out(line.text + "\n")
    }

    /// Ends the stream with the `failed` object for `error`, which ends the command with `exitStatus`.
    func failed(_ error: any Error, exitStatus: Int32) {
        endBar()
        guard json, !ended else { return }
        ended = true
        var detail = JSONLine()
        if let error = error as? KDCTError {
            detail.add("code", .string(error.code.rawValue))
            detail.add("message", .string(error.message))
            if let file = error.file { detail.add("file", .string(file)) }
            if let field = error.field { detail.add("field", .string(field)) }
        } else {
            detail.add("code", .string("invalid-argument"))
            detail.add("message", .string("\(error)"))
        }
        var line = JSONLine()
        line.add("event", .string("failed"))
        line.add("elapsed-seconds", .decimal(elapsed, places: 3))
        line.add("exit-status", .integer(Int64(exitStatus)))
        line.add("error", .object(detail))
        Console.out(line.text + "\n")
    }

    /// Ends the bar's line on stderr, if one was drawn.
    func endBar() {
        if drewBar { Console.error("\n") }
        drewBar = false
    }
}

/// One JSON object on one line. Numbers are JSON numbers, never strings: fractions with a fixed number of
/// decimals, and `null` where a number is unknown.
struct JSONLine {
    /// A field's value.
    indirect enum Value {
        case string(String)
        case integer(Int64)
        case unsigned(UInt64)
        case decimal(Double, places: Int)
        case bool(Bool)
        case null
        case object(JSONLine)
    }

    private var fields: [(String, Value)] = []

    /// Appends `key: value`.
    mutating func add(_ key: String, _ value: Value) { fields.append((key, value)) }

    /// Appends a string, or null.
    mutating func add(_ key: String, _ value: String?) { add(key, value.map { .string($0) } ?? .null) }

    /// Appends a count.
    mutating func add(_ key: String, _ value: UInt64) { add(key, .unsigned(value)) }

    /// Appends a flag.
    mutating func add(_ key: String, _ value: Bool) { add(key, .bool(value)) }

    /// Appends a non-negative quantity with two decimals (`12.34`), or null when unknown.
    mutating func add(_ key: String, _ value: Double?) {
        guard let value, value.isFinite, value >= 0 else { return add(key, .null) }
        add(key, .decimal(value, places: 2))
    }

    /// Appends a nested object.
    mutating func add(_ key: String, object: JSONLine) { add(key, .object(object)) }

    /// These fields followed by `other`'s.
    func appending(_ other: JSONLine) -> JSONLine {
        var copy = self
        copy.fields += other.fields
        return copy
    }

    /// The object as one line of JSON.
    var text: String {
        "{" + fields.map { InfoValue.quoted($0.0) + ":" + Self.encode($0.1) }.joined(separator: ",") + "}"
    }

    private static func encode(_ value: Value) -> String {
        switch value {
        case let .string(text): return InfoValue.quoted(text)
        case let .integer(number): return String(number)
        case let .unsigned(number): return String(number)
        case let .decimal(number, places): return decimal(number, places: places)
        case let .bool(flag): return flag ? "true" : "false"
        case .null: return "null"
        case let .object(inner): return inner.text
        }
    }

    /// `number` with `places` decimals as a JSON number (`null` when it is not finite).
    static func decimal(_ number: Double, places: Int) -> String {
        guard number.isFinite else { return "null" }
        var scale = 1.0
        for _ in 0..<places { scale *= 10 }
        let scaled = (abs(number) * scale).rounded()
        guard scaled < 9e15 else { return String(Int64(number.rounded())) }
        let units = Int64(scaled)
        let divisor = Int64(scale)
        let sign = number < 0 && units != 0 ? "-" : ""
        guard places > 0 else { return sign + String(units) }
        let fraction = String(units % divisor)
        return sign + String(units / divisor) + "." + String(repeating: "0", count: places - fraction.count) + fraction
    }
}

/// SIGINT and SIGTERM: the first one cancels `token`, which long-running work checks (the conversion pipeline
/// between segments, the exporter in every wait on the network, at least every 0.1 s) so it stops, removes its
/// temporary files and the command ends with 130 (SIGINT) or 143 (SIGTERM). The handler only does the token's
/// atomic compare-and-exchange; it is installed without SA_RESTART (a blocking read of a password returns EINTR)
/// and with SA_RESETHAND, so a second signal ends the process at once.
enum Interruption {
    /// Cancelled by the first SIGINT or SIGTERM.
    static let token = CancellationToken()

    /// True once SIGINT or SIGTERM arrived.
    static var requested: Bool { token.isCancelled }

    /// The exit status for the signal received: 128 + its number (130, 143), or 1 when none arrived.
    static var exitStatus: Int32 { token.signal.map { 128 + $0 } ?? 1 }

    /// Installs the handler for SIGINT and SIGTERM, and unblocks them: a parent may have started this process
    /// with them blocked (a blocked signal would only be delivered, too late, at exit). Threads started later
    /// inherit the mask.
    static func install() {
        _ = token  // initialised here, never in the handler
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { number in Interruption.token.cancel(signal: number) }
        sigemptyset(&action.sa_mask)
        action.sa_flags = Int32(bitPattern: UInt32(SA_RESETHAND))
        sigaction(SIGINT, &action, nil)
        sigaction(SIGTERM, &action, nil)
    }
}
