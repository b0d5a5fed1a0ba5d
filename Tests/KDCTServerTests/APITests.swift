import Foundation
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// Every endpoint against the real server (`kdct-native serve` on an ephemeral loopback port), with qemu-img as
/// the oracle for what the jobs write.
@Suite(.serialized) struct APITests {
    @Test func formatsStatusAndOpenAPIDocument() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let client = server.client

        let formats = try client.json("GET", "/api/v1/formats")
        #expect(formats.status == 200)
        guard case let .array(list)? = formats.json["formats"] else { Issue.record("no formats: \(formats.text)"); return }
        let byName = Dictionary(list.compactMap { item in item["name"]?.stringValue.map { ($0, item) } }) { a, _ in a }
        #expect(byName["qcow2"]?["write"] == .bool(true))
        #expect(byName["vmdk"]?["read"] == .bool(true) && byName["vmdk"]?["write"] == .bool(false))
        #expect(byName["vhd"]?["qemu-name"] == .string("vpc"))

        let status = try client.json("GET", "/api/v1/status")
        #expect(status.status == 200)
        #expect(status.json["roots"] == .array([.string(RootSet.canonicalForTests(fixture.root))]))
        #expect(status.json["jobs"]?["workers"] == .int(1))

        // The served document is the committed one.
        let served = try client.json("GET", "/api/v1/openapi.json")
        #expect(served.status == 200)
        let committed = try Data(contentsOf: packageRoot.appendingPathComponent("Sources/KDCTServer/Resources/openapi.json"))
        #expect(served.json == (try JSONValue.parse(Array(committed))))
        #expect(served.json["openapi"] == .string("3.1.0"))
    }

    @Test func listingShowsFormatsProbedFromContent() throws {
        let fixture = try ServeFixture()
        try fixture.copyFixture("pattern.vmdk", as: "disk.vmdk")
        try fixture.copyFixture("pattern-v2.qcow2", as: "misnamed.raw")  // a qcow2 whatever its name says
        try "notes\n".write(toFile: fixture.path("notes.txt"), atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: fixture.path("sub"), withIntermediateDirectories: false)
        let outside = fixture.directory.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: fixture.path("escape"), withDestinationPath: outside)
        let server = try fixture.start()
        let client = server.client

        let roots = try client.json("GET", "/api/v1/files")
        #expect(roots.status == 200)
        #expect(roots.json["path"] == .null)
        guard case let .array(rootEntries)? = roots.json["entries"] else { Issue.record("\(roots.text)"); return }
        #expect(rootEntries.compactMap { $0["path"]?.stringValue } == [RootSet.canonicalForTests(fixture.root)])

        let listing = try client.json("GET", "/api/v1/files?path=" + percentEncoded(fixture.root))
        #expect(listing.status == 200, "\(listing.text)")
        guard case let .array(entries)? = listing.json["entries"] else { Issue.record("\(listing.text)"); return }
        let names = entries.compactMap { $0["name"]?.stringValue }
        #expect(names.first == "sub", "folders first: \(names)")
        func entry(_ name: String) -> JSONValue? { entries.first { $0["name"]?.stringValue == name } }
        #expect(entry("misnamed.raw")?["format"] == .string("qcow2"))
        #expect(entry("disk.vmdk")?["format"] == .string("vmdk"))
        let info = try qemuImg("info", "--output", "json", fixture.path("disk.vmdk"))
        let expectedSize = (try JSONValue.parse(Array(info.stdout.utf8)))["virtual-size"]
        #expect(entry("disk.vmdk")?["virtual-size"] == expectedSize)
        #expect(entry("notes.txt")?["format"] == nil)
        #expect(entry("notes.txt")?["size"] == .int(6))
        #expect(entry("escape")?["kind"] == .string("symlink"))
        #expect(entry("escape")?["inside-roots"] == .bool(false))
        #expect(listing.json["free"]?.number ?? 0 > 0)

        // A file is not a folder; a missing folder is 404.
        #expect(try client.json("GET", "/api/v1/files?path=" + percentEncoded(fixture.path("notes.txt"))).status == 400)
        #expect(try client.json("GET", "/api/v1/files?path=" + percentEncoded(fixture.path("missing"))).status == 404)

        let content = try client.send("GET", "/api/v1/files/content?path=" + percentEncoded(fixture.path("notes.txt")))
        #expect(content.status == 200 && content.text == "notes\n")
        #expect(content.header("Content-Type")?.hasPrefix("text/plain") == true)
        #expect(content.header("Content-Security-Policy")?.contains("sandbox") == true)
        let binary = try client.send("GET", "/api/v1/files/content?path=" + percentEncoded(fixture.path("disk.vmdk")))
        #expect(binary.status == 422)
    }

    @Test func inspectIsInfoJSONWithChainReferencesAndWarnings() throws {
        let fixture = try ServeFixture()
        let vmdk = try fixture.copyFixture("pattern.vmdk")
        let child = try fixture.copyFixture("chain-child.qcow2")
        try fixture.copyFixture("pattern-v2.qcow2")
        try FileManager.default.createDirectory(atPath: fixture.path("orphan"), withIntermediateDirectories: false)
        let orphan = fixture.path("orphan/child.qcow2")
        try FileManager.default.copyItem(atPath: child, toPath: orphan)  // its backing file is not beside it
        let server = try fixture.start()
        let client = server.client

        // The same object as `info --output json`, plus what the service adds.
        let inspected = try client.json("POST", "/api/v1/inspect", .make(["path": .string(vmdk)]))
        #expect(inspected.status == 200, "\(inspected.text)")
        let cli = try CLI.run(["info", "--output", "json", RootSet.canonicalForTests(vmdk)])
        let expected = try JSONValue.parse(Array(cli.stdout.utf8))
        guard case let .object(expectedPairs) = expected else { Issue.record("\(cli.stdout)"); return }
        for (key, value) in expectedPairs where key != "references" {
            #expect(inspected.json[key] == value, "key \(key)")
        }
        #expect(inspected.json["producer"] != nil)

        // A chain whose backing file the policy allows: two layers, the reference allowed and opened.
        let chained = try client.json("POST", "/api/v1/inspect", .make(["path": .string(child)]))
        #expect(chained.status == 200, "\(chained.text)")
        guard case let .array(layers)? = chained.json["chain"], case let .array(references)? = chained.json["references"] else {
            Issue.record("\(chained.text)"); return
        }
        #expect(layers.count == 2)
        #expect(layers.last?["filename"]?.stringValue?.hasSuffix("pattern-v2.qcow2") == true)
        #expect(references.first?["allowed"] == .bool(true))
        #expect(references.first?["opened"] == .bool(true))
        #expect(chained.json["backing-filename"] == .string("pattern-v2.qcow2"))

        // A missing backing file: a warning naming where it was looked for, with the fix.
        let missing = try client.json("POST", "/api/v1/inspect", .make(["path": .string(orphan)]))
        #expect(missing.status == 200, "\(missing.text)")
        guard case let .array(warnings)? = missing.json["warnings"] else { Issue.record("\(missing.text)"); return }
        let notFound = warnings.first { $0["code"] == .string("not-found") }
        #expect(notFound?["message"]?.stringValue?.contains("looked for") == true, "\(warnings)")
        #expect(notFound?["hint"]?.stringValue?.contains("parents") == true)
        #expect(missing.json["chain"].flatMap { if case let .array(items) = $0 { return items.count } else { return nil } } == 1)

        // Strict references: the reference is reported as not allowed.
        let strict = try client.json("POST", "/api/v1/inspect", .make(["path": .string(child), "references": "none"]))
        #expect(strict.status == 200)
        guard case let .array(strictReferences)? = strict.json["references"] else { Issue.record("\(strict.text)"); return }
        #expect(strictReferences.first?["allowed"] == .bool(false))
        #expect(strictReferences.first?["reason"]?.stringValue?.isEmpty == false)

        // Not an image: 422 with the library's kind; a folder is refused; unknown fields are named.
        try "not an image".write(toFile: fixture.path("text.vmdk"), atomically: true, encoding: .utf8)
        let bad = try client.json("POST", "/api/v1/inspect", .make(["path": .string(fixture.path("text.vmdk"))]))
        #expect(bad.status == 422)
        #expect(bad.json["code"] == .string("invalid-format"))
        #expect(bad.header("Content-Type") == "application/problem+json")
        let typo = try client.json("POST", "/api/v1/inspect", .make(["path": .string(vmdk), "formt": "vmdk"]))
        #expect(typo.status == 400 && typo.json["field"] == .string("formt"))
    }

    @Test func inspectApplianceShowsTheVM() throws {
        let fixture = try ServeFixture()
        let builder = ApplianceBuilder(dir: fixture.directory)
        let ova = try builder.ova(disks: [Fixtures.path("pattern.vmdk")], uris: [nil], fileName: "root/vm.ova")
        let server = try fixture.start()
        let answer = try server.client.json("POST", "/api/v1/inspect", .make(["path": .string(ova)]))
        #expect(answer.status == 200, "\(answer.text)")
        #expect(answer.json["appliance"] == .bool(true))
        #expect(answer.json["name"] == .string("testvm"))
        #expect(answer.json["cpus"] == .int(3))
        #expect(answer.json["memory"] == .uint(1536 << 20) || answer.json["memory"] == .int(1536 << 20))
        guard case let .array(disks)? = answer.json["disks"], case let .array(nics)? = answer.json["nics"] else {
            Issue.record("\(answer.text)"); return
        }
        #expect(disks.count == 1 && nics.count == 2)
        #expect(answer.json["firmware"] != nil && answer.json["operating-system"]?["name"] != nil)
    }

    @Test func measureMatchesQemuImgMeasure() throws {
        let fixture = try ServeFixture()
        let vmdk = try fixture.copyFixture("pattern.vmdk")
        let vhdx = try fixture.copyFixture("pattern.vhdx")
        let server = try fixture.start()
        for (image, format, cluster) in [(vmdk, "qcow2", 65536), (vhdx, "qcow2", 65536), (vhdx, "qcow2", 4096), (vmdk, "raw", 65536)] {
            var request: JSONValue = .make(["path": .string(image), "output_format": .string(format), "destination": .string(fixture.root)])
            if format == "qcow2" { request = request.setting("cluster_size", .int(Int64(cluster))) }
            let answer = try server.client.json("POST", "/api/v1/measure", request)
            #expect(answer.status == 200, "\(answer.text)")
            var arguments = ["measure", "--output", "json", "-O", format]
            if format == "qcow2" { arguments += ["-o", "cluster_size=\(cluster)"] }
            let qemu = try JSONValue.parse(Array(try qemuImg(arguments + [image]).stdout.utf8))
            #expect(answer.json["required"] == qemu["required"], "\(image) \(format) \(cluster): \(answer.text) vs \(qemu.text)")
            #expect(answer.json["fully-allocated"] == qemu["fully-allocated"], "\(image) \(format) \(cluster)")
            #expect(answer.json["free"]?.number ?? 0 > 0)
            #expect(answer.json["fits"] == .bool(true))
        }
    }

    @Test func convertJobsOfEachOutputFormat() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.vhdx")
        let server = try fixture.start()
        let client = server.client
        let cases: [(String, JSONValue)] = [
            ("out.raw", .make(["output_format": "raw"])),
            ("out.qcow2", .make(["output_format": "qcow2"])),
            ("out-zstd.qcow2", .make(["output_format": "qcow2", "compress": true, "compression_type": "zstd", "cluster_size": 4096])),
        ]
        for (name, options) in cases {
            var request: JSONValue = .make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path(name))])
            if case let .object(pairs) = options { for (key, value) in pairs { request = request.setting(key, value) } }
            let id = try client.submit(request)
            let job = try client.waitForJob(id)
            #expect(job["state"] == .string("succeeded"), "\(name): \(job.text)")
            #expect(job["kind"] == .string("convert"))
            #expect(job["result"]?["output"] == .string(RootSet.canonicalForTests(fixture.path(name))))
            #expect(job["progress"]?["percent"]?.number == 100)
            #expect(job["progress"]?["processed"] == job["progress"]?["total"])
            #expect(job["result"]?["elapsed-seconds"]?.number != nil)
            let format = name.hasSuffix(".raw") ? "raw" : "qcow2"
            try expectQemuIdentical(source, fixture.path(name), formatA: "vhdx", formatB: format)
            if format == "qcow2" { try expectQemuCheckClean(fixture.path(name)) }
        }
        #expect(!listing(fixture.root).contains { $0.hasSuffix(".part") })

        // An existing destination without force: the job fails with the library's error, the file is untouched.
        let before = try Data(contentsOf: URL(fileURLWithPath: fixture.path("out.raw")))
        let id = try client.submit(.make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path("out.raw")),
                                          "output_format": "qcow2"]))
        let failed = try client.waitForJob(id)
        #expect(failed["state"] == .string("failed"))
        #expect(failed["error"]?["code"] == .string("already-exists"))
        #expect(failed["error"]?["file"]?.stringValue?.hasSuffix("out.raw") == true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: fixture.path("out.raw"))) == before)

        // Retry after removing it: a new job with the same request, pointing at the failed one.
        try FileManager.default.removeItem(atPath: fixture.path("out.raw"))
        let retried = try client.json("POST", "/api/v1/jobs/\(id)/retry")
        #expect(retried.status == 202, "\(retried.text)")
        #expect(retried.json["retry_of"] == .string(id))
        let retriedJob = try client.waitForJob(retried.json["id"]?.stringValue ?? "")
        #expect(retriedJob["state"] == .string("succeeded"), "\(retriedJob.text)")
        try expectQemuIdentical(source, fixture.path("out.raw"), formatA: "vhdx", formatB: "qcow2")

        // Conversions do not resume.
        #expect(try client.json("POST", "/api/v1/jobs/\(id)/resume").status == 409)
    }

    @Test func applianceJobWritesDisksAndDomain() throws {
        let fixture = try ServeFixture()
        let builder = ApplianceBuilder(dir: fixture.directory)
        let ova = try builder.ova(disks: [Fixtures.path("pattern.vmdk"), Fixtures.path("pattern.vdi")], uris: [nil, nil],
                                  fileName: "root/vm.ova")
        let server = try fixture.start()
        let client = server.client
        let id = try client.submit(.make(["kind": "appliance", "source": .string(ova), "destination": .string(fixture.path("vm")),
                                          "output_format": "qcow2"]))
        let job = try client.waitForJob(id)
        #expect(job["state"] == .string("succeeded"), "\(job.text)")
        guard case let .array(disks)? = job["result"]?["disks"], let xmlPath = job["result"]?["domain-xml"]?.stringValue else {
            Issue.record("\(job.text)"); return
        }
        #expect(disks.count == 2)
        for (disk, source) in zip(disks, [Fixtures.path("pattern.vmdk"), Fixtures.path("pattern.vdi")]) {
            let path = disk["path"]?.stringValue ?? ""
            try expectQemuIdentical(source, path, formatB: "qcow2")
            try expectQemuCheckClean(path)
        }
        try expectValidDomainXML(xmlPath)
        #expect(job["result"]?["domain-xml-text"]?.stringValue?.contains("<domain") == true)
        let viewed = try client.send("GET", "/api/v1/files/content?path=" + percentEncoded(xmlPath))
        #expect(viewed.status == 200 && viewed.text.contains("<domain"))
        #expect(!listing(fixture.path("vm")).contains { $0.hasPrefix(".") }, "staging files left: \(listing(fixture.path("vm")))")

        // A disk image is not an appliance, and an appliance is not a disk image.
        let wrong = try client.json("POST", "/api/v1/jobs", .make(["kind": "appliance", "source": .string(try fixture.copyFixture("pattern.vmdk")),
                                                                   "destination": .string(fixture.path("x"))]))
        #expect(wrong.status == 422)
        let wrongKind = try client.json("POST", "/api/v1/jobs", .make(["kind": "convert", "source": .string(ova),
                                                                       "destination": .string(fixture.path("x.qcow2")), "output_format": "qcow2"]))
        #expect(wrongKind.status == 422)
    }

    @Test func jobListingIsNewestFirstAndPaged() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.qcow")
        let server = try fixture.start()
        let client = server.client
        var ids: [String] = []
        for index in 0..<3 {
            ids.append(try client.submit(.make(["kind": "convert", "source": .string(source),
                                                "destination": .string(fixture.path("o\(index).raw")), "output_format": "raw"])))
        }
        for id in ids { _ = try client.waitForJob(id) }
        let all = try client.json("GET", "/api/v1/jobs")
        #expect(all.status == 200)
        guard case let .array(jobs)? = all.json["jobs"] else { Issue.record("\(all.text)"); return }
        #expect(jobs.compactMap { $0["id"]?.stringValue } == ids.reversed())
        #expect(all.json["next_before"] == .null)

        let page = try client.json("GET", "/api/v1/jobs?limit=2")
        guard case let .array(first)? = page.json["jobs"], case let .int(next)? = page.json["next_before"] else {
            Issue.record("\(page.text)"); return
        }
        #expect(first.compactMap { $0["id"]?.stringValue } == [ids[2], ids[1]])
        let rest = try client.json("GET", "/api/v1/jobs?limit=2&before=\(next)")
        guard case let .array(second)? = rest.json["jobs"] else { Issue.record("\(rest.text)"); return }
        #expect(second.compactMap { $0["id"]?.stringValue } == [ids[0]])
        let succeeded = try client.json("GET", "/api/v1/jobs?state=succeeded")
        #expect(succeeded.json["jobs"].map { if case let .array(items) = $0 { return items.count } else { return 0 } } == 3)
        #expect(try client.json("GET", "/api/v1/jobs?state=done").status == 400)
        #expect(try client.json("GET", "/api/v1/jobs?limit=0").status == 400)
        #expect(try client.json("GET", "/api/v1/jobs?sort=name").status == 400)
    }

    @Test func eventStreamRunsToTheFinalEventAndResumes() throws {
        let fixture = try ServeFixture()
        let source = fixture.path("random.raw")
        try writeRandomData(source, megabytes: 96)
        let server = try fixture.start()
        let client = server.client
        let id = try client.submit(.make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path("out.qcow2")),
                                          "output_format": "qcow2", "compress": true]))
        // Read two events, drop the connection, and continue with Last-Event-ID.
        let firstStream = try client.openEvents(id)
        #expect(firstStream.head.status == 200)
        #expect(firstStream.head.header("Content-Type") == "text/event-stream")
        var early: [SSEEvent] = []
        while early.count < 2, let event = try firstStream.next() { early.append(event) }
        guard let lastSeen = early.last?.id else { Issue.record("no event ids: \(early)"); return }
        let (head, events) = try client.events(id, lastEventID: lastSeen) { $0.name == "state" }
        #expect(head.status == 200)
        let all = early + events
        let ids = all.compactMap(\.id)
        #expect(ids.count == all.count && ids == ids.sorted() && Set(ids).count == ids.count, "ids \(ids)")
        #expect(events.first.flatMap(\.id).map { $0 > lastSeen } == true)
        let progress = all.filter { $0.name == "progress" }
        #expect(!progress.isEmpty)
        for event in progress {
            #expect(event.data["event"] == .string("progress"))
            #expect(event.data["phase"] == .string("converting"))
            for key in ["processed", "total", "percent", "elapsed-seconds", "bytes-per-second", "data-read"] {
                #expect(event.data[key]?.number != nil, "\(key) in \(event.data.text)")
            }
        }
        #expect(progress.filter { $0.data["percent"]?.number == 100 }.count <= 1)
        guard let final = all.last else { return }
        #expect(final.name == "state")
        #expect(final.data["event"] == .string("done"))
        #expect(final.data["state"] == .string("succeeded"))
        #expect(final.data["output"] == .string(RootSet.canonicalForTests(fixture.path("out.qcow2"))))
        #expect(all.filter { $0.name == "state" }.count == 1)

        // After the final event: 204 for a client that has it, the final event again for one that does not.
        let done = try client.send("GET", "/api/v1/jobs/\(id)/events", headers: [("Last-Event-ID", String(final.id ?? 0))])
        #expect(done.status == 204)
        let (_, replay) = try client.events(id, lastEventID: lastSeen)
        #expect(replay.map(\.name) == ["state"])
        try expectQemuIdentical(source, fixture.path("out.qcow2"), formatA: "raw", formatB: "qcow2")
        #expect(try client.send("GET", "/api/v1/jobs/\(id)/events", headers: [("Last-Event-ID", "x")]).status == 400)
    }

    @Test func cancellingRemovesTheOutput() throws {
        let fixture = try ServeFixture()
        let source = fixture.path("big.raw")
        try writeRandomData(source, megabytes: 512)
        let server = try fixture.start()
        let client = server.client
        let destination = fixture.path("big.qcow2")
        let running = try client.submit(.make(["kind": "convert", "source": .string(source), "destination": .string(destination),
                                               "output_format": "qcow2", "compress": true]))
        let queued = try client.submit(.make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path("second.raw")),
                                              "output_format": "raw"]))
        // The second waits (one job at a time): cancelling it is immediate.
        let cancelledQueued = try client.json("DELETE", "/api/v1/jobs/\(queued)")
        #expect(cancelledQueued.status == 200)
        #expect(cancelledQueued.json["state"] == .string("cancelled"))

        let started = try client.waitForJob(running) { ($0["progress"]?["processed"]?.number ?? 0) > 0 }
        #expect(started["state"] == .string("running"), "\(started.text)")
        #expect(listing(fixture.root).contains { $0.hasPrefix(".big.qcow2.kdct-") && $0.hasSuffix(".part") })
        let cancelled = try client.json("DELETE", "/api/v1/jobs/\(running)")
        #expect(cancelled.status == 200, "\(cancelled.text)")
        #expect(cancelled.json["state"] == .string("cancelled"))
        #expect(cancelled.json["error"]?["code"] == .string("cancelled"))
        #expect(!FileManager.default.fileExists(atPath: destination))
        #expect(!FileManager.default.fileExists(atPath: fixture.path("second.raw")))
        #expect(!listing(fixture.root).contains { $0.hasSuffix(".part") }, "\(listing(fixture.root))")
        #expect(try client.json("DELETE", "/api/v1/jobs/\(running)").status == 409)
    }

    @Test func malformedRequestsAreFourHundreds() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.qcow")
        let server = try fixture.start()
        let client = server.client
        let base: JSONValue = .make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path("o.raw"))])
        let cases: [(JSONValue, Int, String?)] = [
            (base, 400, "output_format"),
            (base.setting("output_format", "vmdk"), 400, "output_format"),
            (base.setting("output_format", "raw").setting("compress", true), 400, "compress"),
            (base.setting("output_format", "qcow2").setting("cluster_size", 1000), 400, "cluster_size"),
            (base.setting("output_format", "qcow2").setting("outputformat", "raw"), 400, "outputformat"),
            (base.setting("output_format", "raw").setting("password", "x"), 400, "password"),
            (base.setting("kind", "copy"), 400, "kind"),
            (base.setting("output_format", "raw").setting("source_format", "iso"), 400, "source_format"),
            (.make(["kind": "export", "source": .string(source), "destination": "sftp://u@h/x"]), 400, "password"),
            (.make(["kind": "export", "source": .string(source), "destination": "sftp://u:pw@h/x", "password": "p"]), 400, "destination"),
            (.make(["kind": "export", "source": .string(source), "destination": "/tmp/x", "password": "p"]), 400, "destination"),
            (.array([]), 400, nil),
        ]
        for (body, status, field) in cases {
            let answer = try client.json("POST", "/api/v1/jobs", body)
            #expect(answer.status == status, "\(body.text): \(answer.status) \(answer.text)")
            #expect(answer.json["field"]?.stringValue == field, "\(body.text): \(answer.text)")
        }
        let notJSON = try client.send("POST", "/api/v1/jobs", body: Array("{kind:".utf8), headers: [("Content-Type", "application/json")])
        #expect(notJSON.status == 400)
        let wrongType = try client.send("POST", "/api/v1/jobs", body: Array("kind=convert".utf8),
                                        headers: [("Content-Type", "application/x-www-form-urlencoded")])
        #expect(wrongType.status == 415)
        #expect(try client.json("GET", "/api/v1/jobs/00000000-0000-0000-0000-000000000000").status == 404)
        #expect(try client.json("GET", "/api/v1/jobs/not-a-job").status == 404)
        #expect(try client.json("GET", "/api/v1/nothing").status == 404)
        let wrongMethod = try client.json("PUT", "/api/v1/jobs")
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.header("Allow")?.contains("POST") == true)
        #expect(try client.json("GET", "/api/v1/jobs").json["jobs"] == .array([]))
    }
}

/// `text` percent-encoded for a query.
func percentEncoded(_ text: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~/")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

extension RootSet {
    /// The canonical form of a test path (the temporary folder may sit behind a symlink).
    static func canonicalForTests(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else {
            let folder = (path as NSString).deletingLastPathComponent
            return canonicalForTests(folder) + "/" + (path as NSString).lastPathComponent
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
