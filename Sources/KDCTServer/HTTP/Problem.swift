import HTTPTypes

/// An error answered as `application/problem+json` (RFC 9457): the HTTP status, a `detail` for people, and the
/// library's stable `code`, `file` and `field` (the same names as the CLI's `--progress json` error object).
///
/// Every failure of a request ends as one of these; nothing reaches the client as a stack trace or an empty 500.
public struct Problem: Error, Sendable, CustomStringConvertible {
    /// The HTTP status.
    public var status: HTTPResponse.Status
    /// A stable code: the library's error kind (`not-found`, `corrupt`...) or the service's own
    /// (`unauthorized`, `forbidden-path`, `body-too-large`...).
    public var code: String
    /// What went wrong, in words.
    public var detail: String
    /// The file concerned (a path as the client gave it, or as the library names it).
    public var file: String?
    /// The field of the image or of the request concerned.
    public var field: String?
    /// Headers to add to the response (`WWW-Authenticate`, `Allow`, `Retry-After`).
    public var headers: HTTPFields = [:]

    /// Creates a problem.
    public init(_ status: HTTPResponse.Status, code: String, _ detail: String, file: String? = nil,
                field: String? = nil) {
        self.status = status
        self.code = code
        self.detail = detail
        self.file = file
        self.field = field
    }

    public var description: String { "\(status.code) \(code): \(detail)" }

    /// The problem document.
    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("type", .string("about:blank")),
            ("title", .string(status.reasonPhrase)),
            ("status", .int(Int64(status.code))),
            ("detail", .string(detail)),
            ("code", .string(code)),
        ]
        if let file { pairs.append(("file", .string(file))) }
        if let field { pairs.append(("field", .string(field))) }
        return .object(pairs)
    }

    // MARK: The client's mistakes

    /// 400: the request is malformed (`field` names the request field).
    static func badRequest(_ detail: String, field: String? = nil) -> Problem {
        Problem(.badRequest, code: "invalid-request", detail, field: field)
    }

    /// 403: a path outside every root, with `..`, or with a NUL byte; names the path.
    static func forbiddenPath(_ path: String, _ why: String, field: String? = nil) -> Problem {
        Problem(.forbidden, code: "forbidden-path", "\(path): \(why)", file: path, field: field)
    }

    /// 404 for an unknown resource.
    static func notFound(_ detail: String) -> Problem { Problem(.notFound, code: "not-found", detail) }

    /// 409: the resource is not in a state that allows the request.
    static func conflict(_ detail: String, code: String = "conflict") -> Problem {
        Problem(.conflict, code: code, detail)
    }
}
