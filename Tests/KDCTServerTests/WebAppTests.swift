import Foundation
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// What the web app needs from the server besides the browser test: its files served under the CSP with nothing
/// external and no inline script, `serve --open`, and the SHA-256 of a converted file (`"checksum": true`).
@Suite(.serialized) struct WebAppTests {
    static let webDirectory = packageRoot.appendingPathComponent("Sources/KDCTServer/Resources/Web").path

    @Test func webFilesAreServedUnderTheContentSecurityPolicy() throws {
        let fixture = try ServeFixture()
        let server = try fixture.start()
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.webDirectory).sorted()
        #expect(names.contains("index.html") && names.contains("strings.js"))
        for name in names {
            let response = try server.client.send("GET", "/" + name, authorized: false)
            #expect(response.status == 200, "/\(name): \(response.status)")
            let policy = response.header("Content-Security-Policy") ?? ""
            #expect(policy.hasPrefix("default-src 'self';") && !policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"),
                    "/\(name): \(policy)")
            #expect(response.header("X-Content-Type-Options") == "nosniff")
            // Nothing is loaded from elsewhere (the SVG's namespace is a name, not a request).
            let text = response.text.replacingOccurrences(of: "xmlns=\"http://www.w3.org/2000/svg\"", with: "")
            #expect(!text.contains("http://") && !text.contains("https://") && !text.contains("//cdn"), "/\(name) names an external address")
            #expect(!text.contains("url("), "/\(name) loads a resource from CSS")
        }
        // The page needs no inline script: one module script by address, no event-handler attributes, no style
        // attributes.
        let page = try server.client.send("GET", "/", authorized: false).text
        let scripts = page.components(separatedBy: "<script").dropFirst()
        #expect(scripts.count == 1 && scripts.allSatisfy { $0.hasPrefix(" type=\"module\" src=\"/app.js\"></script>") }, "\(scripts)")
        #expect(page.range(of: #"\son[a-z]+\s*="#, options: .regularExpression) == nil, "an inline event handler")
        #expect(page.range(of: #"\sstyle\s*="#, options: .regularExpression) == nil, "an inline style")
        // Every English word of the interface is in strings.js: the page itself has no text between tags.
        let texts = page.replacingOccurrences(of: #"<!--[\s\S]*?-->"#, with: "", options: .regularExpression)
            .replacingOccurrences(of: #"<title>[^<]*</title>"#, with: "", options: .regularExpression)
            .replacingOccurrences(of: #"<[^>]+>"#, with: "\n", options: .regularExpression)
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        #expect(texts.isEmpty, "text outside strings.js: \(texts)")
    }

    @Test func openStartsXdgOpenOnlyInADesktopSession() throws {
        let fixture = try ServeFixture()
        let bin = fixture.directory.file("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let record = fixture.directory.file("xdg-open-arguments")
        try "#!/bin/sh\necho \"$@\" > \"\(record).tmp\" && mv \"\(record).tmp\" \"\(record)\"\n"
            .write(toFile: bin + "/xdg-open", atomically: true, encoding: .utf8)
        chmod(bin + "/xdg-open", 0o755)
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = bin + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment.removeValue(forKey: "WAYLAND_DISPLAY")

        // No desktop: xdg-open is not run, and the user is told why.
        environment.removeValue(forKey: "DISPLAY")
        let headless = try ServeProcess(roots: [fixture.root], state: fixture.state, extra: ["--open"], environment: environment)
        usleep(500_000)
        #expect(!FileManager.default.fileExists(atPath: record), "xdg-open ran without a desktop session")
        #expect(headless.log.contains("no desktop session"), "\(headless.log)")
        #expect(headless.stop(signal: SIGTERM) == 0)

        // A desktop (DISPLAY set): xdg-open gets a private page that forwards to the token URL; the token itself
        // is not on xdg-open's command line.
        environment["DISPLAY"] = ":99"
        let desktop = try ServeProcess(roots: [fixture.root], state: fixture.state, extra: ["--open"], environment: environment)
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: record) && Date() < deadline { usleep(20_000) }
        let arguments = (try? String(contentsOfFile: record, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        #expect(arguments.hasPrefix("file://") && arguments.hasSuffix("/open.html"), "xdg-open got \(arguments)")
        #expect(!arguments.contains(desktop.token), "the token is on xdg-open's command line")
        let page = URL(string: arguments)?.path ?? ""
        let forwarding = (try? String(contentsOfFile: page, encoding: .utf8)) ?? ""
        #expect(forwarding.contains("url=\(desktop.url)"), "\(forwarding)")
        let mode = (try? FileManager.default.attributesOfItem(atPath: page)[.posixPermissions] as? Int) ?? nil
        #expect(mode == 0o600, "the page with the token is readable by others: \(String(mode ?? 0, radix: 8))")
        #expect(desktop.log.contains("--open: opening the web app"), "\(desktop.log)")
        #expect(desktop.stop(signal: SIGTERM) == 0)
    }

    @Test func convertWithChecksumReportsTheOutputsSHA256() throws {
        let fixture = try ServeFixture()
        let source = try fixture.copyFixture("pattern.vhdx")
        let server = try fixture.start()
        let client = server.client
        let hashed = try client.waitForJob(try client.submit(.make([
            "kind": "convert", "source": .string(source), "destination": .string(fixture.path("out.qcow2")),
            "output_format": "qcow2", "compress": true, "checksum": true,
        ])))
        #expect(hashed["state"] == .string("succeeded"), "\(hashed.text)")
        let sum = try runProcess(["sha256sum", fixture.path("out.qcow2")])
        #expect(hashed["result"]?["sha256"]?.stringValue == String(sum.stdout.prefix(64)), "\(hashed.text) vs \(sum.stdout)")
        #expect(hashed["request"]?["checksum"] == .bool(true))
        try expectQemuIdentical(source, fixture.path("out.qcow2"), formatA: "vhdx", formatB: "qcow2")

        // Without it, no second read and no sha256; it applies to conversions to a local file only.
        let plain = try client.waitForJob(try client.submit(.make([
            "kind": "convert", "source": .string(source), "destination": .string(fixture.path("out.raw")), "output_format": "raw",
        ])))
        #expect(plain["state"] == .string("succeeded") && plain["result"]?["sha256"] == nil, "\(plain.text)")
        let refused = try client.json("POST", "/api/v1/jobs", .make([
            "kind": "export", "source": .string(source), "destination": "sftp://u@127.0.0.1:22/x", "password": "p", "checksum": true,
        ]))
        #expect(refused.status == 400 && refused.json["field"] == .string("checksum"), "\(refused.text)")
    }
}
