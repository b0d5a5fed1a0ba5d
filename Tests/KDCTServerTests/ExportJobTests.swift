import Foundation
import KDCTExport
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// Exports through the service to the test sshd (a real OpenSSH server on loopback): the host key probed, trusted
/// after comparing, then a changed key refused; an export and a convert-and-export checked on the host's side;
/// an export killed mid-way and resumed.
@Suite(.serialized) struct ExportJobTests {
    @Test func probeTrustExportThenAChangedKeyIsRefused() throws {
        let sshd = try TestSSHServer(passwordAuthentication: true)
        let fixture = try ServeFixture()
        let knownHosts = fixture.directory.file("known_hosts")
        let source = try fixture.copyFixture("pattern.vhdx")
        let server = try fixture.start(knownHosts: knownHosts)
        let client = server.client
        let expected = try sshd.hostKeyFingerprint()

        let probe = try client.json("POST", "/api/v1/hosts/probe", .make(["host": "127.0.0.1", "port": .int(Int64(sshd.port))]))
        #expect(probe.status == 200, "\(probe.text)")
        #expect(probe.json["status"] == .string("unknown"))
        #expect(probe.json["known"] == .bool(false))
        #expect(probe.json["fingerprint"] == .string(expected))
        #expect(probe.json["key-type"] == .string("ssh-ed25519"))
        #expect(probe.json["known-hosts-name"] == .string("[127.0.0.1]:\(sshd.port)"))

        let destination = "sftp://\(TestSSHServer.user)@127.0.0.1:\(sshd.port)\(sshd.remoteDirectory)/disk.vhdx"
        let exportRequest: JSONValue = .make(["kind": "export", "source": .string(source), "destination": .string(destination),
                                              "password": .string(sshd.password)])
        // Unknown host: refused until trusted.
        let early = try client.waitForJob(try client.submit(exportRequest))
        #expect(early["state"] == .string("failed"))
        #expect(early["error"]?["code"] == .string("host-key-refused"), "\(early.text)")

        let wrong = try client.json("POST", "/api/v1/hosts/trust", .make(["host": "127.0.0.1", "port": .int(Int64(sshd.port)),
                                                                       "fingerprint": "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]))
        #expect(wrong.status == 409, "\(wrong.text)")
        let recordedBefore = (try? String(contentsOfFile: knownHosts, encoding: .utf8)) ?? ""
        #expect(recordedBefore.isEmpty, "nothing recorded for a fingerprint the host does not have")
        let trust = try client.json("POST", "/api/v1/hosts/trust", .make(["host": "127.0.0.1", "port": .int(Int64(sshd.port)),
                                                                       "fingerprint": .string(expected)]))
        #expect(trust.status == 200, "\(trust.text)")
        #expect(trust.json["recorded"] == .bool(true))
        #expect(trust.json["status"] == .string("known"))
        let keygen = try runProcess(["ssh-keygen", "-F", "[127.0.0.1]:\(sshd.port)", "-f", knownHosts])
        #expect(keygen.status == 0, "ssh-keygen finds the recorded key: \(keygen.stdout)")
        #expect(try client.json("POST", "/api/v1/hosts/probe", .make(["host": "127.0.0.1", "port": .int(Int64(sshd.port))])).json["status"]
                == .string("known"))

        let id = try client.submit(exportRequest)
        let job = try client.waitForJob(id)
        #expect(job["state"] == .string("succeeded"), "\(job.text)")
        let remote = sshd.remoteDirectory + "/disk.vhdx"
        let localSum = try fileSHA256(source)
        #expect(try fileSHA256(remote) == localSum)
        #expect(job["result"]?["sha256"] == .string(localSum))
        #expect(job["result"]?["host-key"] == .string(expected))
        #expect(job["progress"]?["phase"] != nil)

        // The key changes (the host was reinstalled, or someone is in between): probe says so, trust and exports
        // are refused, known_hosts is left as it was.
        let otherKey = fixture.directory.file("other_key")
        _ = try runProcess(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", otherKey])
        let otherLine = try String(contentsOfFile: otherKey + ".pub", encoding: .utf8).split(separator: " ").prefix(2).joined(separator: " ")
        try "[127.0.0.1]:\(sshd.port) \(otherLine)\n".write(toFile: knownHosts, atomically: true, encoding: .utf8)
        let changed = try client.json("POST", "/api/v1/hosts/probe", .make(["host": "127.0.0.1", "port": .int(Int64(sshd.port))]))
        #expect(changed.json["status"] == .string("changed"), "\(changed.text)")
        let refusedTrust = try client.json("POST", "/api/v1/hosts/trust", .make(["host": "127.0.0.1", "port": .int(Int64(sshd.port)),
                                                                              "fingerprint": .string(expected)]))
        #expect(refusedTrust.status == 409)
        #expect(refusedTrust.json["code"] == .string("host-key-refused"))
        #expect(refusedTrust.json["detail"]?.stringValue?.contains("HOST KEY CHANGED") == true)
        #expect(try String(contentsOfFile: knownHosts, encoding: .utf8) == "[127.0.0.1]:\(sshd.port) \(otherLine)\n")
        let refusedExport = try client.waitForJob(try client.submit(exportRequest.setting("destination", .string(destination + ".2"))))
        #expect(refusedExport["state"] == .string("failed"))
        #expect(refusedExport["error"]?["code"] == .string("host-key-refused"))
        #expect(refusedExport["error"]?["message"]?.stringValue?.contains("HOST KEY CHANGED") == true)
        #expect(!FileManager.default.fileExists(atPath: remote + ".2"))

        // Nothing listens: 502 names the host.
        let nobody = try client.json("POST", "/api/v1/hosts/probe", .make(["host": "127.0.0.1", "port": 1]))
        #expect(nobody.status == 502, "\(nobody.text)")
        #expect(try client.json("POST", "/api/v1/hosts/probe", .make(["host": "bad host!"])).status == 400)
    }

    @Test func convertAndExportStreamsToTheHost() throws {
        let sshd = try TestSSHServer(passwordAuthentication: true)
        let fixture = try ServeFixture()
        let knownHosts = try sshd.writeKnownHosts()
        try FileManager.default.copyItem(atPath: sshd.clientKey, toPath: fixture.path("id_ed25519"))
        let source = try fixture.copyFixture("pattern.vmdk")
        let server = try fixture.start(knownHosts: knownHosts)
        let destination = "sftp://\(TestSSHServer.user)@127.0.0.1:\(sshd.port)\(sshd.remoteDirectory)/disk.qcow2"
        let id = try server.client.submit(.make(["kind": "convert-and-export", "source": .string(source), "destination": .string(destination),
                                                 "output_format": "qcow2", "compress": true, "identity": .string(fixture.path("id_ed25519"))]))
        let job = try server.client.waitForJob(id)
        #expect(job["state"] == .string("succeeded"), "\(job.text)")
        #expect(job["result"]?["destination"] == .string(destination))
        #expect(job["result"]?["verification"] != nil)
        try expectQemuIdentical(source, sshd.remoteDirectory + "/disk.qcow2", formatA: "vmdk", formatB: "qcow2")
        try expectQemuCheckClean(sshd.remoteDirectory + "/disk.qcow2")
        #expect(listing(sshd.remoteDirectory) == ["disk.qcow2"])
    }

    @Test func exportKilledMidwayResumes() throws {
        let sshd = try TestSSHServer(passwordAuthentication: true)
        let fixture = try ServeFixture()
        let knownHosts = try sshd.writeKnownHosts()
        let source = fixture.path("big.img")
        try writeRandomData(source, megabytes: 512)
        let server = try fixture.start(knownHosts: knownHosts)
        let destination = "sftp://\(TestSSHServer.user)@127.0.0.1:\(sshd.port)\(sshd.remoteDirectory)/big.img"
        let id = try server.client.submit(.make(["kind": "export", "source": .string(source), "destination": .string(destination),
                                                 "password": .string(sshd.password)]))
        let size = 512.0 * 1024 * 1024
        let midway = try server.client.waitForJob(id, timeout: 120) { job in
            job["progress"]?["phase"] == .string("uploading") && (job["progress"]?["processed"]?.number ?? 0) > size * 0.1
        }
        #expect(server.stop(signal: SIGKILL) != nil)
        #expect(midway["state"] == .string("running"), "\(midway.text)")
        let partial = sshd.remoteDirectory + "/.big.img.kdct-export.part"
        #expect(FileManager.default.fileExists(atPath: partial))
        #expect(!FileManager.default.fileExists(atPath: sshd.remoteDirectory + "/big.img"))

        let restarted = try fixture.start(knownHosts: knownHosts)
        let client = restarted.client
        let interrupted = try client.json("GET", "/api/v1/jobs/\(id)").json
        #expect(interrupted["state"] == .string("interrupted"))
        #expect(interrupted["resumable"] == .bool(true))
        let resumed = try client.json("POST", "/api/v1/jobs/\(id)/resume", .make(["password": .string(sshd.password)]))
        #expect(resumed.status == 202, "\(resumed.text)")
        #expect(resumed.json["id"] == .string(id))
        #expect(resumed.json["request"]?["resume"] == .bool(true))
        let (_, events) = try client.events(id) { $0.name == "state" }
        let job = try client.waitForJob(id)
        #expect(job["state"] == .string("succeeded"), "\(job.text)")
        #expect(job["attempts"] == .int(2))
        let kept = job["result"]?["resumed-from"]?.number ?? 0
        #expect(kept > 0 && kept < size, "\(job.text)")
        #expect(job["result"]?["sent"]?.number.map { $0 < size } == true)
        let uploads = events.filter { $0.data["phase"] == .string("uploading") }
        #expect(!uploads.isEmpty && uploads.allSatisfy { $0.data["resumed"]?.number == kept }, "progress shows the kept bytes apart")
        #expect(try fileSHA256(sshd.remoteDirectory + "/big.img") == (try fileSHA256(source)))
        #expect(!FileManager.default.fileExists(atPath: partial))
        // A finished export does not resume again.
        #expect(try client.json("POST", "/api/v1/jobs/\(id)/resume", .make(["password": .string(sshd.password)])).status == 409)
    }
}
