#if canImport(Glibc)
import Glibc
#endif

/// How `kdct-native serve` runs: where it listens, which folders it may touch, where its job store is.
public struct ServerConfiguration: Sendable {
    /// The address to listen on (loopback by default).
    public var host = "127.0.0.1"
    /// The port (0: any free port, printed at startup).
    public var port = 8080
    /// The folders every path must be inside (`--root`, repeatable; default: the user's home).
    public var roots: [String] = [ServerConfiguration.homeDirectory]
    /// The job store's folder (`--state`).
    public var stateDirectory = ServerConfiguration.defaultStateDirectory
    /// Jobs running at once (`--jobs`).
    public var jobWorkers = 1
    /// Jobs waiting at most (`--queue`).
    public var queueCapacity = 100
    /// PEM certificate chain and private key for HTTPS (`--tls-cert`, `--tls-key`).
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Listen on a non-loopback address without TLS (`--insecure-listen`): the token then crosses the network in
    /// clear text.
    public var insecureListen = false
    /// More names the `Host` header may carry (`--allow-host`), e.g. the DNS name of a server behind TLS.
    public var allowedHosts: [String] = []
    /// The known_hosts file for exports and host probes (default `~/.ssh/known_hosts`, as `export`).
    public var knownHostsFile: String?
    /// Event streams (SSE clients) open at once.
    public var maxEventStreams = 64
    /// Connections open at once.
    public var maxConnections = 256
    /// Conversion worker threads per job (nil: one per CPU, as the CLI).
    public var conversionWorkers: Int?

    /// Defaults: 127.0.0.1:8080, the home folder as the only root, the default state folder, one job at a time.
    public init() {}

    /// True when `host` is a loopback address or `localhost`.
    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// True with TLS.
    public var isSecure: Bool { tlsCertificate != nil }

    /// Refuses a configuration that would expose the service carelessly or cannot work.
    public func validate() throws {
        guard (0...65535).contains(port) else { throw ConfigurationError("the port must be between 0 and 65535") }
        guard (1...64).contains(jobWorkers) else { throw ConfigurationError("--jobs must be between 1 and 64") }
        guard (1...10000).contains(queueCapacity) else { throw ConfigurationError("--queue must be between 1 and 10000") }
        if (tlsCertificate == nil) != (tlsKey == nil) { throw ConfigurationError("--tls-cert and --tls-key go together") }
        if !isLoopback && !isSecure && !insecureListen {
            throw ConfigurationError("listening on \(host) (not loopback) needs --tls-cert and --tls-key, or --insecure-listen to send the token and your data in clear text")
        }
        if roots.isEmpty { throw ConfigurationError("at least one --root is needed") }
    }

    /// Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all addresses).
    public static func parseListen(_ text: String) throws -> (host: String, port: Int) {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ConfigurationError("--listen expects [IPV6]:PORT, got '\(text)'")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ConfigurationError("--listen expects HOST:PORT, got '\(text)'")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        if host.isEmpty { host = "0.0.0.0" }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ConfigurationError("--listen: '\(portText)' is not a port")
        }
        return (String(host), port)
    }

    /// The user's home folder (`$HOME`, else the password database).
    public static var homeDirectory: String {
        if let home = getenv("HOME"), let text = String(validatingCString: home), !text.isEmpty { return text }
        if let entry = getpwuid(getuid()), let directory = entry.pointee.pw_dir { return String(cString: directory) }
        return "/"
    }

    /// `$XDG_STATE_HOME/kdct-native`, else `~/.local/state/kdct-native`.
    public static var defaultStateDirectory: String {
        if let state = getenv("XDG_STATE_HOME"), let text = String(validatingCString: state), text.hasPrefix("/") {
            return text + "/kdct-native"
        }
        return homeDirectory + "/.local/state/kdct-native"
    }
}

/// A configuration the service refuses to start with.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
