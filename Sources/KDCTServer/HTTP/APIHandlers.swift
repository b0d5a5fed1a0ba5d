import Foundation
import Hummingbird
import HTTPTypes
import NIOCore
import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// The API under `/api/v1`: the route table (which the OpenAPI document mirrors, see `APIRoute.all` and its
/// test) and one handler per route. Blocking work (files, the libraries, host probes) runs on a thread pool;
/// jobs run on their own threads through the queue.
struct APIHandlers: Sendable {
    let queue: JobQueue
    let events: JobEvents
    let engine: LibraryEngine
    let roots: RootSet
    let blocking: NIOThreadPool
    let status: @Sendable () async -> JSONValue

    /// Routes: method, path under `/api/v1` (`{id}` is a job id), handler.
    static let routes: [APIRoute] = [
        APIRoute(.get, "/openapi.json") { handlers, _, _, _ in handlers.openAPIDocument() },
        APIRoute(.get, "/status") { handlers, _, _, _ in ServiceResponder.json(await handlers.status()) },
        APIRoute(.get, "/formats") { handlers, _, _, _ in ServiceResponder.json(handlers.engine.formats) },
        APIRoute(.get, "/files") { handlers, request, _, _ in try await handlers.listFiles(request) },
        APIRoute(.get, "/files/content") { handlers, request, _, _ in try await handlers.fileContent(request) },
        APIRoute(.post, "/inspect") { handlers, request, _, _ in try await handlers.inspect(request) },
        APIRoute(.post, "/measure") { handlers, request, _, _ in try await handlers.measure(request) },
        APIRoute(.post, "/jobs") { handlers, request, _, _ in try await handlers.createJob(request) },
        APIRoute(.get, "/jobs") { handlers, request, _, _ in try await handlers.listJobs(request) },
        APIRoute(.get, "/jobs/{id}") { handlers, _, _, id in try await handlers.job(id) },
        APIRoute(.delete, "/jobs/{id}") { handlers, _, _, id in try await handlers.cancelJob(id) },
        APIRoute(.post, "/jobs/{id}/resume") { handlers, request, _, id in try await handlers.resumeJob(id, request) },
        APIRoute(.post, "/jobs/{id}/retry") { handlers, request, _, id in try await handlers.retryJob(id, request) },
        APIRoute(.get, "/jobs/{id}/events") { handlers, request, context, id in
            try await handlers.jobEvents(id, request, context: context)
        },
        APIRoute(.post, "/hosts/probe") { handlers, request, _, _ in try await handlers.probeHost(request) },
        APIRoute(.post, "/hosts/trust") { handlers, request, _, _ in try await handlers.trustHost(request) },
    ]

    /// Finds the route of `request` (404 for an unknown path, 405 with `Allow` for a known path and another
    /// method) and runs it.
    func respond(to request: Request, context: ServiceRequestContext) async throws -> Response {
        let path = request.uri.path
        guard path.hasPrefix("/api/v1/") else { throw Problem.notFound("no API at \(path); the API is under /api/v1") }
        let components = path.dropFirst("/api/v1".count).split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        var allowed: [HTTPRequest.Method] = []
        for route in Self.routes {
            guard let id = route.match(components) else { continue }
            guard route.method == request.method else {
                allowed.append(route.method)
                continue
            }
            return try await route.handler(self, request, context, id)
        }
        guard allowed.isEmpty else {
            var problem = Problem(.methodNotAllowed, code: "method-not-allowed",
                                  "\(request.method.rawValue) is not allowed on \(path)")
            problem.headers[.allow] = allowed.map(\.rawValue).joined(separator: ", ")
            throw problem
        }
        throw Problem.notFound("no API endpoint \(path)")
    }

    // MARK: Service

