import Foundation
@testable import KDCTServer
import KDCTTestSupport
import Testing

/// The service's own pieces, in process: JSON, the token, host and origin rules, the path gate, the space
/// estimate against qemu-img, the progress meter.
@Suite struct ServerUnitTests {
    @Test func jsonRoundTripsAndRefusesMalformedText() throws {
        let text = #"{"a":1,"b":[true,false,null],"c":"é\n\"x\"\u0001","d":-5,"e":18446744073709551615,"f":1.5,"g":{}}"#
        let value = try JSONValue.parse(Array(text.utf8))
        #expect(value["a"] == .int(1))
        #expect(value["e"] == .uint(UInt64.max))
        #expect(value["f"] == .double(1.5))
        #expect(value["c"] == .string("é\n\"x\"\u{1}"))
        #expect(try JSONValue.parse(Array(value.text.utf8)) == value)
        if case let .object(pairs) = value { #expect(pairs.map(\.0) == ["a", "b", "c", "d", "e", "f", "g"]) }
        for bad in ["", "{", "{\"a\" 1}", "[1,]", "01", "\"\u{1}\"", "{\"a\":1}x", "{\"a\":1,\"a\":2}", "nul", "\"\\ud800\"",
                    String(repeating: "[", count: 100) + String(repeating: "]", count: 100), "1e999"] {
            #expect(throws: JSONParseError.self, "\(bad)") { try JSONValue.parse(Array(bad.utf8)) }
        }
        #expect(JSONValue.number(12.345).text == "12.35")
        #expect(JSONValue.number(.nan) == .null)
        #expect(JSONValue.double(100).text == "100")
    }

    @Test func tokenComparison() {
        let token = AccessToken()
        #expect(token.value.count == 64)
        #expect(token.value.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        #expect(token.matches(token.value))
        #expect(!token.matches(String(token.value.dropLast())))
        #expect(!token.matches(token.value + "a"))
        #expect(!token.matches(""))
        #expect(AccessToken().value != token.value)
    }

    @Test func hostAndOriginRules() {
        let policy = HostPolicy(listenHost: "127.0.0.1", secure: false, extra: ["kvm.example"])
        policy.setPort(8080)
        for allowed in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "KVM.example:8080"] {
            #expect(policy.allows(authority: allowed), "\(allowed)")
        }
        for refused in ["127.0.0.1", "127.0.0.1:8081", "evil.example:8080", "127.0.0.1:8080@evil", "[::1", "", "127.0.0.1:x",
                        "user@127.0.0.1:8080"] {
            #expect(!policy.allows(authority: refused), "\(refused)")
        }
        #expect(policy.isOwnOrigin("http://127.0.0.1:8080", authority: "127.0.0.1:8080"))
        #expect(!policy.isOwnOrigin("http://localhost:8080", authority: "127.0.0.1:8080"))
        #expect(!policy.isOwnOrigin("https://127.0.0.1:8080", authority: "127.0.0.1:8080"))
        #expect(!policy.isOwnOrigin("null", authority: "127.0.0.1:8080"))
        let tls = HostPolicy(listenHost: "0.0.0.0", secure: true, extra: [])
        tls.setPort(443)
        #expect(tls.allows(authority: "localhost"))
        #expect(tls.isOwnOrigin("https://localhost", authority: "localhost:443"))
    }

