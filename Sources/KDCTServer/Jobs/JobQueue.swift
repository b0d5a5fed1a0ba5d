import Foundation
import Logging

/// The job queue: at most `capacity` jobs waiting, `workers` running at once (`serve --jobs N`), each on its own
/// thread. Its state changes go to the store first, then out as events.
///
/// Cancelling sets the flag the library polls; the library removes the temporary output, so a cancelled job
/// never leaves a file under the destination name. Stopping the service cancels every running job and records
/// it `interrupted`; a service that was killed instead finds its jobs `running` at the next start, and
/// `recover` marks them `interrupted` and removes their recorded temporary files.
actor JobQueue {
    private struct Waiting {
        let id: String
        let request: JobRequest
        let secrets: JobSecrets
    }

    private let store: JobStore
    let events: JobEvents
    private let engine: LibraryEngine
    private let roots: RootSet
    private let workers: Int
    private let capacity: Int
    private let logger: Logger
    private var waiting: [Waiting] = []
    private var running: [String: RunningJob] = [:]
    private var stopping = false

    init(store: JobStore, events: JobEvents, engine: LibraryEngine, roots: RootSet, workers: Int, capacity: Int,
         logger: Logger) {
        self.store = store
        self.events = events
        self.engine = engine
        self.roots = roots
        self.workers = workers
        self.capacity = capacity
        self.logger = logger
    }

    // MARK: Recovery

    /// Marks the jobs a previous service left queued or running as `interrupted` and removes the temporary files
    /// the running ones had recorded. Returns how many jobs were recovered.
    func recover() throws -> Int {
        let leftovers = try store.unfinished()
        for job in leftovers {
            var removed: [String] = []
            for file in job.cleanup { removed += file.remove() }
            let message = job.state == .running
                ? "the service stopped (killed or crashed) while the job was running" + (removed.isEmpty ? "" : "; its temporary files were removed")
                : "the service stopped before the job started"
            _ = try store.finish(job.id, state: .interrupted, progress: nil, result: nil,
                                 error: .object([("code", .string("interrupted")), ("message", .string(message))]),
                                 resumable: job.kind == .export && job.state == .running,
                                 at: Timestamp.now(), revision: job.revision + 1)
            let cleaned = removed.isEmpty ? "" : ", removed \(removed.joined(separator: ", "))"
            logger.notice("job \(job.id) (\(job.kind.rawValue)) was \(job.state.rawValue) when the service stopped: now interrupted\(cleaned)")
        }
        return leftovers.count
    }

    // MARK: Requests

    /// Queues a validated request; 503 when the queue is full or the service is stopping.
    func submit(_ request: JobRequest, secrets: JobSecrets, retryOf: String? = nil) throws -> JobRecord {
        try checkRoomInQueue()
        let id = UUID().uuidString.lowercased()
        let record = try store.insert(id: id, kind: request.kind, request: request.json, retryOf: retryOf, at: Timestamp.now())
        events.open(id, revision: record.revision)
        waiting.append(Waiting(id: id, request: request, secrets: secrets))
        logger.info("job \(id) queued: \(request.kind.rawValue) \(request.source) -> \(request.destination)")
        startWaitingJobs()
        return try current(id) ?? record
    }

    /// Cancels a queued or running job. A running job is given up to `wait` seconds to stop (it removes its
    /// temporary output); the answer shows the job as it is then.
    func cancel(_ id: String, wait: Double = 10) async throws -> JobRecord {
        if let index = waiting.firstIndex(where: { $0.id == id }) {
            waiting.remove(at: index)
            try finishUnstarted(id, state: .cancelled, message: "cancelled before it started")
        } else if let job = running[id] {
            job.stop(.cancelled)
            logger.info("job \(id) cancel requested")
            let deadline = Timestamp.monotonic() + wait
            while running[id] != nil && Timestamp.monotonic() < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
        } else {
            guard let record = try store.job(id) else { throw Problem.notFound("no job \(id)") }
            throw Problem.conflict("job \(id) is already \(record.state.rawValue)", code: "already-finished")
        }
        guard let record = try current(id) else { throw Problem.notFound("no job \(id)") }
        return record
    }

    /// Continues an interrupted, cancelled or failed export where it stopped (the CLI's `export --resume`):
    /// the same job goes back to the queue with `resume`. `credentials` holds the password or passphrase again
    /// (they were never stored).
    func resume(_ id: String, credentials: JSONValue) throws -> JobRecord {
        guard let record = try store.job(id) else { throw Problem.notFound("no job \(id)") }
        guard record.kind == .export else {
            throw Problem.conflict("only export jobs resume (a conversion starts over): use POST /api/v1/jobs/\(id)/retry",
                                   code: "not-resumable")
        }
        guard record.state.isFinished, record.state != .succeeded else {
            throw Problem.conflict("job \(id) is \(record.state.rawValue); only an export that did not finish can resume",
                                   code: "not-resumable")
        }
        try checkRoomInQueue()
        let (request, secrets) = try JobRequest.parse(merge(record.request.setting("resume", .bool(true)), credentials),
                                                      roots: roots, engine: engine)
        events.open(id, revision: record.revision)
        _ = try store.requeue(id, request: request.json, revision: record.revision)
        waiting.append(Waiting(id: id, request: request, secrets: secrets))
        logger.info("job \(id) queued to resume")
        startWaitingJobs()
        return try current(id) ?? record
    }

    /// Queues a new job with the request of finished job `id` (a failed or cancelled conversion, say).
    func retry(_ id: String, credentials: JSONValue) throws -> JobRecord {
        guard let record = try store.job(id) else { throw Problem.notFound("no job \(id)") }
        guard record.state.isFinished else {
            throw Problem.conflict("job \(id) is still \(record.state.rawValue)", code: "not-finished")
        }
        var stored = record.request
        if record.kind == .export { stored = stored.setting("resume", .bool(false)) }
        let (request, secrets) = try JobRequest.parse(merge(stored, credentials), roots: roots, engine: engine)
        return try submit(request, secrets: secrets, retryOf: id)
    }

    /// One job, with the live progress of a running one.
    func current(_ id: String) throws -> JobRecord? {
        guard var record = try store.job(id) else { return nil }
        overlayLiveProgress(&record)
        return record
    }

    /// Jobs newest first, with live progress.
    func list(limit: Int, before: Int64?, state: JobState?) throws -> [JobRecord] {
        try store.list(limit: limit, before: before, state: state).map { record in
            var record = record
            overlayLiveProgress(&record)
            return record
        }
    }

    /// Jobs waiting and running.
    var counts: (waiting: Int, running: Int) { (waiting.count, running.count) }

    // MARK: Housekeeping

    /// Writes the progress of running jobs that changed since the last call (every 0.5 s: the store is never
    /// written at the library's pace).
    func saveProgress() {
        for job in running.values {
            guard let event = events.latest(job.id), event.name == "progress",
                  event.revision > job.savedRevision.load(ordering: .relaxed) else { continue }
            do {
                try store.saveProgress(job.id, progress: event.data.removing("event"), revision: event.revision)
                job.savedRevision.store(event.revision, ordering: .relaxed)
            } catch {
                logger.error("saving the progress of job \(job.id) failed: \(error)")
            }
        }
    }

    /// Stops the queue: waiting jobs and running ones (after they stopped, at most `wait` seconds) end
    /// `interrupted`, then every event stream is closed.
    func stop(wait: Double = 30) async {
        stopping = true
        for job in waiting {
            try? finishUnstarted(job.id, state: .interrupted, message: "the service stopped before the job started")
        }
        waiting.removeAll()
        for job in running.values { job.stop(.shutdown) }
        if !running.isEmpty { logger.notice("stopping: cancelling \(running.count) running job(s)") }
        let deadline = Timestamp.monotonic() + wait
        while !running.isEmpty && Timestamp.monotonic() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for id in running.keys {
            logger.error("job \(id) did not stop within \(Int(wait)) s; recorded as interrupted")
            try? finishUnstarted(id, state: .interrupted, message: "the service stopped while the job was running")
        }
        running.removeAll()
        events.close()
    }

    // MARK: Running

    private func checkRoomInQueue() throws {
        if stopping { throw Problem(.serviceUnavailable, code: "unavailable", "the service is stopping") }
        guard waiting.count < capacity else {
            var problem = Problem(.serviceUnavailable, code: "queue-full",
                                  "\(waiting.count) jobs are already waiting (the queue holds \(capacity)); try again later")
            problem.headers[.retryAfter] = "10"
            throw problem
        }
    }

    private func startWaitingJobs() {
        while !stopping, running.count < workers, !waiting.isEmpty {
            start(waiting.removeFirst())
        }
    }

    private func start(_ next: Waiting) {
        let startedAt = Timestamp.now()
        let job = RunningJob(id: next.id, kind: next.request.kind, startedAt: startedAt)
        do {
            _ = try store.markRunning(next.id, at: startedAt, revision: events.reserveRevision(next.id))
        } catch {
            logger.error("job \(next.id) could not start: \(error)")
            return
        }
        running[next.id] = job
        logger.info("job \(next.id) started")
        let events = self.events
        let store = self.store
        let context = JobContext(
            roots: roots,
            cancellation: job.cancellation,
            report: { job.report($0, to: events) },
            registerTemporary: { try store.addTemporaryFile(next.id, $0) })
        let engine = self.engine
        Task {
            let outcome: Result<JSONValue, Problem> = await RunningJob.onThread {
                do {
                    return .success(try engine.run(next.request, secrets: next.secrets, context: context))
                } catch {
                    return .failure(LibraryEngine.problem(from: error))
                }
            }
            self.finished(job, outcome: outcome)
        }
    }

    private func finished(_ job: RunningJob, outcome: Result<JSONValue, Problem>) {
        guard running.removeValue(forKey: job.id) != nil else { return }
        let finishedAt = Timestamp.now()
        let state: JobState
        var result: JSONValue?
        var error: JSONValue?
        switch outcome {
        case .success(let value):
            state = .succeeded
            result = value.setting("elapsed-seconds", .number(finishedAt - job.startedAt))
        case .failure(let problem):
            switch (job.stopReason, problem.code) {
            case (.shutdown?, _):
                state = .interrupted
                error = .object([("code", .string("interrupted")),
                                 ("message", .string("the service stopped while the job was running"))])
            case (.cancelled?, "cancelled"):
                state = .cancelled
                error = .object([("code", .string("cancelled")), ("message", .string("cancelled"))])
            default:
                state = .failed
                error = problem.errorObject
            }
        }
        // An export keeps its partial upload on the host when it was stopped or lost its connection.
        let code = error?["code"]?.stringValue
        let resumable = job.kind == .export && (state == .cancelled || state == .interrupted || code == "io")
        let progress = events.latest(job.id).flatMap { $0.name == "progress" ? $0.data.removing("event") : nil }
        let revision = events.reserveRevision(job.id)
        do {
            let record = try store.finish(job.id, state: state, progress: progress, result: result, error: error,
                                          resumable: resumable, at: finishedAt, revision: revision)
            events.publish(job.id, name: "state", data: record.finalEvent, isFinal: true, revision: revision)
            let reason = error.flatMap { $0["message"]?.stringValue }.map { ": \($0)" } ?? ""
            logger.info("job \(job.id) \(state.rawValue)\(reason)")
        } catch {
            logger.error("recording the end of job \(job.id) failed: \(error)")
        }
        events.retire(job.id)
        startWaitingJobs()
    }

    private func finishUnstarted(_ id: String, state: JobState, message: String) throws {
        let revision = events.reserveRevision(id)
        let record = try store.finish(id, state: state, progress: nil, result: nil,
                                      error: .object([("code", .string(state.rawValue)), ("message", .string(message))]),
                                      resumable: false, at: Timestamp.now(), revision: revision)
        events.publish(id, name: "state", data: record.finalEvent, isFinal: true, revision: revision)
        events.retire(id)
        logger.info("job \(id) \(state.rawValue): \(message)")
    }

    private func overlayLiveProgress(_ record: inout JobRecord) {
        guard record.state == .running, let event = events.latest(record.id), event.name == "progress" else { return }
        record.progress = event.data.removing("event")
        record.revision = max(record.revision, event.revision)
    }

    /// `base` with the keys of the object `extra` (a resume's or retry's password and passphrase).
    private func merge(_ base: JSONValue, _ extra: JSONValue) -> JSONValue {
        guard case let .object(pairs) = extra else { return base }
        return pairs.reduce(base) { $0.setting($1.0, $1.1) }
    }
}