    private func openAPIDocument() -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_json)))
    }

    // MARK: Files

    private func listFiles(_ request: Request) async throws -> Response {
        let query = try QueryParameters(request.uri.query)
        try query.checkNames(["path"])
        guard let path = query["path"] else {
            let roots = self.roots
            return ServiceResponder.json(try await blocking.runIfActive { DirectoryListing.roots(roots) })
        }
        let directory = try roots.existing(path, field: "path")
        guard RootSet.fileType(directory) == S_IFDIR else { throw Problem.badRequest("\(path) is not a folder", field: "path") }
        let (roots, engine) = (self.roots, self.engine)
        return ServiceResponder.json(try await blocking.runIfActive {
            try DirectoryListing.list(directory, roots: roots, engine: engine)
        })
    }

    private func fileContent(_ request: Request) async throws -> Response {
        let query = try QueryParameters(request.uri.query)
        try query.checkNames(["path", "download"])
        guard let path = query["path"] else { throw Problem.badRequest("\"path\" is required", field: "path") }
        let file = try roots.existing(path, field: "path")
        let bytes = try await blocking.runIfActive { try DirectoryListing.textContent(of: file) }
        var headers: HTTPFields = [
            .contentType: "text/plain; charset=utf-8",
            // Shown as text, never run: a file's content is not the service's page.
            .contentSecurityPolicy: "sandbox; default-src 'none'",
        ]
        let name = String(String.UnicodeScalarView(RootSet.lastComponent(of: file).unicodeScalars.filter { scalar in
            (0x20..<0x7f).contains(scalar.value) && scalar != "\"" && scalar != "\\"
        }))
        headers[.contentDisposition] = (query["download"] == "1" ? "attachment" : "inline") + "; filename=\"\(name)\""
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    // MARK: Images

    /// The fields of a request that names an image to read.
    private static let sourceFields: Set<String> = ["path", "source_format", "references", "parents", "untrusted", "configuration"]

    private func sourceRequest(_ fields: RequestFields) throws(Problem) -> JobRequest {
        var request = JobRequest(kind: .convert, source: try roots.existing(try fields.string("path"), field: "path"),
                                 destination: "")
        try request.readSourceOptions(fields, roots: roots, engine: engine)
        guard RootSet.fileType(request.source) == S_IFREG else {
            throw .badRequest("\(request.source) is not a regular file", field: "path")
        }
        return request
    }

    private func inspect(_ request: Request) async throws -> Response {
        let fields = try RequestFields(body: try await Self.body(of: request), allowed: Self.sourceFields)
        let source = try sourceRequest(fields)
        let (engine, roots) = (self.engine, self.roots)
        return ServiceResponder.json(try await blocking.runIfActive { try engine.inspect(source, roots: roots) })
    }

    private func measure(_ request: Request) async throws -> Response {
        let fields = try RequestFields(body: try await Self.body(of: request),
                                       allowed: Self.sourceFields.union(["output_format", "cluster_size", "destination"]))
        var source = try sourceRequest(fields)
        source.outputFormat = try fields.choice("output_format", ["raw", "qcow2"]) ?? "raw"
        source.clusterSize = try fields.integer("cluster_size", in: 512...(2 << 20))
        if let size = source.clusterSize, size & (size - 1) != 0 {
            throw Problem.badRequest("\"cluster_size\" must be a power of two", field: "cluster_size")
        }
        var folder: String?
        if let destination = try fields.optionalString("destination") {
            // A folder, or the file the output would be.
            if let existing = try? roots.existing(destination, field: "destination"), RootSet.fileType(existing) == S_IFDIR {
                folder = existing
            } else {
                folder = RootSet.directory(of: try roots.destination(destination, field: "destination"))
            }
        }
        let (engine, roots, request) = (self.engine, self.roots, source)
        let space = try await blocking.runIfActive { try engine.measure(request, roots: roots) }
        var pairs: [(String, JSONValue)] = [
            ("required", .uint(space.required)),
            ("fully-allocated", .uint(space.fullyAllocated)),
            ("virtual-size", .uint(space.virtualSize)),
            ("output-format", .string(source.outputFormat)),
        ]
        if let folder, let free = DirectoryListing.freeBytes(folder) {
            pairs += [("destination-folder", .string(folder)), ("free", .uint(free)), ("fits", .bool(space.required <= free))]
        }
        return ServiceResponder.json(.object(pairs))
    }

    // MARK: Jobs

    private func createJob(_ request: Request) async throws -> Response {
        let body = try JSONValue.parseRequestBody(try await Self.body(of: request))
        let (engine, roots) = (self.engine, self.roots)
        let (jobRequest, secrets) = try await blocking.runIfActive {
            try JobRequest.parse(body, roots: roots, engine: engine)
        }
        let record = try await queue.submit(jobRequest, secrets: secrets)
        return ServiceResponder.json(record.json, status: .accepted, headers: [.location: "/api/v1/jobs/\(record.id)"])
    }

    private func listJobs(_ request: Request) async throws -> Response {
        let query = try QueryParameters(request.uri.query)
        try query.checkNames(["limit", "before", "state"])
        let limit = try query["limit"].map { text throws(Problem) in
            guard let value = Int(text), (1...500).contains(value) else {
                throw Problem.badRequest("\"limit\" must be an integer from 1 to 500", field: "limit")
            }
            return value
        } ?? 50
        let before = try query["before"].map { text throws(Problem) in
            guard let value = Int64(text), value > 0 else {
                throw Problem.badRequest("\"before\" must be a positive job number", field: "before")
            }
            return value
        }
        let state = try query["state"].map { text throws(Problem) in
            guard let state = JobState(rawValue: text) else {
                throw Problem.badRequest("\"state\" must be one of \(JobState.allCases.map(\.rawValue).joined(separator: ", "))",
                                         field: "state")
            }
            return state
        }
        let jobs = try await queue.list(limit: limit, before: before, state: state)
        let next: JSONValue = jobs.count == limit ? (jobs.last.map { .int($0.number) } ?? .null) : .null
        return ServiceResponder.json(.object([("jobs", .array(jobs.map(\.json))), ("next_before", next)]))
    }

    private func job(_ id: String) async throws -> Response {
        guard let record = try await queue.current(id) else { throw Problem.notFound("no job \(id)") }
        return ServiceResponder.json(record.json)
    }

    private func cancelJob(_ id: String) async throws -> Response {
        let record = try await queue.cancel(id)
        return ServiceResponder.json(record.json, status: record.state.isFinished ? .ok : .accepted)
    }

    private func resumeJob(_ id: String, _ request: Request) async throws -> Response {
        let credentials = try Self.credentials(try await Self.body(of: request))
        let record = try await queue.resume(id, credentials: credentials)
        return ServiceResponder.json(record.json, status: .accepted, headers: [.location: "/api/v1/jobs/\(record.id)"])
    }

    private func retryJob(_ id: String, _ request: Request) async throws -> Response {
        let credentials = try Self.credentials(try await Self.body(of: request))
        let record = try await queue.retry(id, credentials: credentials)
        return ServiceResponder.json(record.json, status: .accepted, headers: [.location: "/api/v1/jobs/\(record.id)"])
    }

    private func jobEvents(_ id: String, _ request: Request, context: ServiceRequestContext) async throws -> Response {
        guard try await queue.current(id) != nil else { throw Problem.notFound("no job \(id)") }
        let lastEventID = try request.headers[.lastEventID].map { text throws(Problem) in
            guard let value = Int64(text.trimmingCharacters(in: .whitespaces)) else {
                throw Problem.badRequest("Last-Event-ID must be an event id sent by this stream", field: "Last-Event-ID")
            }
            return value
        }
        let queue = self.queue
        return try await EventStream.response(for: id, lastEventID: lastEventID, events: events,
                                              stored: { try await queue.current($0) }, channel: context.channel)
    }

    /// A resume's or retry's body: only the secrets that were not stored.
    private static func credentials(_ body: [UInt8]) throws(Problem) -> JSONValue {
        let fields = try RequestFields(body: body, allowed: ["password", "passphrase"])
        var pairs: [(String, JSONValue)] = []
        if let password = try fields.optionalString("password") { pairs.append(("password", .string(password))) }
        if let passphrase = try fields.optionalString("passphrase") { pairs.append(("passphrase", .string(passphrase))) }
        return .object(pairs)
    }

    // MARK: Hosts

    private func probeHost(_ request: Request) async throws -> Response {
        let fields = try RequestFields(body: try await Self.body(of: request), allowed: ["host", "port"])
        let (host, port) = (try Self.hostName(fields), try fields.integer("port", in: 1...65535) ?? 22)
        let engine = self.engine
        return ServiceResponder.json(try await blocking.runIfActive { try engine.probeHost(host: host, port: port) })
    }

    private func trustHost(_ request: Request) async throws -> Response {
        let fields = try RequestFields(body: try await Self.body(of: request), allowed: ["host", "port", "fingerprint"])
        let (host, port) = (try Self.hostName(fields), try fields.integer("port", in: 1...65535) ?? 22)
        let fingerprint = try fields.string("fingerprint")
        guard fingerprint.hasPrefix("SHA256:") else {
            throw Problem.badRequest("\"fingerprint\" is the SHA256:... fingerprint the probe showed", field: "fingerprint")
        }
        let engine = self.engine
        return ServiceResponder.json(try await blocking.runIfActive {
            try engine.trustHost(host: host, port: port, fingerprint: fingerprint)
        })
    }

    private static func hostName(_ fields: RequestFields) throws(Problem) -> String {
        let host = try fields.string("host")
        let valid = !host.isEmpty && host.count <= 253
            && host.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-:_".unicodeScalars.contains($0)) }
        guard valid else { throw .badRequest("\"host\" must be a host name or an IP address", field: "host") }
        return host
    }

    // MARK: Bodies

    /// The request body, at most 64 KiB (413 beyond, decided from Content-Length before reading when it is
    /// given); a body that says it is not JSON is refused (415).
    static func body(of request: Request) async throws -> [UInt8] {
        if let type = request.headers[.contentType],
           let mediaType = type.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased(),
           mediaType != "application/json" && !(mediaType.hasPrefix("application/") && mediaType.hasSuffix("+json")) {
            throw Problem(.unsupportedMediaType, code: "unsupported-media-type", "the request body must be application/json, not \(type)")
        }
        let tooLarge = Problem(.contentTooLarge, code: "body-too-large",
                               "the request body is larger than \(ServiceResponder.maxBodyBytes / 1024) KiB")
        if let length = request.headers[.contentLength].flatMap(Int.init), length > ServiceResponder.maxBodyBytes {
            throw tooLarge
        }
        do {
            var buffer = try await request.body.collect(upTo: ServiceResponder.maxBodyBytes)
            return buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch is NIOTooManyBytesError {
            throw tooLarge
        }
    }
}

/// One API route.
struct APIRoute: Sendable {
    typealias Handler = @Sendable (APIHandlers, Request, ServiceRequestContext, String) async throws -> Response
    let method: HTTPRequest.Method
    /// The path under `/api/v1`, as in the OpenAPI document.
    let path: String
    let handler: Handler

    init(_ method: HTTPRequest.Method, _ path: String, handler: @escaping Handler) {
        self.method = method
        self.path = path
        self.handler = handler
    }

    /// The `{id}` of `components` (or "" when the route has none) when they match this route's path.
    func match(_ components: ArraySlice<Substring>) -> String? {
        let pattern = path.split(separator: "/")
        guard pattern.count == components.count else { return nil }
        var id = ""
        for (expected, actual) in zip(pattern, components) {
            if expected == "{id}" {
                guard Self.isJobID(actual) else { return nil }
                id = String(actual)
            } else if expected != actual {
                return nil
            }
        }
        return id
    }

    /// Job ids are lower-case UUIDs.
    static func isJobID(_ text: Substring) -> Bool {
        text.utf8.count == 36 && text.utf8.enumerated().allSatisfy { index, byte in
            [8, 13, 18, 23].contains(index) ? byte == UInt8(ascii: "-")
                : (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
        }
    }
}

extension JSONValue {
    /// Parses a request body (400 when it is not JSON).
    static func parseRequestBody(_ body: [UInt8]) throws(Problem) -> JSONValue {
        do { return try parse(body) } catch { throw .badRequest("the request body is not JSON: \(error)") }
    }
}
