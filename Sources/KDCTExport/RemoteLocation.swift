import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// Who to connect to: a user on a host and TCP port.
public struct SSHEndpoint: Sendable, Equatable {
    /// The login name.
    public var user: String
    /// The host name or address as the user wrote it (IPv6 without brackets); known_hosts entries use this form.
    public var host: String
    /// The TCP port (22 by default).
    public var port: Int

    /// An endpoint.
    public init(user: String, host: String, port: Int = 22) {
        self.user = user
        self.host = host
        self.port = port
    }

    /// The name known_hosts files use for this host: `host` on port 22, `[host]:port` otherwise (OpenSSH's rule).
    public var knownHostsName: String { port == 22 ? host : "[\(host)]:\(port)" }

    /// `user@host` or `user@[host]:port`, for messages.
    public var displayName: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return port == 22 ? "\(user)@\(bracketed)" : "\(user)@\(bracketed):\(port)"
    }
}

/// A file on a remote host: where an export or a direct conversion writes.
public struct RemoteLocation: Sendable, Equatable {
    /// The host to connect to.
    public var endpoint: SSHEndpoint
    /// The path on the host; relative paths are relative to the login directory, as with scp and sftp.
    public var path: String

    /// A location.
    public init(endpoint: SSHEndpoint, path: String) {
        self.endpoint = endpoint
        self.path = path
    }

    /// The login name of the local user, the default remote user as with ssh.
    public static func localUserName() -> String {
        if let name = getenv("USER"), let text = String(validatingCString: name), !text.isEmpty { return text }
        if let entry = getpwuid(getuid()), let name = entry.pointee.pw_name { return String(cString: name) }
        return "root"
    }

    /// Parses scp-style `[USER@]HOST:PATH` (`[v6addr]:PATH` for IPv6); the port comes separately (`-P`).
    public static func parse(scpStyle text: String, port: Int = 22) throws -> RemoteLocation {
        var rest = Substring(text)
        var user = localUserName()
        // The user part ends at the last '@' before the host (user names may not contain ':').
        if let colon = rest.firstIndex(of: ":"), let at = rest[..<colon].lastIndex(of: "@") {
            user = String(rest[..<at])
            rest = rest[rest.index(after: at)...]
        }
        let host: Substring
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw KDCTError(.invalidArgument, "unterminated '[' in remote destination '\(text)'")
            }
            host = rest[rest.index(after: rest.startIndex)..<close]
            rest = rest[rest.index(after: close)...]
            guard rest.hasPrefix(":") else {
                throw KDCTError(.invalidArgument, "remote destination '\(text)' needs ':PATH' after the host")
            }
        } else {
            guard let colon = rest.firstIndex(of: ":") else {
                throw KDCTError(.invalidArgument, "remote destination '\(text)' must look like USER@HOST:PATH")
            }
            host = rest[..<colon]
            rest = rest[colon...]
        }
        rest = rest.dropFirst()
        try validate(user: user, host: String(host), port: port, text: text)
        return RemoteLocation(endpoint: SSHEndpoint(user: user, host: String(host), port: port),
                              path: rest.isEmpty ? "." : String(rest))
    }

    /// Parses `sftp://[USER@]HOST[:PORT]/PATH` (the IETF draft's form): `/PATH` is absolute on the host,
    /// `/~/PATH` relative to the login directory; `%XX` escapes are decoded.
    public static func parse(url text: String) throws -> RemoteLocation {
        guard text.lowercased().hasPrefix("sftp://") else {
            throw KDCTError(.invalidArgument, "'\(text)' is not an sftp:// URL")
        }
        let afterScheme = text.dropFirst("sftp://".count)
        guard let slash = afterScheme.firstIndex(of: "/") else {
            throw KDCTError(.invalidArgument, "sftp URL '\(text)' has no path (sftp://USER@HOST[:PORT]/path/disk.qcow2)")
        }
        var authority = afterScheme[..<slash]
        var user = localUserName()
        if let at = authority.lastIndex(of: "@") {
            user = try percentDecoded(authority[..<at], in: text)
            // A ";fingerprint=..." parameter (draft URI syntax) is not supported: known_hosts decides.
            if user.contains(";") {
                throw KDCTError(.invalidArgument, "sftp URL parameters (';...') are not supported in '\(text)'")
            }
            authority = authority[authority.index(after: at)...]
        }
        var host = Substring(authority)
        var port = 22
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw KDCTError(.invalidArgument, "unterminated '[' in '\(text)'")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let tail = authority[authority.index(after: close)...]
            if !tail.isEmpty {
                guard tail.hasPrefix(":"), let value = Int(tail.dropFirst()) else {
                    throw KDCTError(.invalidArgument, "bad port in '\(text)'")
                }
                port = value
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let value = Int(authority[authority.index(after: colon)...]) else {
                throw KDCTError(.invalidArgument, "bad port in '\(text)'")
            }
            port = value
        }
        var path = try percentDecoded(afterScheme[slash...], in: text)
        if path.hasPrefix("/~/") { path = String(path.dropFirst(3)) }
        try validate(user: user, host: String(host), port: port, text: text)
        guard !path.isEmpty, path != "/" , !path.hasSuffix("/") else {
            throw KDCTError(.invalidArgument, "sftp URL '\(text)' must name a file")
        }
        return RemoteLocation(endpoint: SSHEndpoint(user: user, host: String(host), port: port), path: path)
    }

    /// True when `text` is an `sftp://` URL (the convert command's remote destination).
    public static func isURL(_ text: String) -> Bool { text.lowercased().hasPrefix("sftp://") }

    /// The location as an `sftp://` URL, for messages.
    public var urlString: String {
        let host = endpoint.host.contains(":") ? "[\(endpoint.host)]" : endpoint.host
        let port = endpoint.port == 22 ? "" : ":\(endpoint.port)"
        let shownPath = path.hasPrefix("/") ? path : "/~/" + path
        return "sftp://\(endpoint.user)@\(host)\(port)\(shownPath)"
    }

    /// `user@host:path` (scp style), for messages.
    public var displayName: String { "\(endpoint.displayName):\(path)" }

    private static func validate(user: String, host: String, port: Int, text: String) throws {
        guard !host.isEmpty else { throw KDCTError(.invalidArgument, "no host in '\(text)'") }
        guard !user.isEmpty else { throw KDCTError(.invalidArgument, "empty user name in '\(text)'") }
        guard (1...65535).contains(port) else {
            throw KDCTError(.invalidArgument, "port \(port) is not between 1 and 65535")
        }
        // Control characters could end up in a known_hosts line or a remote command.
        for scalar in (user + host).unicodeScalars where scalar.value < 0x20 || scalar.value == 0x7f {
            throw KDCTError(.invalidArgument, "control character in the user or host of '\(text)'")
        }
    }

    private static func percentDecoded(_ text: Substring, in whole: String) throws -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard iterator.count >= 2,
                      let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16) else {
                    throw KDCTError(.invalidArgument, "bad %-escape in '\(whole)'")
                }
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw KDCTError(.invalidArgument, "%-escapes in '\(whole)' do not decode to UTF-8")
        }
        if decoded.utf8.contains(0) { throw KDCTError(.invalidArgument, "NUL byte in '\(whole)'") }
        return decoded
    }
}
