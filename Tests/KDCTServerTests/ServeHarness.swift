import Foundation
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// A `kdct-native serve` process started as a user or script would (the contract's command line), on a free
/// loopback port (`--listen 127.0.0.1:0`), with its stdout's first line read for the URL and token and its
/// stderr kept in a log file (the log the password test greps).
final class ServeProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let token: String
    let url: String
    /// The startup line, parsed.
    let startup: JSONValue
    let logPath: String
    let stateDirectory: String

    /// Starts the server with `roots` and `state`; `extra` are more arguments, `environment` replaces the test's.
    init(roots: [String], state: String, knownHosts: String? = nil, listen: String = "127.0.0.1:0", extra: [String] = [],
         logPath: String? = nil, environment: [String: String]? = nil) throws {
        stateDirectory = state
        self.logPath = logPath ?? state + "-serve-\(UUID().uuidString.prefix(8)).log"
        guard FileManager.default.createFile(atPath: self.logPath, contents: nil) else { throw ServeTestError("cannot create \(self.logPath)") }
        process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        var arguments = ["serve", "--listen", listen, "--state", state, "--output", "json", "-m", "2"]
        for root in roots { arguments += ["--root", root] }
        arguments += ["--known-hosts", knownHosts ?? state + "-known_hosts"]
        process.arguments = arguments + extra
        if let environment { process.environment = environment }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        guard let line = Self.readLine(output.fileHandleForReading, timeout: 120) else {
            process.terminate()
            throw ServeTestError("kdct-native serve printed no startup line: \((try? String(contentsOfFile: self.logPath, encoding: .utf8)) ?? "")")
        }
        startup = try JSONValue.parse(Array(line.utf8))
        guard let url = startup["url"]?.stringValue, let token = startup["token"]?.stringValue,
              case let .int(port)? = startup["port"] else {
            throw ServeTestError("the startup line lacks url, token or port: \(line)")
        }
        self.url = url
        self.token = token
        self.port = Int(port)
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// A client with the token.
    var client: TestHTTPClient { TestHTTPClient(port: port, token: token) }

    /// Sends `signal` and waits (at most `timeout` seconds) for the process to end; returns its exit status, or
    /// nil when it is still running.
    func stop(signal: Int32, timeout: Double = 60) -> Int32? {
        kill(process.processIdentifier, signal)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        guard !process.isRunning else { return nil }
        return process.terminationStatus
    }

    /// The log so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    private static func readLine(_ handle: FileHandle, timeout: Double) -> String? {
        let box = LineBox()
        let thread = Thread {
            var bytes: [UInt8] = []
            while true {
                let data = handle.readData(ofLength: 1)
                guard let byte = data.first else { break }
                if byte == UInt8(ascii: "\n") { break }
                bytes.append(byte)
            }
            box.set(String(decoding: bytes, as: UTF8.self))
        }
        thread.start()
        return box.wait(timeout: timeout)
    }
}

/// One line handed from a reader thread.
private final class LineBox: @unchecked Sendable {
    private let condition = NSCondition()
    private var line: String?

    func set(_ value: String) {
        condition.lock()
        line = value
        condition.signal()
        condition.unlock()
    }

    func wait(timeout: Double) -> String? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(timeout)
        while line == nil && condition.wait(until: deadline) {}
        return line.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// A failure of the test harness itself.
struct ServeTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// An HTTP answer as the test client received it.
struct TestResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    /// The first header named `name` (case-insensitive).
    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }

    /// The body as JSON (`.null` when it is not JSON).
    var json: JSONValue { (try? JSONValue.parse(body)) ?? .null }

    var text: String { String(decoding: body, as: UTF8.self) }
}

/// A deliberately plain HTTP/1.1 client over a socket: every header is what the test says (a wrong `Host`, a
/// foreign `Origin`, no token), one connection per request (`Connection: close`).
struct TestHTTPClient {
    let port: Int
    var token: String?
    var timeout: Double = 300

    /// Sends a request; `host` replaces the `Host` header, `authorized` false leaves the token out.
    func send(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = [],
              host: String? = nil, authorized: Bool = true) throws -> TestResponse {
        let connection = try TestConnection(port: port, timeout: timeout)
        try connection.write(request(method, path, body: body, headers: headers, host: host, authorized: authorized))
        return try connection.readResponse()
    }

    /// Sends JSON and expects JSON.
    func json(_ method: String, _ path: String, _ body: JSONValue? = nil, headers: [(String, String)] = []) throws -> TestResponse {
        try send(method, path, body: body.map { Array($0.text.utf8) },
                 headers: (body == nil ? [] : [("Content-Type", "application/json")]) + headers)
    }

