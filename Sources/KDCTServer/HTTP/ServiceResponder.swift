import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore

/// The context of one request: the connection it came on (the event stream's write watchdog closes it).
public struct ServiceRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client's connection.
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// What every request goes through, in order: the `Host` check (DNS rebinding), then either the web app's
/// files or the API — token (bearer or cookie), `Origin` of state-changing requests (CSRF), body limit, route —
/// and on the way out the security headers and one log line (method, path without the query, status, duration).
/// Any error becomes a problem+json answer; nothing escapes as an empty 500.
struct ServiceResponder: HTTPResponder {
    typealias Context = ServiceRequestContext

    let api: APIHandlers
    let token: AccessToken
    let hosts: HostPolicy
    let logger: Logger

    /// The cookie the token URL sets.
    static let cookieName = "kdct_token"
    /// The largest request body accepted.
    static let maxBodyBytes = 64 << 10

    func respond(to request: Request, context: Context) async throws -> Response {
        let start = Timestamp.monotonic()
        var response: Response
        do {
            response = try await route(request, context: context)
        } catch {
            response = Self.problemResponse(LibraryEngine.problem(from: error))
        }
        SecurityHeaders.apply(to: &response.headers, secure: hosts.secure)
        let milliseconds = (Timestamp.monotonic() - start) * 1000
        logger.info("\(request.method.rawValue) \(request.uri.path) \(response.status.code) \(JSONValue.number(milliseconds, decimals: 1).text) ms")
        return response
    }

    private func route(_ request: Request, context: Context) async throws -> Response {
        guard let authority = request.head.authority else {
            throw Problem(.badRequest, code: "missing-host", "the request has no Host header")
        }
        guard hosts.allows(authority: authority) else {
            throw Problem(.forbidden, code: "host-not-allowed",
                          "this service does not answer for host \"\(authority)\" (use the address it printed at startup; see --allow-host)")
        }
        let path = request.uri.path
        guard path == "/api" || path.hasPrefix("/api/") else {
            return try StaticFiles.respond(to: request, token: token, secure: hosts.secure)
        }
        guard isAuthorized(request) else {
            var problem = Problem(.unauthorized, code: "unauthorized",
                                  "a valid access token is required: open the URL kdct-native serve printed, or send \"Authorization: Bearer TOKEN\"")
            problem.headers[.wwwAuthenticate] = "Bearer realm=\"kdct-native\""
            throw problem
        }
        if ![.get, .head].contains(request.method) {
            if let origin = request.headers[.origin], !hosts.isOwnOrigin(origin, authority: authority) {
                throw Problem(.forbidden, code: "foreign-origin",
                              "requests that change something are only accepted from the service's own pages, not from \(origin)")
            }
            if let site = request.headers[.secFetchSite], site != "same-origin" && site != "none" {
                throw Problem(.forbidden, code: "foreign-origin", "a \(site) request cannot change anything here")
            }
        }
        return try await api.respond(to: request, context: context)
    }

    /// True when the request carries the token, as a bearer token or as the cookie set by the token URL.
    private func isAuthorized(_ request: Request) -> Bool {
        if let header = request.headers[.authorization] {
            let parts = header.split(separator: " ", maxSplits: 1)
            return parts.count == 2 && parts[0].lowercased() == "bearer" && token.matches(String(parts[1]))
        }
        for header in request.headers[values: .cookie] {
            for item in header.split(separator: ";") {
                let pair = item.split(separator: "=", maxSplits: 1)
                if pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces) == Self.cookieName,
                   token.matches(String(pair[1]).trimmingCharacters(in: .whitespaces)) {
                    return true
                }
            }
        }
        return false
    }

    // MARK: Responses

    /// A JSON answer.
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "application/json"
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: value.text)))
    }

    /// A problem+json answer.
    static func problemResponse(_ problem: Problem) -> Response {
        var headers = problem.headers
        headers[.contentType] = "application/problem+json"
        if problem.status == .contentTooLarge { headers[.connection] = "close" }
        return Response(status: problem.status, headers: headers,
                        body: ResponseBody(byteBuffer: ByteBuffer(string: problem.json.text)))
    }
}

/// The query of a request: `name=value` pairs, `%XX` and `+` decoded.
struct QueryParameters {
    private var values: [String: String] = [:]

    init(_ query: String?) throws(Problem) {
        guard let query, !query.isEmpty else { return }
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = try Self.decode(pair[0])
            let value = pair.count > 1 ? try Self.decode(pair[1]) : ""
            guard values[name] == nil else { throw .badRequest("query parameter \"\(name)\" appears twice", field: name) }
            values[name] = value
        }
    }

    subscript(name: String) -> String? { values[name] }

    /// Names the route does not know are refused, as unknown body fields are.
    func checkNames(_ allowed: Set<String>) throws(Problem) {
        if let unknown = values.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw .badRequest("unknown query parameter \"\(unknown)\"", field: unknown)
        }
    }

    private static func decode(_ text: Substring) throws(Problem) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(0x20)
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(Self.hex), let low = iterator.next().flatMap(Self.hex) else {
                    throw .badRequest("malformed %-escape in the query")
                }
                bytes.append(high << 4 | low)
            default: bytes.append(byte)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else { throw .badRequest("the query is not UTF-8") }
        return decoded
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