    @Test func pathGate() throws {
        let directory = try TemporaryDirectory("kdct-roots")
        let root = directory.file("root")
        try FileManager.default.createDirectory(atPath: root + "/sub", withIntermediateDirectories: true)
        try Data("x".utf8).write(to: URL(fileURLWithPath: root + "/file"))
        try FileManager.default.createDirectory(atPath: directory.file("out"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: root + "/inside-link", withDestinationPath: root + "/sub")
        try FileManager.default.createSymbolicLink(atPath: root + "/outside-link", withDestinationPath: directory.file("out"))
        // A root given through a symlink works, and is reported canonical.
        try FileManager.default.createSymbolicLink(atPath: directory.file("alias"), withDestinationPath: root)
        let roots = try RootSet([directory.file("alias")])
        let canonicalRoot = RootSet.canonicalForTests(root)
        #expect(roots.roots == [canonicalRoot])
        #expect(try roots.existing(root + "/file", field: "path") == canonicalRoot + "/file")
        #expect(try roots.existing(directory.file("alias") + "/file", field: "path") == canonicalRoot + "/file")
        #expect(try roots.existing(root + "//sub/./", field: "path") == canonicalRoot + "/sub")
        #expect(try roots.existing(root + "/inside-link", field: "path") == canonicalRoot + "/sub")
        #expect(try roots.destination(root + "/sub/new.qcow2", field: "destination") == canonicalRoot + "/sub/new.qcow2")
        func refused(_ body: () throws(Problem) -> String, status: Int) {
            do {
                let value = try body()
                Issue.record("accepted: \(value)")
            } catch {
                #expect(Int(error.status.code) == status, "\(error)")
            }
        }
        refused({ () throws(Problem) in try roots.existing(root + "/../out", field: "p") }, status: 403)
        refused({ () throws(Problem) in try roots.existing(root + "/outside-link", field: "p") }, status: 403)
        refused({ () throws(Problem) in try roots.existing(directory.file("out"), field: "p") }, status: 403)
        refused({ () throws(Problem) in try roots.existing("file", field: "p") }, status: 403)
        refused({ () throws(Problem) in try roots.existing(root + "/fi\u{0}le", field: "p") }, status: 403)
        refused({ () throws(Problem) in try roots.existing(root + "/missing", field: "p") }, status: 404)
        refused({ () throws(Problem) in try roots.existing("", field: "p") }, status: 400)
        refused({ () throws(Problem) in try roots.destination(root + "/outside-link/x.raw", field: "d") }, status: 403)
        refused({ () throws(Problem) in try roots.destination(root + "/missing/x.raw", field: "d") }, status: 404)
        refused({ () throws(Problem) in try roots.destination(root, field: "d") }, status: 403)
        refused({ () throws(Problem) in try roots.destination(canonicalRoot + "/", field: "d") }, status: 403)
        refused({ () throws(Problem) in try roots.destination(root + "/file/x", field: "d") }, status: 400)
        #expect(!roots.contains(canonicalRoot + "x"))
        #expect(roots.contains(canonicalRoot))
    }

    @Test func progressMeterThrottlesAndReportsCompletionOnce() {
        var meter = ProgressMeter(start: 0, interval: 0.25)
        func update(_ processed: UInt64, phase: String = "converting") -> ProgressUpdate {
            ProgressUpdate(phase: phase, processed: processed, total: 1000, moved: processed)
        }
        let first = meter.object(for: update(0), now: 0)
        #expect(first?["phase"] == .string("converting"))
        #expect(first?["eta-seconds"] == .null, "no rate yet")
        #expect(meter.object(for: update(20), now: 0.1) == nil)
        let later = meter.object(for: update(500), now: 1)
        #expect(later?["bytes-per-second"] == .uint(500))
        #expect(later?["eta-seconds"] == .double(1))
        #expect(later?["percent"] == .double(50))
        #expect(later?["elapsed-seconds"] == .double(1))
        #expect(meter.object(for: update(1000), now: 1.01)?["percent"] == .double(100))
        #expect(meter.object(for: update(1000), now: 2) == nil, "100% once per phase")
        let verifying = meter.object(for: update(0, phase: "verifying"), now: 2.01)
        #expect(verifying?["phase"] == .string("verifying"))
        #expect(verifying?["eta-seconds"] == .null, "a new phase has no rate yet")
        #expect(meter.object(for: update(100, phase: "verifying"), now: 3.01)?["bytes-per-second"] == .uint(100))
    }

    @Test func everyWebFileIsServed() throws {
        let directory = packageRoot.appendingPathComponent("Sources/KDCTServer/Resources/Web").path
        let files = try FileManager.default.subpathsOfDirectory(atPath: directory).filter { name in
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: directory + "/" + name, isDirectory: &isDirectory) && !isDirectory.boolValue
        }
        #expect(!files.isEmpty)
        for file in files {
            let served = StaticFiles.files["/" + file]
            #expect(served != nil, "Resources/Web/\(file) is not listed in StaticFiles.files")
            #expect(served == Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))), "\(file) differs")
            #expect(StaticFiles.contentType(of: file) != "application/octet-stream", "\(file) has no content type")
        }
        #expect(StaticFiles.files.count == files.count)
    }
}
