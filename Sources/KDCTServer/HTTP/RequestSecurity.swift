import HTTPTypes
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The access token printed at startup (as Jupyter does): 32 random bytes as 64 hex digits, fresh on every start.
public struct AccessToken: Sendable {
    /// The token text.
    public let value: String

    /// A fresh random token.
    public init() {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        value = String((0..<32).flatMap { _ -> [Character] in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return [digits[Int(byte >> 4)], digits[Int(byte & 15)]]
        })
    }

    /// True when `candidate` is the token. The time taken depends only on the lengths, never on where the two
    /// first differ (the token's length is not a secret: every token has 64 characters).
    public func matches(_ candidate: String) -> Bool {
        let expected = Array(value.utf8)
        let given = Array(candidate.utf8)
        var difference = UInt8(expected.count == given.count ? 0 : 1)
        for index in 0..<expected.count {
            difference |= expected[index] ^ (index < given.count ? given[index] : 0)
        }
        return difference == 0
    }
}

/// Which `Host` headers the service answers (DNS rebinding: a page on evil.example whose name now resolves to
/// 127.0.0.1 sends `Host: evil.example`), and which `Origin` counts as the service's own (CSRF).
final class HostPolicy: Sendable {
    /// Lower-case host names and addresses accepted in `Host`.
    let names: Set<String>
    /// True with TLS.
    let secure: Bool
    /// The port listened on, known once the server is bound (it may have been chosen by the system).
    private let boundPort = Atomic<Int>(0)

    /// The names for a service listening on `listenHost`: it, `localhost`, the loopback addresses, and `extra`
    /// (`--allow-host`). A wildcard listen (`0.0.0.0`, `::`) also accepts this machine's name and addresses.
    init(listenHost: String, secure: Bool, extra: [String]) {
        var names: Set<String> = ["localhost", "127.0.0.1", "::1", listenHost.lowercased()]
        if listenHost == "0.0.0.0" || listenHost == "::" {
            names.formUnion(Self.localAddresses())
            if let name = Self.machineName() { names.insert(name.lowercased()) }
        }
        names.formUnion(extra.map { $0.lowercased() })
        self.names = names
        self.secure = secure
    }

    /// Records the port the server is bound to.
    func setPort(_ port: Int) { boundPort.store(port, ordering: .releasing) }

    /// The port the server is bound to (0 until it is).
    var port: Int { boundPort.load(ordering: .acquiring) }

    /// True when `authority` (a `Host` header value, `name[:port]` or `[v6]:port`) names this service.
    func allows(authority: String) -> Bool {
        guard let (host, port) = Self.split(authority: authority) else { return false }
        return names.contains(host.lowercased()) && (port ?? (secure ? 443 : 80)) == self.port
    }

    /// True when `origin` (an `Origin` header) is this service as reached through `authority`.
    func isOwnOrigin(_ origin: String, authority: String) -> Bool {
        let scheme = secure ? "https://" : "http://"
        guard origin.lowercased().hasPrefix(scheme) else { return false }
        let originAuthority = String(origin.dropFirst(scheme.count))
        guard let (originHost, originPort) = Self.split(authority: originAuthority),
              let (host, port) = Self.split(authority: authority) else { return false }
        let defaultPort = secure ? 443 : 80
        return originHost.lowercased() == host.lowercased() && (originPort ?? defaultPort) == (port ?? defaultPort)
    }

    /// `(host, port)` of `name[:port]` or `[v6][:port]`; nil when malformed.
    static func split(authority: String) -> (String, Int?)? {
        guard !authority.isEmpty, !authority.contains("/"), !authority.contains("@") else { return nil }
        var host = Substring(authority)
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let tail = authority[authority.index(after: close)...]
            if !tail.isEmpty {
                guard tail.hasPrefix(":") else { return nil }
                portText = tail.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        }
        guard !host.isEmpty else { return nil }
        guard let portText else { return (String(host), nil) }
        guard let port = Int(portText), (1...65535).contains(port) else { return nil }
        return (String(host), port)
    }

    /// This machine's host name.
    static func machineName() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The addresses of this machine's interfaces.
    private static func localAddresses() -> Set<String> {
        var names: Set<String> = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return names }
        defer { freeifaddrs(list) }
        var entry = list
        while let current = entry {
            entry = current.pointee.ifa_next
            guard let address = current.pointee.ifa_addr else { continue }
            let family = Int32(address.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            if getnameinfo(address, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST) == 0 {
                var text = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if let percent = text.firstIndex(of: "%") { text = String(text[..<percent]) }
                names.insert(text.lowercased())
            }
        }
        return names
    }
}

/// The headers every response carries: a CSP that allows only the service's own files (no inline script, no
/// framing), no MIME sniffing, no referrer, no caching of API answers.
enum SecurityHeaders {
    static let contentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    /// Adds the headers to `fields` (keeping a stricter CSP a handler set, such as the sandbox of file contents).
    static func apply(to fields: inout HTTPFields, secure: Bool) {
        if fields[.contentSecurityPolicy] == nil { fields[.contentSecurityPolicy] = contentSecurityPolicy }
        fields[.xContentTypeOptions] = "nosniff"
        fields[.xFrameOptions] = "DENY"
        fields[.referrerPolicy] = "no-referrer"
        fields[.crossOriginOpenerPolicy] = "same-origin"
        fields[.crossOriginResourcePolicy] = "same-origin"
        if fields[.cacheControl] == nil { fields[.cacheControl] = "no-store" }
        if secure { fields[.strictTransportSecurity] = "max-age=31536000" }
    }
}

extension HTTPField.Name {
    static let xFrameOptions = Self("X-Frame-Options")!
    static let referrerPolicy = Self("Referrer-Policy")!
    static let crossOriginOpenerPolicy = Self("Cross-Origin-Opener-Policy")!
    static let lastEventID = Self("Last-Event-ID")!
    static let secFetchSite = Self("Sec-Fetch-Site")!
}
