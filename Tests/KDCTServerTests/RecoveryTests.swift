import Foundation
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// What a stop leaves behind: SIGINT/SIGTERM (cancel, clean up, record `interrupted`, exit 0) and SIGKILL (the next
/// start records `interrupted` and removes the temporary files the job had recorded).
@Suite(.serialized) struct RecoveryTests {
    /// Starts a long compressed conversion and waits until it has written part of its output.
    private func startLongConversion(_ fixture: ServeFixture, _ server: ServeProcess, name: String) throws -> String {
        let id = try server.client.submit(.make(["kind": "convert", "source": .string(fixture.path("big.raw")),
                                                 "destination": .string(fixture.path(name)), "output_format": "qcow2",
                                                 "compress": true]))
        let job = try server.client.waitForJob(id) { ($0["progress"]?["processed"]?.number ?? 0) > 0 }
        #expect(job["state"] == .string("running"), "\(job.text)")
        #expect(listing(fixture.root).contains { $0.hasPrefix(".\(name).kdct-") && $0.hasSuffix(".part") })
        return id
    }

    @Test func sigkillDuringAConversionIsRecoveredAtTheNextStart() throws {
        let fixture = try ServeFixture()
        try writeRandomData(fixture.path("big.raw"), megabytes: 512)
        let server = try fixture.start()
        let id = try startLongConversion(fixture, server, name: "out.qcow2")
        let queued = try server.client.submit(.make(["kind": "convert", "source": .string(fixture.path("big.raw")),
                                                     "destination": .string(fixture.path("later.raw")), "output_format": "raw"]))
        #expect(server.stop(signal: SIGKILL) != nil)
        // Nothing ran after the kill: the temporary file is still there.
        #expect(listing(fixture.root).contains { $0.hasSuffix(".part") })

        let restarted = try fixture.start()
        let job = try restarted.client.json("GET", "/api/v1/jobs/\(id)").json
        #expect(job["state"] == .string("interrupted"), "\(job.text)")
        #expect(job["error"]?["code"] == .string("interrupted"))
        #expect(job["resumable"] == .bool(false))
        #expect(try restarted.client.json("GET", "/api/v1/jobs/\(queued)").json["state"] == .string("interrupted"))
        #expect(!FileManager.default.fileExists(atPath: fixture.path("out.qcow2")))
        #expect(!FileManager.default.fileExists(atPath: fixture.path("later.raw")))
        #expect(listing(fixture.root).sorted() == ["big.raw"], "\(listing(fixture.root))")
        #expect(restarted.log.contains("now interrupted"))
        // The recovered job's stream ends with its final state at once.
        let (_, events) = try restarted.client.events(id)
        #expect(events.map(\.name) == ["state"])
        #expect(events.first?.data["state"] == .string("interrupted"))
        // And it can be retried.
        let retry = try restarted.client.json("POST", "/api/v1/jobs/\(queued)/retry")
        #expect(retry.status == 202)
        #expect(try restarted.client.waitForJob(retry.json["id"]?.stringValue ?? "")["state"] == .string("succeeded"))
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func signalCancelsRunningJobsAndExitsZero(_ signal: Int32) throws {
        let fixture = try ServeFixture()
        try writeRandomData(fixture.path("big.raw"), megabytes: 512)
        let server = try fixture.start()
        let id = try startLongConversion(fixture, server, name: "out.qcow2")
        let stream = try server.client.openEvents(id)
        let queued = try server.client.submit(.make(["kind": "convert", "source": .string(fixture.path("big.raw")),
                                                     "destination": .string(fixture.path("later.raw")), "output_format": "raw"]))
        let started = Date()
        #expect(server.stop(signal: signal, timeout: 30) == 0)
        #expect(Date().timeIntervalSince(started) < 15)
        // The open event stream got the final state before the server went away.
        var last: SSEEvent?
        while let event = try? stream.next() { last = event }
        #expect(last?.name == "state" && last?.data["state"] == .string("interrupted"), "\(last?.data.text ?? "nothing")")
        #expect(!FileManager.default.fileExists(atPath: fixture.path("out.qcow2")))
        #expect(listing(fixture.root).sorted() == ["big.raw"], "\(listing(fixture.root))")

        let restarted = try fixture.start()
        #expect(try restarted.client.json("GET", "/api/v1/jobs/\(id)").json["state"] == .string("interrupted"))
        #expect(try restarted.client.json("GET", "/api/v1/jobs/\(queued)").json["state"] == .string("interrupted"))
        #expect(!restarted.log.contains("now interrupted"), "nothing was left for the next start to recover")
    }

    @Test func oneServicePerStateFolder() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let second = try CLI.run(["serve", "--listen", "127.0.0.1:0", "--root", fixture.root, "--state", fixture.state])
        #expect(second.status == 1)
        #expect(second.stderr.contains("another kdct-native serve is using the state directory"), "\(second.stderr)")
        #expect(try server.client.json("GET", "/api/v1/status").status == 200)
    }
}
