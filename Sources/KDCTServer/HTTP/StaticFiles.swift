import Hummingbird
import HTTPTypes
import NIOCore

/// The web app: files from `Sources/KDCTServer/Resources/Web`, compiled into the binary (SwiftPM's
/// `embedInCode`), so `kdct-native` needs nothing installed beside it. Visiting `/?token=TOKEN` sets the
/// access cookie (HttpOnly, SameSite=Strict) and redirects to `/`, so the token leaves the address bar.
enum StaticFiles {
    /// URL path -> content. Every file of Resources/Web needs its line here (a test checks that none is missing);
    /// `PackageResources.NAME_EXT` is the generated name of `NAME.EXT`.
    static let files: [String: [UInt8]] = [
        "/index.html": PackageResources.index_html,
        "/style.css": PackageResources.style_css,
        "/icon.svg": PackageResources.icon_svg,
        "/app.js": PackageResources.app_js,
        "/strings.js": PackageResources.strings_js,
        "/dom.js": PackageResources.dom_js,
        "/api.js": PackageResources.api_js,
        "/dialog.js": PackageResources.dialog_js,
        "/disks.js": PackageResources.disks_js,
        "/convert.js": PackageResources.convert_js,
        "/export.js": PackageResources.export_js,
        "/jobs.js": PackageResources.jobs_js,
    ]

    /// The content type for a file name's extension.
    static func contentType(of path: String) -> String {
        switch path.split(separator: ".").last.map({ $0.lowercased() }) ?? "" {
        case "html": return "text/html; charset=utf-8"
        case "js", "mjs": return "text/javascript; charset=utf-8"
        case "css": return "text/css; charset=utf-8"
        case "json": return "application/json"
        case "svg": return "image/svg+xml"
        case "png": return "image/png"
        case "ico": return "image/x-icon"
        case "woff2": return "font/woff2"
        case "txt": return "text/plain; charset=utf-8"
        default: return "application/octet-stream"
        }
    }

    static func respond(to request: Request, token: AccessToken, secure: Bool) throws -> Response {
        guard request.method == .get || request.method == .head else {
            var problem = Problem(.methodNotAllowed, code: "method-not-allowed", "the web app's files are read-only")
            problem.headers[.allow] = "GET, HEAD"
            throw problem
        }
        var path = request.uri.path
        if path == "/" {
            let query = try QueryParameters(request.uri.query)
            if let given = query["token"] {
                guard token.matches(given) else {
                    throw Problem(.unauthorized, code: "unauthorized", "this token is not the service's current token (it changes at every start)")
                }
                let cookie = "\(ServiceResponder.cookieName)=\(token.value); Path=/; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "")
                return Response(status: .seeOther, headers: [.location: "/", .setCookie: cookie])
            }
            path = "/index.html"
        }
        guard let bytes = files[path] else { throw Problem.notFound("no page \(request.uri.path)") }
        let body = request.method == .head ? ResponseBody() : ResponseBody(byteBuffer: ByteBuffer(bytes: bytes))
        return Response(status: .ok, headers: [.contentType: contentType(of: path), .cacheControl: "no-cache"], body: body)
    }
}
