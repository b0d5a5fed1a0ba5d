import Foundation
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// The service is reachable by every local user (and with --listen by a network): each refusal below is tested
/// with the status it must have, and with nothing written.
@Suite(.serialized) struct SecurityTests {
    @Test func tokenIsRequiredOnEveryAPIRequest() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        var client = server.client
        #expect(server.url.hasPrefix("http://127.0.0.1:\(server.port)/?token="))
        #expect(server.token.count == 64)

        let missing = try client.send("GET", "/api/v1/status", authorized: false)
        #expect(missing.status == 401)
        #expect(missing.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
        #expect(missing.json["code"] == .string("unauthorized"))
        client.token = String(server.token.dropLast()) + (server.token.hasSuffix("a") ? "b" : "a")
        #expect(try client.send("GET", "/api/v1/status").status == 401)
        client.token = server.token + "x"
        #expect(try client.send("GET", "/api/v1/jobs").status == 401)
        #expect(try client.send("GET", "/api/v1/status", headers: [("Authorization", "Basic \(server.token)")],
                                authorized: false).status == 401)
        // The token in the query is for the page only, never the API.
        #expect(try client.send("GET", "/api/v1/status?token=\(server.token)", authorized: false).status == 401)
        // Unauthenticated requests cannot create anything.
        let refused = try client.send("POST", "/api/v1/jobs", body: Array("{}".utf8), authorized: false)
        #expect(refused.status == 401)
        #expect(try server.client.json("GET", "/api/v1/jobs").json["jobs"] == .array([]))
    }

    @Test func tokenURLSetsAStrictHttpOnlyCookie() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let client = server.client
        let visit = try client.send("GET", "/?token=\(server.token)", authorized: false)
        #expect(visit.status == 303)
        #expect(visit.header("Location") == "/")
        let cookie = visit.header("Set-Cookie") ?? ""
        #expect(cookie.hasPrefix("kdct_token=\(server.token);"))
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"))
        let withCookie = try client.send("GET", "/api/v1/status", headers: [("Cookie", "theme=dark; kdct_token=\(server.token)")],
                                         authorized: false)
        #expect(withCookie.status == 200)
        let wrongCookie = try client.send("GET", "/api/v1/status", headers: [("Cookie", "kdct_token=\(server.token.reversed())")],
                                          authorized: false)
        #expect(wrongCookie.status == 401)
        #expect(try client.send("GET", "/?token=nope", authorized: false).status == 401)
        // The page itself needs no token (it holds no data) and answers 200.
        let page = try client.send("GET", "/", authorized: false)
        #expect(page.status == 200 && page.header("Content-Type")?.hasPrefix("text/html") == true)
    }

    @Test func hostHeaderMustNameTheService() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let client = server.client
        for host in ["evil.example:\(server.port)", "evil.example", "127.0.0.1:\(server.port + 1)", "127.0.0.1", "localhost.evil.example:\(server.port)"] {
            let answer = try client.send("GET", "/api/v1/status", host: host)
            #expect(answer.status == 403, "Host \(host): \(answer.status)")
            #expect(answer.json["code"] == .string("host-not-allowed"))
            #expect(try client.send("GET", "/", host: host, authorized: false).status == 403)
        }
        for host in ["localhost:\(server.port)", "127.0.0.1:\(server.port)", "LOCALHOST:\(server.port)"] {
            #expect(try client.send("GET", "/api/v1/status", host: host).status == 200, "Host \(host)")
        }
    }

    @Test func foreignOriginCannotChangeAnything() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.qcow")
        let server = try fixture.start()
        let client = server.client
        let body = Array(JSONValue.make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path("out.raw")),
                                         "output_format": "raw"]).text.utf8)
        for headers in [[("Origin", "http://evil.example")], [("Origin", "http://127.0.0.1:\(server.port + 1)")],
                        [("Origin", "null")], [("Origin", "https://127.0.0.1:\(server.port)")],
                        [("Sec-Fetch-Site", "cross-site")], [("Sec-Fetch-Site", "same-site")]] {
            let answer = try client.send("POST", "/api/v1/jobs", body: body, headers: [("Content-Type", "application/json")] + headers)
            #expect(answer.status == 403, "\(headers): \(answer.status) \(answer.text)")
            #expect(answer.json["code"] == .string("foreign-origin"))
        }
        #expect(try client.json("GET", "/api/v1/jobs").json["jobs"] == .array([]))
        #expect(!FileManager.default.fileExists(atPath: fixture.path("out.raw")))
        // Reading with a foreign Origin gets no CORS header (the browser keeps the answer from the page).
        let read = try client.send("GET", "/api/v1/jobs", headers: [("Origin", "http://evil.example")])
        #expect(read.status == 200)
        #expect(read.header("Access-Control-Allow-Origin") == nil)
        let preflight = try client.send("OPTIONS", "/api/v1/jobs", headers: [("Origin", "http://evil.example"),
                                                                          ("Access-Control-Request-Method", "POST")])
        #expect(preflight.header("Access-Control-Allow-Origin") == nil && preflight.header("Access-Control-Allow-Methods") == nil)
        #expect(preflight.status == 403, "a preflight is refused like the request it announces")
        // The service's own page (same origin) may.
        let own = try client.send("POST", "/api/v1/jobs", body: body, headers: [("Content-Type", "application/json"),
                                                                            ("Origin", "http://127.0.0.1:\(server.port)"),
                                                                            ("Sec-Fetch-Site", "same-origin")])
        #expect(own.status == 202, "\(own.text)")
    }

    @Test func pathsOutsideTheRootsAreRefused() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.qcow")
        let outside = fixture.directory.file("outside")
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: Fixtures.path("pattern.qcow"), toPath: outside + "/secret.qcow")
        try FileManager.default.createSymbolicLink(atPath: fixture.path("link"), withDestinationPath: outside)
        try FileManager.default.createSymbolicLink(atPath: fixture.path("secret-link.qcow"), withDestinationPath: outside + "/secret.qcow")
        try FileManager.default.createSymbolicLink(atPath: fixture.path("out-link.raw"), withDestinationPath: outside + "/written.raw")
        try FileManager.default.createSymbolicLink(atPath: fixture.path("dangling.raw"), withDestinationPath: outside + "/nothing.raw")
        let server = try fixture.start()
        let client = server.client
        func job(source: String, destination: String) -> JSONValue {
            .make(["kind": "convert", "source": .string(source), "destination": .string(destination), "output_format": "raw"])
        }
        let dotdot = fixture.root + "/../outside/secret.qcow"
        let requests: [(String, String, JSONValue?, String)] = [
            ("GET", "/api/v1/files?path=" + percentEncoded(fixture.root + "/.."), nil, fixture.root + "/.."),
            ("GET", "/api/v1/files?path=" + percentEncoded(fixture.path("link")), nil, fixture.path("link")),
            ("GET", "/api/v1/files?path=%2Fetc", nil, "/etc"),
            ("GET", "/api/v1/files?path=etc", nil, "etc"),
            ("GET", "/api/v1/files/content?path=%2Fetc%2Fpasswd", nil, "/etc/passwd"),
            ("GET", "/api/v1/files?path=" + percentEncoded(fixture.root) + "%00x", nil, fixture.root + "\\0x"),
            ("POST", "/api/v1/inspect", .make(["path": .string(dotdot)]), dotdot),
            ("POST", "/api/v1/inspect", .make(["path": .string(fixture.path("link/secret.qcow"))]), fixture.path("link/secret.qcow")),
            ("POST", "/api/v1/inspect", .make(["path": .string(fixture.path("secret-link.qcow"))]), fixture.path("secret-link.qcow")),
            ("POST", "/api/v1/inspect", .make(["path": .string(fixture.root + "/x\u{0}.qcow")]), fixture.root + "/x\\0.qcow"),
            ("POST", "/api/v1/measure", .make(["path": .string("/etc/passwd")]), "/etc/passwd"),
            ("POST", "/api/v1/jobs", job(source: outside + "/secret.qcow", destination: fixture.path("o.raw")), outside + "/secret.qcow"),
            ("POST", "/api/v1/jobs", job(source: fixture.path("secret-link.qcow"), destination: fixture.path("o.raw")), fixture.path("secret-link.qcow")),
            ("POST", "/api/v1/jobs", job(source: source, destination: outside + "/written.raw"), outside + "/written.raw"),
            ("POST", "/api/v1/jobs", job(source: source, destination: fixture.path("link/written.raw")), fixture.path("link/written.raw")),
            ("POST", "/api/v1/jobs", job(source: source, destination: fixture.path("out-link.raw")), fixture.path("out-link.raw")),
            ("POST", "/api/v1/jobs", job(source: source, destination: fixture.path("dangling.raw")), fixture.path("dangling.raw")),
            ("POST", "/api/v1/jobs", job(source: source, destination: fixture.root + "/../written.raw"), fixture.root + "/../written.raw"),
            ("POST", "/api/v1/jobs", job(source: source, destination: "/tmp/written.raw"), "/tmp/written.raw"),
            ("POST", "/api/v1/jobs", .make(["kind": "export", "source": .string(source), "destination": "sftp://u@127.0.0.1:1/x",
                                            "identity": .string(outside + "/secret.qcow")]), outside + "/secret.qcow"),
        ]
        for (method, path, body, named) in requests {
            let answer = try client.json(method, path, body)
            #expect(answer.status == 403, "\(method) \(path) \(body?.text ?? ""): \(answer.status) \(answer.text)")
            #expect(answer.json["code"] == .string("forbidden-path"), "\(answer.text)")
            #expect(answer.json["detail"]?.stringValue?.contains(named) == true, "the path is named: \(answer.text)")
        }
        #expect(try client.json("GET", "/api/v1/jobs").json["jobs"] == .array([]))
        #expect(listing(outside).sorted() == ["secret.qcow"])
        #expect(!FileManager.default.fileExists(atPath: "/tmp/written.raw"))
        #expect(!FileManager.default.fileExists(atPath: fixture.directory.file("written.raw")))
    }

    @Test func oversizedBodiesAreRefused() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let client = server.client
        let big = Array(("{\"path\": \"" + String(repeating: "a", count: 64 << 10) + "\"}").utf8)
        let declared = try client.send("POST", "/api/v1/inspect", body: big, headers: [("Content-Type", "application/json")])
        #expect(declared.status == 413)
        #expect(declared.json["code"] == .string("body-too-large"))
        // Chunked, with no length announced: cut off at the limit.
        let connection = try TestConnection(port: server.port, timeout: 60)
        var request = Array("POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:\(server.port)\r\nAuthorization: Bearer \(server.token)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".utf8)
        for _ in 0..<20 { request += Array("1000\r\n".utf8) + [UInt8](repeating: 0x20, count: 0x1000) + Array("\r\n".utf8) }
        request += Array("0\r\n\r\n".utf8)
        try? connection.write(request)
        let chunked = try connection.readResponse()
        #expect(chunked.status == 413)
        #expect(try client.json("GET", "/api/v1/jobs").json["jobs"] == .array([]))
    }

    @Test func everyResponseCarriesTheSecurityHeaders() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let client = server.client
        let answers = [
            try client.send("GET", "/"),
            try client.send("GET", "/app.js"),
            try client.send("GET", "/missing.js"),
            try client.send("GET", "/api/v1/status"),
            try client.send("GET", "/api/v1/status", authorized: false),
            try client.send("GET", "/api/v1/status", host: "evil.example"),
            try client.send("DELETE", "/api/v1/formats"),
            try client.send("POST", "/api/v1/jobs", body: Array("[".utf8)),
            try client.send("GET", "/api/v1/files?path=%2Fetc"),
        ]
        for answer in answers {
            let policy = answer.header("Content-Security-Policy") ?? ""
            #expect(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"), "\(answer.status): \(policy)")
            #expect(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"))
            #expect(answer.header("X-Content-Type-Options") == "nosniff")
            #expect(answer.header("Referrer-Policy") == "no-referrer")
            #expect(answer.header("X-Frame-Options") == "DENY")
            #expect(answer.header("Access-Control-Allow-Origin") == nil)
        }
        #expect(answers[1].header("Content-Type")?.hasPrefix("text/javascript") == true)
        #expect(answers[2].status == 404)
        #expect(answers[6].status == 405)
        // The page needs no inline script: every script has a src, no element has an on... handler.
        let page = answers[0].text
        #expect(!page.isEmpty)
        #expect(page.components(separatedBy: "<script").dropFirst().allSatisfy { $0.prefix { $0 != ">" }.contains("src=") })
        #expect(page.range(of: #"\son[a-z]+\s*="#, options: .regularExpression) == nil)
        #expect(!page.contains("style=\""))
        #expect(!page.lowercased().contains("http://") && !page.lowercased().contains("https://"))
    }

    @Test func passwordsAreNeverWrittenOrListed() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.qcow")
        let password = "pw-" + UUID().uuidString
        let passphrase = "pp-" + UUID().uuidString
        try FileManager.default.copyItem(atPath: Fixtures.path("pattern.qcow"), toPath: fixture.path("key"))
        let server = try fixture.start()
        let client = server.client
        // Nothing listens on port 1: the jobs fail fast, after holding the secrets.
        let ids = [
            try client.submit(.make(["kind": "export", "source": .string(source), "destination": "sftp://someone@127.0.0.1:1/tmp/x.qcow",
                                     "password": .string(password), "identity": .string(fixture.path("key")), "passphrase": .string(passphrase)])),
            try client.submit(.make(["kind": "convert-and-export", "source": .string(source), "destination": "sftp://someone@127.0.0.1:1/tmp/y.qcow2",
                                     "output_format": "qcow2", "password": .string(password)])),
        ]
        for id in ids {
            let job = try client.waitForJob(id)
            #expect(job["state"] == .string("failed"), "\(job.text)")
            // Resume and retry need the secrets again: they were not kept.
            let resumed = try client.json("POST", "/api/v1/jobs/\(id)/retry", .make(["password": .string(password)]))
            #expect(resumed.status == 202)
            _ = try client.waitForJob(resumed.json["id"]?.stringValue ?? "")
        }
        let retryWithout = try client.json("POST", "/api/v1/jobs/\(ids[1])/retry")
        #expect(retryWithout.status == 400, "no password, no identity: \(retryWithout.text)")
        var shown = try client.send("GET", "/api/v1/jobs").text
        for id in ids { shown += try client.send("GET", "/api/v1/jobs/\(id)").text }
        let (_, events) = try client.events(ids[0])
        shown += events.map(\.data.text).joined()
        #expect(server.stop(signal: SIGTERM) == 0)
        let restarted = try fixture.start()
        shown += try restarted.client.send("GET", "/api/v1/jobs?limit=500").text
        #expect(restarted.stop(signal: SIGTERM) == 0)
        var stored: [UInt8] = []
        for name in listing(fixture.state) {
            stored += (try? Array(Data(contentsOf: URL(fileURLWithPath: fixture.state + "/" + name)))) ?? []
        }
        #expect(listing(fixture.state).contains("jobs.sqlite"))
        #expect(stored.count > 4096)
        for secret in [password, passphrase] {
            #expect(!shown.contains(secret), "a secret is in the API's answers")
            #expect(!server.log.contains(secret) && !restarted.log.contains(secret), "a secret is in the log")
            #expect(!String(decoding: stored, as: UTF8.self).contains(secret), "a secret is in the state folder")
        }
        #expect(shown.contains("someone@127.0.0.1"))  // the request itself is kept
        #expect(server.log.contains("POST /api/v1/jobs 202"))  // and the log does have the requests
    }

    @Test func nonLoopbackListenNeedsTLSOrAnExplicitFlag() throws {
        let fixture = try ServeFixture()
        let refused = try CLI.run(["serve", "--listen", "0.0.0.0:0", "--root", fixture.root, "--state", fixture.state])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("--tls-cert"), "\(refused.stderr)")
        let insecure = try ServeProcess(roots: [fixture.root], state: fixture.state, listen: "0.0.0.0:0", extra: ["--insecure-listen"])
        #expect(insecure.log.contains("warning: --insecure-listen"), "\(insecure.log)")
        #expect(try insecure.client.send("GET", "/api/v1/status").status == 200)
        #expect(insecure.stop(signal: SIGTERM) == 0)
    }

    @Test func tlsServesHTTPS() throws {
        let fixture = try ServeFixture()
        let certificate = fixture.directory.file("cert.pem")
        let key = fixture.directory.file("key.pem")
        let made = try runProcess(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                                   "-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=localhost",
                                   "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        #expect(made.status == 0, "\(made.stderr)")
        let server = try ServeProcess(roots: [fixture.root], state: fixture.state, extra: ["--tls-cert", certificate, "--tls-key", key])
        #expect(server.url.hasPrefix("https://127.0.0.1:\(server.port)/?token="))
        let script = """
            import ssl, sys, urllib.request
            context = ssl.create_default_context(cafile=sys.argv[1])
            request = urllib.request.Request(sys.argv[2], headers={"Authorization": "Bearer " + sys.argv[3]})
            with urllib.request.urlopen(request, context=context) as answer:
                print(answer.status, answer.headers.get("Strict-Transport-Security"))
            """
        let fetched = try runProcess(["python3", "-c", script, certificate, "https://127.0.0.1:\(server.port)/api/v1/status", server.token])
        #expect(fetched.status == 0, "\(fetched.stderr)")
        #expect(fetched.stdout.hasPrefix("200 max-age="), "\(fetched.stdout)")
        // Plain HTTP on the TLS port gets no answer.
        let plain = try? server.client.send("GET", "/api/v1/status")
        #expect(plain == nil || plain?.status != 200)
        let cookie = try runProcess(["python3", "-c", """
            import http.client, ssl, sys
            connection = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[2]), context=ssl.create_default_context(cafile=sys.argv[1]))
            connection.request("GET", "/?token=" + sys.argv[3])
            print(connection.getresponse().getheader("Set-Cookie"))
            """, certificate, String(server.port), server.token])
        #expect(cookie.stdout.contains("Secure"), "\(cookie.stdout) \(cookie.stderr)")
        #expect(server.stop(signal: SIGTERM) == 0)
    }

    @Test func queueAndEventStreamsAreBoundedAndSlowClientsHoldNothing() throws {
        let fixture = try ServeFixture()
        let source = fixture.path("big.raw")
        try writeRandomData(source, megabytes: 256)
        let server = try fixture.start(extra: ["--queue", "1", "--max-event-streams", "2"])
        let client = server.client
        func convert(_ name: String) -> JSONValue {
            .make(["kind": "convert", "source": .string(source), "destination": .string(fixture.path(name)), "output_format": "qcow2",
                   "compress": true])
        }
        let first = try client.submit(convert("a.qcow2"))
        _ = try client.waitForJob(first) { $0["state"] == .string("running") }
        let second = try client.submit(convert("b.qcow2"))
        let full = try client.json("POST", "/api/v1/jobs", convert("c.qcow2"))
        #expect(full.status == 503)
        #expect(full.json["code"] == .string("queue-full"))
        #expect(full.header("Retry-After") != nil)

        // A client that never reads, on a tiny receive buffer, and one that reads: the first job's progress is
        // not held back, and a third stream is refused.
        let stalled = try TestConnection(port: server.port, timeout: 60)
        stalled.shrinkReceiveBuffer()
        try stalled.write(client.request("GET", "/api/v1/jobs/\(first)/events"))
        let reader = try client.openEvents(first)
        #expect(reader.head.status == 200)
        usleep(300_000)
        let third = try client.send("GET", "/api/v1/jobs/\(first)/events")
        #expect(third.status == 503, "\(third.status) \(third.text)")
        #expect(third.json["code"] == .string("too-many-event-streams"))
        var events: [SSEEvent] = []
        while let event = try reader.next() {
            events.append(event)
            if event.name == "state" { break }
        }
        #expect(events.last?.data["state"] == .string("succeeded"), "\(events.last?.data.text ?? "")")
        #expect(try client.waitForJob(second)["state"] == .string("succeeded"))
        try expectQemuIdentical(source, fixture.path("a.qcow2"), formatA: "raw", formatB: "qcow2")
    }
}