    /// The request bytes.
    func request(_ method: String, _ path: String, body: [UInt8]? = nil, headers: [(String, String)] = [],
                 host: String? = nil, authorized: Bool = true) -> [UInt8] {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(host ?? "127.0.0.1:\(port)")\r\nConnection: close\r\n"
        if authorized, let token { head += "Authorization: Bearer \(token)\r\n" }
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        return Array((head + "\r\n").utf8) + (body ?? [])
    }

    /// Opens an event stream and reads events until `until` says stop (or the stream ends).
    func events(_ jobID: String, lastEventID: Int64? = nil, until: (SSEEvent) -> Bool = { _ in false }) throws -> (TestResponse, [SSEEvent]) {
        let stream = try openEvents(jobID, lastEventID: lastEventID)
        var events: [SSEEvent] = []
        while let event = try stream.next() {
            events.append(event)
            if until(event) { break }
        }
        return (stream.head, events)
    }

    /// Opens an event stream.
    func openEvents(_ jobID: String, lastEventID: Int64? = nil) throws -> SSEStream {
        let connection = try TestConnection(port: port, timeout: timeout)
        try connection.write(request("GET", "/api/v1/jobs/\(jobID)/events",
                                     headers: lastEventID.map { [("Last-Event-ID", String($0))] } ?? []))
        return try SSEStream(connection: connection)
    }
}

/// One Server-Sent Event.
struct SSEEvent {
    var id: Int64?
    var name: String
    var data: JSONValue
}

/// An open event stream, read incrementally (chunked transfer decoded as it arrives).
final class SSEStream {
    let connection: TestConnection
    let head: TestResponse
    private var pending: [UInt8] = []
    private var chunked: Bool

    init(connection: TestConnection) throws {
        self.connection = connection
        head = try connection.readHead()
        chunked = head.header("Transfer-Encoding")?.lowercased() == "chunked"
        pending = []
    }

    /// The next event, nil at the end of the stream. Comments (keepalives) and `retry:` lines are skipped.
    func next() throws -> SSEEvent? {
        while true {
            if let range = findBlankLine() {
                let block = String(decoding: pending[..<range.lowerBound], as: UTF8.self)
                pending.removeSubrange(..<range.upperBound)
                var event = SSEEvent(id: nil, name: "message", data: .null)
                var data = ""
                for line in block.split(separator: "\n") {
                    if line.hasPrefix("id: ") { event.id = Int64(line.dropFirst(4)) }
                    if line.hasPrefix("event: ") { event.name = String(line.dropFirst(7)) }
                    if line.hasPrefix("data: ") { data += line.dropFirst(6) }
                }
                guard !data.isEmpty else { continue }
                event.data = (try? JSONValue.parse(Array(data.utf8))) ?? .string(data)
                return event
            }
            guard let more = try readBody() else { return nil }
            pending += more
        }
    }

    private func findBlankLine() -> Range<Int>? {
        guard pending.count >= 2 else { return nil }
        for index in 0..<(pending.count - 1) where pending[index] == 10 && pending[index + 1] == 10 {
            return index..<(index + 2)
        }
        return nil
    }

    private func readBody() throws -> [UInt8]? {
        if !chunked { return try connection.readSome() }
        guard let sizeLine = try connection.readLine(), let size = Int(sizeLine.trimmingCharacters(in: .whitespaces), radix: 16) else {
            return nil
        }
        if size == 0 { return nil }
        let bytes = try connection.readExactly(size)
        _ = try connection.readLine()
        return bytes
    }
}

/// A TCP connection to the server on 127.0.0.1.
final class TestConnection {
    let descriptor: Int32
    private var buffer: [UInt8] = []
    private var closed = false

