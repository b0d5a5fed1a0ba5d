import Synchronization

/// The latest event of every active job, for `GET /jobs/{id}/events` (Server-Sent Events) and for the job
/// listings' live progress.
///
/// Lossy by design: a job's library thread publishes without ever waiting (the newest event replaces the previous
/// one and subscribers are only woken), and each subscriber sends whatever is newest when it is ready. A slow or
/// stalled client therefore skips intermediate progress events but never holds a conversion back, and the final
/// event is never skipped (it is the last one). Every event has a revision, increasing per job, that is the SSE
/// `id` (so `Last-Event-ID` resumes) and is stored with the job.
final class JobEvents: Sendable {
    /// One event.
    struct Event: Sendable {
        var revision: Int64
        /// `progress` or `state` (the final one).
        var name: String
        var data: JSONValue
        var isFinal: Bool
    }

    /// A subscription: `wakeups` yields whenever the job publishes (or at keepalive ticks) and ends when the
    /// service stops.
    struct Subscription: Sendable {
        let jobID: String
        let token: Int
        let counted: Bool
        let wakeups: AsyncStream<Void>
    }

    private struct Channel {
        var revision: Int64
        var latest: Event?
        var subscribers: [Int: AsyncStream<Void>.Continuation] = [:]
        var retired = false
    }

    private struct State {
        var channels: [String: Channel] = [:]
        var countedSubscribers = 0
        var nextToken = 0
        var closed = false
    }

    private let state = Mutex(State())
    /// The most SSE clients served at once.
    let maxSubscribers: Int

    init(maxSubscribers: Int) { self.maxSubscribers = maxSubscribers }

    /// Opens the channel of a queued job whose events continue from `revision`.
    func open(_ id: String, revision: Int64) {
        state.withLock { state in
            var channel = state.channels[id] ?? Channel(revision: revision)
            channel.revision = max(channel.revision, revision)
            channel.latest = nil
            channel.retired = false
            state.channels[id] = channel
        }
    }

    /// The next revision of job `id`, taken now (for an event whose data needs it first).
    func reserveRevision(_ id: String) -> Int64 {
        state.withLock { state in
            guard var channel = state.channels[id] else { return 0 }
            channel.revision += 1
            state.channels[id] = channel
            return channel.revision
        }
    }

    /// Publishes an event of job `id` (a reserved `revision`, or the next one) and wakes its subscribers;
    /// returns the event's revision. Never blocks.
    @discardableResult
    func publish(_ id: String, name: String, data: JSONValue, isFinal: Bool = false, revision: Int64? = nil) -> Int64 {
        let (published, subscribers): (Int64, [AsyncStream<Void>.Continuation]) = state.withLock { state in
            guard var channel = state.channels[id] else { return (0, []) }
            if let revision { channel.revision = max(channel.revision, revision) } else { channel.revision += 1 }
            channel.latest = Event(revision: channel.revision, name: name, data: data, isFinal: isFinal)
            state.channels[id] = channel
            return (channel.revision, Array(channel.subscribers.values))
        }
        for subscriber in subscribers { subscriber.yield() }
        return published
    }

    /// The newest event of job `id`, when its channel is open.
    func latest(_ id: String) -> Event? {
        state.withLock { $0.channels[id]?.latest }
    }

    /// True while job `id` has an open channel (it is queued or running, or just finished).
    func isOpen(_ id: String) -> Bool { state.withLock { $0.channels[id] != nil } }

    /// The job's channel may go once its last subscriber leaves (its final state is in the store).
    func retire(_ id: String) {
        state.withLock { state in
            guard var channel = state.channels[id] else { return }
            if channel.subscribers.isEmpty {
                state.channels[id] = nil
            } else {
                channel.retired = true
                state.channels[id] = channel
            }
        }
    }

    /// Subscribes to job `id`'s channel. `counted` subscriptions (SSE clients) are bounded: past
    /// `maxSubscribers` the answer is 503. Nil when the channel is not open (the job is finished: read the store).
    func subscribe(_ id: String, counted: Bool) throws(Problem) -> Subscription? {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let token: Int? = try state.withLock { state throws(Problem) -> Int? in
            if state.closed { throw Problem(.serviceUnavailable, code: "unavailable", "the service is stopping") }
            guard var channel = state.channels[id] else { return nil }
            if counted {
                guard state.countedSubscribers < maxSubscribers else {
                    var problem = Problem(.serviceUnavailable, code: "too-many-event-streams",
                                          "\(maxSubscribers) event streams are already open; close one or poll GET /api/v1/jobs/\(id)")
                    problem.headers[.retryAfter] = "5"
                    throw problem
                }
                state.countedSubscribers += 1
            }
            state.nextToken += 1
            channel.subscribers[state.nextToken] = continuation
            state.channels[id] = channel
            return state.nextToken
        }
        guard let token else { return nil }
        continuation.yield()  // look at the latest event right away
        return Subscription(jobID: id, token: token, counted: counted, wakeups: stream)
    }

    /// Ends a subscription.
    func unsubscribe(_ subscription: Subscription) {
        let continuation: AsyncStream<Void>.Continuation? = state.withLock { state in
            guard var channel = state.channels[subscription.jobID],
                  let continuation = channel.subscribers.removeValue(forKey: subscription.token) else { return nil }
            if subscription.counted { state.countedSubscribers -= 1 }
            state.channels[subscription.jobID] = channel.retired && channel.subscribers.isEmpty ? nil : channel
            return continuation
        }
        continuation?.finish()
    }

    /// Wakes every subscriber (the SSE streams' keepalive).
    func wakeAll() {
        let all = state.withLock { $0.channels.values.flatMap { $0.subscribers.values } }
        for continuation in all { continuation.yield() }
    }

    /// Ends every subscription and refuses new ones (the service is stopping; final events are published).
    func close() {
        let all = state.withLock { state in
            state.closed = true
            return state.channels.values.flatMap { $0.subscribers.values }
        }
        for continuation in all { continuation.finish() }
    }

    /// Subscriber counts, for the status endpoint.
    var streamCount: Int { state.withLock { $0.countedSubscribers } }
}
