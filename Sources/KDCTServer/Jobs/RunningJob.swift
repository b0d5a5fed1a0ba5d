import KDCTExport
import Foundation
import Synchronization

/// Turns the engine's progress reports into `--progress json` objects (docs: the shared progress spec): rate and
/// ETA from the bytes this run moved in the current phase, numbers as JSON numbers, `eta-seconds` null until it
/// can be estimated, at most one 100% object per phase, at most one object per `interval` otherwise.
struct ProgressMeter {
    let start: Double
    let interval: Double
    private var phase: String?
    private var phaseStart: Double
    private var lastPublished = -Double.infinity
    private var completedPhases: Set<String> = []

    init(start: Double, interval: Double = 0.25) {
        self.start = start
        self.interval = interval
        phaseStart = start
    }

    /// The progress object for `update` at `now`, or nil when it is not due yet.
    mutating func object(for update: ProgressUpdate, now: Double) -> JSONValue? {
        let newPhase = update.phase != phase
        if newPhase {
            // The first phase runs from the job's start; each later one from when it was first reported.
            if phase != nil { phaseStart = now }
            phase = update.phase
        }
        let complete = update.total > 0 && update.processed >= update.total
        if complete {
            guard completedPhases.insert(update.phase).inserted else { return nil }
        } else if !newPhase && now - lastPublished < interval {
            return nil
        }
        lastPublished = now
        let phaseElapsed = now - phaseStart
        let rate = phaseElapsed > 0 ? Double(update.moved) / phaseElapsed : 0
        let left = Double(update.total - min(update.total, update.processed))
        let percent = update.total == 0 ? 0 : min(100, Double(update.processed) / Double(update.total) * 100)
        var pairs: [(String, JSONValue)] = [
            ("event", .string("progress")),
            ("phase", .string(update.phase)),
            ("processed", .uint(update.processed)),
            ("total", .uint(update.total)),
            ("percent", .number(percent)),
            ("elapsed-seconds", .number(now - start)),
            ("bytes-per-second", .uint(UInt64(rate))),
            ("eta-seconds", rate > 0 ? .number(left / rate, decimals: 1) : (complete ? .int(0) : .null)),
        ]
        pairs += update.extras
        return .object(pairs)
    }
}

/// Why a running job was asked to stop.
enum StopReason: Sendable {
    /// `DELETE /jobs/{id}`: the job ends `cancelled`.
    case cancelled
    /// The service is stopping: the job ends `interrupted`.
    case shutdown
}

/// A job while its engine call runs on its own thread: the stop flag the library polls, and its progress meter.
final class RunningJob: Sendable {
    let id: String
    let kind: JobKind
    /// When it started (seconds since the epoch).
    let startedAt: Double
    /// Set by `stop`; the library polls it between segments and chunks, and the exporter wakes on it.
    let cancellation = CancellationToken()
    private let reason = Mutex<StopReason?>(nil)
    private let meter: Mutex<ProgressMeter>
    /// The revision of the progress last written to the store.
    let savedRevision = Atomic<Int64>(0)

    init(id: String, kind: JobKind, startedAt: Double) {
        self.id = id
        self.kind = kind
        self.startedAt = startedAt
        meter = Mutex(ProgressMeter(start: Timestamp.monotonic()))
    }

    /// True once `stop` was called (read by the library between segments and chunks).
    var isStopRequested: Bool { cancellation.isCancelled }

    /// Why the job was stopped, if it was.
    var stopReason: StopReason? { reason.withLock { $0 } }

    /// Asks the job to stop; the first reason wins.
    func stop(_ why: StopReason) {
        reason.withLock { if $0 == nil { $0 = why } }
        cancellation.cancel()
    }

    /// Publishes `update` when the meter says it is due.
    func report(_ update: ProgressUpdate, to events: JobEvents) {
        guard let object = meter.withLock({ $0.object(for: update, now: Timestamp.monotonic()) }) else { return }
        events.publish(id, name: "progress", data: object)
    }

    /// Runs `body` on a new thread (the library blocks; the cooperative pool must not) and returns its value.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: body()) }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }
}
