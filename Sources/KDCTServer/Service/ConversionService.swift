import Dispatch
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Where the service listens, printed once it accepts connections.
public struct ServiceEndpoint: Sendable {
    /// The web app's address with the access token (`http://127.0.0.1:8080/?token=...`).
    public var url: String
    /// The access token (also the API's bearer token).
    public var token: String
    /// The address and port actually listened on (the port chosen when 0 was asked).
    public var host: String
    public var port: Int
    /// The root folders (canonical) and the state folder.
    public var roots: [String]
    public var stateDirectory: String

    /// The startup line for `--output json`: `url` and `token` first (the contract scripts rely on).
    public var jsonLine: String {
        JSONValue.object([
            ("url", .string(url)),
            ("token", .string(token)),
            ("api", .string(url.prefix { $0 != "?" }.dropLast() + "/api/v1")),
            ("host", .string(host)),
            ("port", .int(Int64(port))),
            ("roots", .array(roots.map { .string($0) })),
            ("state", .string(stateDirectory)),
        ]).text
    }
}

/// `kdct-native serve`: the HTTP API and web app over the conversion and export libraries, with a persistent
/// job queue. Runs until SIGINT or SIGTERM: then it stops accepting, cancels running jobs (their temporary
/// outputs are removed), records them `interrupted`, and returns.
public final class ConversionService: Sendable {
    private let configuration: ServerConfiguration
    private let logger: Logger

    /// A service with `configuration`, logging to `logger` (one line per request, job events; never a secret).
    public init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs the service; `onReady` is called once it accepts connections.
    public func run(onReady: @escaping @Sendable (ServiceEndpoint) -> Void) async throws {
        try configuration.validate()
        let roots = try RootSet(configuration.roots)
        let store = try JobStore(directory: configuration.stateDirectory)
        let events = JobEvents(maxSubscribers: configuration.maxEventStreams)
        let engine = LibraryEngine(knownHostsFile: configuration.knownHostsFile,
                                   conversionWorkers: configuration.conversionWorkers)
        let queue = JobQueue(store: store, events: events, engine: engine, roots: roots,
                             workers: configuration.jobWorkers, capacity: configuration.queueCapacity, logger: logger)
        let recovered = try await queue.recover()
        if recovered > 0 { logger.notice("\(recovered) job(s) left unfinished by the previous run are now interrupted") }

        let blocking = NIOThreadPool(numberOfThreads: 4)
        blocking.start()

        let token = AccessToken()
        let hosts = HostPolicy(listenHost: configuration.host, secure: configuration.isSecure,
                               extra: configuration.allowedHosts)
        let configuration = self.configuration
        let status: @Sendable () async -> JSONValue = {
            let counts = await queue.counts
            return .object([
                ("service", .string("kdct-native")),
                ("roots", .array(roots.roots.map { .string($0) })),
                ("jobs", .object([("workers", .int(Int64(configuration.jobWorkers))),
                                  ("capacity", .int(Int64(configuration.queueCapacity))),
                                  ("waiting", .int(Int64(counts.waiting))), ("running", .int(Int64(counts.running)))])),
                ("event-streams", .int(Int64(events.streamCount))),
                ("tls", .bool(configuration.isSecure)),
                ("known-hosts-file", .string(engine.knownHostsFile)),
            ])
        }
        let handlers = APIHandlers(queue: queue, events: events, engine: engine, roots: roots, blocking: blocking, status: status)
        let responder = ServiceResponder(api: handlers, token: token, hosts: hosts, logger: logger)
        let application = Application(
            responder: responder,
            server: try serverBuilder(),
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.host, port: configuration.port),
                serverName: nil,
                availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections)),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                hosts.setPort(port)
                onReady(Self.endpoint(configuration: configuration, roots: roots, token: token, port: port))
            },
            logger: logger)
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)
        // Stopping runs in reverse order: the jobs first (their streams end with their final events), then the
        // HTTP server, which then has no long request left to wait for.
        let group = ServiceGroup(configuration: .init(
            services: [application, JobService(queue: queue, events: events)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: quiet))
        do {
            try await group.run()
        } catch {
            try? await blocking.shutdownGracefully()
            throw error
        }
        try? await blocking.shutdownGracefully()
        logger.notice("stopped")
    }

    /// Runs the service on the calling thread until it stops (for the CLI's synchronous `run`).
    public func runUntilStopped(onReady: @escaping @Sendable (ServiceEndpoint) -> Void) throws {
        let outcome = Mutex<Result<Void, any Error>>(.success(()))
        let done = DispatchSemaphore(value: 0)
        Task {
            do { try await run(onReady: onReady) } catch { outcome.withLock { $0 = .failure(error) } }
            done.signal()
        }
        done.wait()
        try outcome.withLock { $0 }.get()
    }

    private func serverBuilder() throws -> HTTPServerBuilder {
        // Idle connections and requests whose head or body trickle in are closed after 30 s; responses being
        // written (event streams) are not idle.
        let http1 = HTTPServerBuilder.http1(configuration: .init(idleTimeout: .seconds(30)))
        guard let certificatePath = configuration.tlsCertificate, let keyPath = configuration.tlsKey else { return http1 }
        let certificates: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw ConfigurationError("cannot read the TLS certificate \(certificatePath): \(error)")
        }
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw ConfigurationError("cannot read the TLS private key \(keyPath): \(error)")
        }
        guard !certificates.isEmpty else { throw ConfigurationError("\(certificatePath) holds no PEM certificate") }
        let tls = TLSConfiguration.makeServerConfiguration(certificateChain: certificates.map { .certificate($0) },
                                                           privateKey: .privateKey(key))
        return try .tls(http1, tlsConfiguration: tls)
    }

    private static func endpoint(configuration: ServerConfiguration, roots: RootSet, token: AccessToken,
                                 port: Int) -> ServiceEndpoint {
        var host = configuration.host
        if host == "0.0.0.0" || host == "::" { host = HostPolicy.machineName() ?? "localhost" }
        let shownHost = host.contains(":") ? "[\(host)]" : host
        let scheme = configuration.isSecure ? "https" : "http"
        return ServiceEndpoint(url: "\(scheme)://\(shownHost):\(port)/?token=\(token.value)", token: token.value,
                               host: configuration.host, port: port, roots: roots.roots,
                               stateDirectory: configuration.stateDirectory)
    }
}

/// The job queue as a service of the group: saves running jobs' progress every 0.5 s, wakes event streams for
/// their keepalive every 15 s, and on SIGINT/SIGTERM stops the queue.
struct JobService: Service {
    let queue: JobQueue
    let events: JobEvents

    func run() async throws {
        var ticks = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            await queue.saveProgress()
            ticks += 1
            if ticks % 30 == 0 { events.wakeAll() }
        }
        await queue.stop()
    }
}