    init(port: Int, timeout: Double) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ServeTestError("socket: \(errno)") }
        var time = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(descriptor)
            throw ServeTestError("connect to port \(port): errno \(errno)")
        }
    }

    deinit { close(descriptor) }

    /// Sets the receive buffer small (before reading), for the slow-client test.
    func shrinkReceiveBuffer() {
        var size: Int32 = 4096
        setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    func write(_ bytes: [UInt8]) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ServeTestError("send: errno \(errno)")
            }
            done += n
        }
    }

    /// Whatever arrives next (nil at the end of the stream).
    func readSome() throws -> [UInt8]? {
        if !buffer.isEmpty {
            defer { buffer = [] }
            return buffer
        }
        guard !closed else { return nil }
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == ECONNRESET) { closed = true; return nil }
            if n < 0 { throw ServeTestError("recv: errno \(errno) (timeout?)") }
            if n == 0 { closed = true; return nil }
            return Array(chunk[..<n])
        }
    }

    func readLine() throws -> String? {
        while true {
            if let index = buffer.firstIndex(of: 10) {
                var line = Array(buffer[..<index])
                buffer.removeSubrange(...index)
                if line.last == 13 { line.removeLast() }
                return String(decoding: line, as: UTF8.self)
            }
            guard let more = try readSome() else { return nil }
            buffer += more
        }
    }

    func readExactly(_ count: Int) throws -> [UInt8] {
        while buffer.count < count {
            guard let more = try readSome() else { throw ServeTestError("the stream ended early") }
            buffer += more
        }
        defer { buffer.removeSubrange(..<count) }
        return Array(buffer[..<count])
    }

    /// The status line and headers.
    func readHead() throws -> TestResponse {
        guard let statusLine = try readLine() else { throw ServeTestError("no response") }
        let parts = statusLine.split(separator: " ")
        guard parts.count >= 2, let status = Int(parts[1]) else { throw ServeTestError("bad status line \(statusLine)") }
        var headers: [(String, String)] = []
        while let line = try readLine(), !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        return TestResponse(status: status, headers: headers, body: [])
    }

    /// A whole response (the server closes the connection after it).
    func readResponse() throws -> TestResponse {
        var response = try readHead()
        if response.header("Transfer-Encoding")?.lowercased() == "chunked" {
            while let sizeLine = try readLine(), let size = Int(sizeLine.trimmingCharacters(in: .whitespaces), radix: 16), size > 0 {
                response.body += try readExactly(size)
                _ = try readLine()
            }
        } else if let length = response.header("Content-Length").flatMap(Int.init) {
            response.body = try readExactly(length)
        } else {
            while let more = try readSome() { response.body += more }
        }
        return response
    }
}

// MARK: Shared helpers

/// A temporary root folder with a state folder beside it (outside the root).
final class ServeFixture: @unchecked Sendable {
    let directory: TemporaryDirectory
    let root: String
    let state: String

    init(_ label: String = "kdct-serve") throws {
        directory = try TemporaryDirectory(label)
        root = directory.file("root")
        state = directory.file("state")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    /// `root/name`.
    func path(_ name: String) -> String { root + "/" + name }

    /// Copies a committed fixture image into the root.
    @discardableResult
    func copyFixture(_ name: String, as newName: String? = nil) throws -> String {
        let target = path(newName ?? name)
        try FileManager.default.copyItem(atPath: Fixtures.path(name), toPath: target)
        return target
    }

    /// Starts a server on this root and state.
    func start(extra: [String] = [], knownHosts: String? = nil) throws -> ServeProcess {
        try ServeProcess(roots: [root], state: state, knownHosts: knownHosts, extra: extra)
    }
}

extension TestHTTPClient {
    /// Submits a job and returns its id (expects 202).
    func submit(_ request: JSONValue, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let response = try json("POST", "/api/v1/jobs", request)
        #expect(response.status == 202, "POST /jobs: \(response.status) \(response.text)", sourceLocation: sourceLocation)
        guard let id = response.json["id"]?.stringValue else { throw ServeTestError("no job id in \(response.text)") }
        return id
    }

    /// Polls a job until it is in a final state (or `timeout` seconds pass); returns the job object.
    func waitForJob(_ id: String, timeout: Double = 300) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let job = try json("GET", "/api/v1/jobs/\(id)").json
            let state = job["state"]?.stringValue ?? ""
            if ["succeeded", "failed", "cancelled", "interrupted"].contains(state) || Date() > deadline { return job }
            usleep(50_000)
        }
    }

    /// Polls a job until `condition` holds for it (or `timeout` passes); returns the last job object.
    func waitForJob(_ id: String, timeout: Double = 300, until condition: (JSONValue) -> Bool) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let job = try json("GET", "/api/v1/jobs/\(id)").json
            if condition(job) || Date() > deadline { return job }
            usleep(20_000)
        }
    }
}

extension JSONValue {
    /// A number as a Double.
    var number: Double? {
        switch self {
        case let .int(value): return Double(value)
        case let .uint(value): return Double(value)
        case let .double(value): return value
        default: return nil
        }
    }

    /// A JSON object from pairs (tests' shorthand).
    static func make(_ pairs: KeyValuePairs<String, JSONValue>) -> JSONValue { .object(pairs.map { ($0.key, $0.value) }) }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
}

/// Names of the files in `directory`.
func listing(_ directory: String) -> [String] {
    (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
}

/// A file of `megabytes` MiB of random data (incompressible, no zero runs).
func writeRandomData(_ path: String, megabytes: Int) throws {
    let result = try runProcess(["dd", "if=/dev/urandom", "of=\(path)", "bs=1M", "count=\(megabytes)", "status=none"])
    guard result.status == 0 else { throw ServeTestError("dd failed: \(result.stderr)") }
}
