import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOEmbedded
import Synchronization
@testable import KDCTServer
import Testing

/// `EventStream` against a job that has finished while another client's stream still holds its channel open (the
/// channel goes only when its last subscriber leaves): a client that already has the final event gets 204 at once,
/// and one that does not gets the final event and the end of the stream, never a stream that waits forever.
@Suite struct EventStreamTests {
    /// A finished job's channel, held open by another subscriber; returns the final event's revision.
    static func finishedJobHeldOpen(_ events: JobEvents) throws -> (final: Int64, holder: JobEvents.Subscription) {
        events.open("job", revision: 1)
        let holder = try #require(try events.subscribe("job", counted: true))
        events.publish("job", name: "progress", data: .object([("event", .string("progress"))]))
        let final = events.publish("job", name: "state", data: .object([("event", .string("done"))]), isFinal: true)
        events.retire("job")
        #expect(events.isOpen("job"), "the other subscriber holds the channel")
        return (final, holder)
    }

    @Test func aClientWithTheFinalEventGetsNoContent() async throws {
        let events = JobEvents(maxSubscribers: 8)
        let (final, holder) = try Self.finishedJobHeldOpen(events)
        defer { events.unsubscribe(holder) }
        let response = try await EventStream.response(for: "job", lastEventID: final, events: events,
                                                      stored: { _ in nil }, channel: EmbeddedChannel())
        #expect(response.status == .noContent)
    }

    @Test func aClientWithoutItGetsTheFinalEventAndTheEnd() async throws {
        let events = JobEvents(maxSubscribers: 8)
        let (final, holder) = try Self.finishedJobHeldOpen(events)
        defer { events.unsubscribe(holder) }
        let response = try await EventStream.response(for: "job", lastEventID: final - 1, events: events,
                                                      stored: { _ in nil }, channel: EmbeddedChannel())
        #expect(response.status == .ok)
        // The body ends after the final event (it would wait for the next wakeup, 15 s away, if it did not).
        let body = Collected()
        try await response.body.write(CollectingWriter(into: body))
        let text = body.text
        #expect(text.contains("id: \(final)\nevent: state"), "\(text)")
        #expect(body.finished)
    }
}

/// What a response body wrote.
final class Collected: Sendable {
    private let state = Mutex<(text: String, finished: Bool)>(("", false))
    var text: String { state.withLock { $0.text } }
    var finished: Bool { state.withLock { $0.finished } }
    func append(_ buffer: ByteBuffer) { state.withLock { $0.text += String(buffer: buffer) } }
    func finish() { state.withLock { $0.finished = true } }
}

/// A response body writer that keeps what it is given.
struct CollectingWriter: ResponseBodyWriter {
    let into: Collected
    mutating func write(_ buffer: ByteBuffer) async throws { into.append(buffer) }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws { into.finish() }
}
