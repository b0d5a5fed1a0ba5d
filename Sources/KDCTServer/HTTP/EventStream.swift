import Hummingbird
import HTTPTypes
import NIOCore

/// `GET /jobs/{id}/events`: Server-Sent Events with the `--progress json` objects (`event: progress`), then one
/// final `event: state` (`done` or `failed`, with the job's state), then the stream ends.
///
/// Each event has an `id` (the job's revision); a client reconnecting with `Last-Event-ID` gets only what is newer,
/// and 204 when it already has the final event (which tells an EventSource to stop). While nothing changes a
/// comment line is sent every 15 s. A client that stops reading is disconnected after `writeTimeout` (a stalled
/// write closes its connection), so it cannot hold one of the bounded stream slots forever; it never holds a
/// job back (see `JobEvents`).
enum EventStream {
    /// How long one write may wait for a client that does not read.
    static let writeTimeout: TimeAmount = .seconds(30)

    /// The response to a client that has seen events up to `lastEventID`. `stored` reads a job's record from the
    /// store (`JobQueue.current`), for a job whose channel is closed.
    static func response(for id: String, lastEventID: Int64?, events: JobEvents,
                         stored: @escaping @Sendable (String) async throws -> JobRecord?,
                         channel: any Channel) async throws -> Response {
        let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-store"]
        let last = lastEventID ?? -1
        guard let subscription = try events.subscribe(id, counted: true) else {
            // Finished (its events channel is closed): the final event, unless the client already has it.
            guard let record = try await stored(id) else { throw Problem.notFound("no job \(id)") }
            guard record.state.isFinished else {
                throw Problem(.serviceUnavailable, code: "unavailable", "the job's events are not available; poll GET /api/v1/jobs/\(record.id)")
            }
            guard last < record.revision else { return Response(status: .noContent, headers: headers) }
            let text = format(finalEvent(of: record))
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        // Finished, with its channel still open for another client's stream: 204 as above when this client has
        // the final event (otherwise its stream would wait for an event that never comes).
        if let latest = events.latest(id), latest.isFinal, last >= latest.revision {
            events.unsubscribe(subscription)
            return Response(status: .noContent, headers: headers)
        }
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            var sent = last
            var finished = false
            do {
                try await write("retry: 2000\n\n", to: &writer, channel: channel)
                for await _ in subscription.wakeups {
                    guard let event = events.latest(id), event.revision > sent || event.isFinal else {
                        try await write(": keepalive\n\n", to: &writer, channel: channel)
                        continue
                    }
                    if event.revision > sent {
                        try await write(format(event), to: &writer, channel: channel)
                        sent = event.revision
                    }
                    // Sent now, or the client had it already.
                    if event.isFinal {
                        finished = true
                        break
                    }
                }
                // The service is stopping: its jobs' final events were published before the streams closed.
                if !finished, let event = events.latest(id), event.revision > sent, event.isFinal {
                    try await write(format(event), to: &writer, channel: channel)
                } else if !finished, let record = try? await stored(id), record.state.isFinished, record.revision > sent {
                    try await write(format(finalEvent(of: record)), to: &writer, channel: channel)
                }
                events.unsubscribe(subscription)
                try await writer.finish(nil)
            } catch {
                events.unsubscribe(subscription)
                throw error
            }
        })
    }

    /// The final event of a finished job, from its stored record (for a job whose channel is gone).
    static func finalEvent(of record: JobRecord) -> JobEvents.Event {
        JobEvents.Event(revision: record.revision, name: "state", data: record.finalEvent, isFinal: true)
    }

    /// One event in the SSE wire format.
    static func format(_ event: JobEvents.Event) -> String {
        "id: \(event.revision)\nevent: \(event.name)\ndata: \(event.data.text)\n\n"
    }

    /// Writes `text`, closing the connection if the client has not taken it within `writeTimeout`.
    private static func write(_ text: String, to writer: inout any ResponseBodyWriter, channel: any Channel) async throws {
        let watchdog = channel.eventLoop.scheduleTask(in: writeTimeout) { channel.close(promise: nil) }
        defer { watchdog.cancel() }
        try await writer.write(ByteBuffer(string: text))
    }
}
