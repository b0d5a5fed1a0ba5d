import ArgumentParser
import KDCTServer
import Logging

/// `serve`: the conversion service (HTTP API and web app) over the same libraries as the other commands.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the conversion service: an HTTP API and web app, with jobs kept across restarts.",
        discussion: """
            Prints the address to open, with a fresh access token, once it accepts connections (with --output json, \
            as a JSON object with url and token). Every path it reads, lists or writes must be inside a --root. \
            SIGINT or SIGTERM stops it: running jobs are cancelled (their temporary files removed) and recorded as \
            interrupted. The API is described at /api/v1/openapi.json.
            """)

    @Option(help: ArgumentHelp("Address and port (a non-loopback address needs --tls-cert/--tls-key or --insecure-listen; port 0 picks a free one).", valueName: "host:port"))
    var listen = "127.0.0.1:8080"

    @Option(name: .customLong("root"), help: ArgumentHelp("A folder the service may read, list and write in (repeatable; default: your home folder).", valueName: "dir"))
    var roots: [String] = []

    @Option(help: ArgumentHelp("Folder of the job store (default: $XDG_STATE_HOME/kdct-native, else ~/.local/state/kdct-native).", valueName: "dir"))
    var state: String?

    @Option(help: "Jobs running at once.")
    var jobs = 1

    @Option(help: "Jobs waiting at most.")
    var queue = 100

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain for HTTPS.", valueName: "file"))
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key for HTTPS.", valueName: "file"))
    var tlsKey: String?

    @Flag(name: .customLong("insecure-listen"), help: "Allow a non-loopback address without TLS (the token and your data cross the network in clear text).")
    var insecureListen = false

    @Option(name: .customLong("allow-host"), help: ArgumentHelp("Another name clients may reach the service by (the Host header; repeatable).", valueName: "name"))
    var allowedHosts: [String] = []

    @Option(name: .customLong("known-hosts"), help: ArgumentHelp("known_hosts file for exports and host keys (default ~/.ssh/known_hosts).", valueName: "file"))
    var knownHosts: String?

    @Option(name: .customLong("max-event-streams"), help: "Event streams (GET /jobs/{id}/events) open at once.")
    var maxEventStreams = 64

    @Option(name: .customShort("m"), help: "Conversion worker threads per job (default: the number of CPUs).")
    var workers: Int?

    @Flag(help: "Open the web app in the desktop's browser (xdg-open) once the service runs; only in a desktop session (DISPLAY or WAYLAND_DISPLAY set).")
    var open = false

    @Option(help: "How the startup line is printed: human or json.")
    var output: OutputStyle = .human

    func validate() throws {
        _ = try ServerConfiguration.parseListen(listen)
        if let workers, workers < 1 || workers > 256 { throw ValidationError("-m must be between 1 and 256") }
        if maxEventStreams < 1 || maxEventStreams > 4096 { throw ValidationError("--max-event-streams must be between 1 and 4096") }
    }

    func run() throws {
        var configuration = ServerConfiguration()
        (configuration.host, configuration.port) = try ServerConfiguration.parseListen(listen)
        if !roots.isEmpty { configuration.roots = roots }
        if let state { configuration.stateDirectory = state }
        configuration.jobWorkers = jobs
        configuration.queueCapacity = queue
        configuration.tlsCertificate = tlsCertificate
        configuration.tlsKey = tlsKey
        configuration.insecureListen = insecureListen
        configuration.allowedHosts = allowedHosts
        configuration.knownHostsFile = knownHosts
        configuration.conversionWorkers = workers
        configuration.maxEventStreams = maxEventStreams
        try configuration.validate()
        if !configuration.isLoopback && !configuration.isSecure {
            Console.error("warning: --insecure-listen: the access token and every file sent travel unencrypted on \(configuration.host)\n")
        }
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        let service = ConversionService(configuration: configuration, logger: Logger(label: "kdct-native.serve"))
        let (json, open) = (output == .json, self.open)
        try service.runUntilStopped { endpoint in
            Console.out(json ? endpoint.jsonLine + "\n" : "kdct-native serve: open \(endpoint.url)\n")
            if open {
                Console.error(BrowserLauncher.open(url: endpoint.url, stateDirectory: endpoint.stateDirectory) + "\n")
            }
        }
    }
}
