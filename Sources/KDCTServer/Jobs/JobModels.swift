#if canImport(Glibc)
import Glibc
#endif

/// What a job does.
public enum JobKind: String, CaseIterable, Sendable {
    /// An image to a local RAW or QCOW2 file.
    case convert
    /// A local file sent byte for byte to a host over SFTP (resumable).
    case export
    /// An OVA/OVF appliance to disks and a libvirt domain in a local folder.
    case appliance
    /// An image converted straight to a file on a host (`sftp://`), with no local copy.
    case convertAndExport = "convert-and-export"
}

/// Where a job is in its life. `succeeded`, `failed`, `cancelled` and `interrupted` are final.
public enum JobState: String, CaseIterable, Sendable {
    case queued, running, succeeded, failed, cancelled, interrupted

    /// True for the four final states.
    public var isFinished: Bool { self != .queued && self != .running }
}

/// Secrets of one job: accepted only in the request, kept in memory for the job's run, never stored, logged or
/// listed. A resume or retry must send them again.
struct JobSecrets: Sendable {
    var password: String?
    var passphrase: String?
}

/// A validated job request. Paths are canonical and inside the roots; `json` is what the job store keeps and
/// `GET /jobs` shows (every field, never a secret).
struct JobRequest: Sendable {
    var kind: JobKind
    /// The source file (canonical).
    var source: String
    /// A canonical local path (a folder for `appliance`), or an `sftp://` URL.
    var destination: String
    /// `raw` or `qcow2`.
    var outputFormat = "raw"
    var compress = false
    var compressionType: String?
    var clusterSize: Int?
    var preallocation: String?
    var force = false
    /// Report the output file's SHA-256 (a convert job hashes its output before renaming it into place).
    var checksum = false
    /// How the source is opened (the CLI's `-f`, `--references`, `--parent`, `--untrusted`).
    var sourceFormat: String?
    var references = "same-dir"
    var parents: [String] = []
    var untrusted = false
    /// Appliance options.
    var configuration: String?
    var diskBus: String?
    var nicModel: String?
    var verifyManifest = true
    /// Remote options: a key file inside the roots, ssh-agent, SHA-256 check, continuing a partial upload.
    var identity: String?
    var agent = false
    var verify = true
    var resume = false

    /// Every field a request may have.
    static let allFields: Set<String> = [
        "kind", "source", "destination", "output_format", "compress", "compression_type", "cluster_size",
        "preallocation", "force", "source_format", "references", "parents", "untrusted", "configuration",
        "disk_bus", "nic_model", "verify_manifest", "password", "identity", "passphrase", "agent", "verify", "resume",
        "checksum",
    ]
    private static let conversionFields: Set<String> = ["output_format", "compress", "compression_type", "cluster_size"]
    private static let sourceFields: Set<String> = ["source_format", "references", "parents", "untrusted"]
    private static let remoteFields: Set<String> = ["password", "identity", "passphrase", "agent"]

    /// The fields that apply to each kind (besides kind, source and destination).
    static func fields(for kind: JobKind) -> Set<String> {
        switch kind {
        case .convert: return conversionFields.union(sourceFields).union(["preallocation", "force", "checksum"])
        case .appliance:
            return conversionFields.union(["preallocation", "force", "references", "untrusted", "configuration",
                                           "disk_bus", "nic_model", "verify_manifest"])
        case .export: return remoteFields.union(["force", "verify", "resume"])
        case .convertAndExport: return conversionFields.union(sourceFields).union(remoteFields).union(["force"])
        }
    }

    /// Validates a request body: fields for the kind, values, paths inside the roots, the destination's kind.
    static func parse(_ body: JSONValue, roots: RootSet, engine: LibraryEngine) throws(Problem) -> (JobRequest, JobSecrets) {
        let all = try RequestFields(body, allowed: allFields)
        guard let kind = JobKind(rawValue: try all.string("kind")) else {
            throw .badRequest("\"kind\" must be one of \(JobKind.allCases.map(\.rawValue).joined(separator: ", "))",
                              field: "kind")
        }
        let allowed = fields(for: kind).union(["kind", "source", "destination"])
        if let stray = allFields.subtracting(allowed).sorted().first(where: all.has) {
            throw .badRequest("\"\(stray)\" does not apply to a \(kind.rawValue) job", field: stray)
        }
        var request = JobRequest(kind: kind, source: try roots.existing(try all.string("source"), field: "source"),
                                 destination: "")
        let destination = try all.string("destination")
        request.outputFormat = try all.choice("output_format", ["raw", "qcow2"]) ?? (kind == .appliance ? "qcow2" : "raw")
        if kind == .convert || kind == .convertAndExport, !all.has("output_format") {
            throw .badRequest("\"output_format\" is required (raw or qcow2)", field: "output_format")
        }
        request.compress = try all.bool("compress", default: false)
        request.compressionType = try all.choice("compression_type", ["deflate", "zstd"])
        request.clusterSize = try all.integer("cluster_size", in: 512...(2 << 20))
        if let size = request.clusterSize, size & (size - 1) != 0 {
            throw .badRequest("\"cluster_size\" must be a power of two", field: "cluster_size")
        }
        if request.outputFormat == "raw" {
            let qcow2Only = request.compress ? "compress" : ["compression_type", "cluster_size"].first(where: all.has)
            if let key = qcow2Only { throw .badRequest("\"\(key)\" needs \"output_format\": \"qcow2\"", field: key) }
        }
        request.preallocation = try all.choice("preallocation", ["off", "falloc", "full"])
        request.force = try all.bool("force", default: false)
        request.checksum = try all.bool("checksum", default: false)
        try request.readSourceOptions(all, roots: roots, engine: engine)
        request.diskBus = try all.choice("disk_bus", engine.diskBuses)
        request.nicModel = try all.choice("nic_model", engine.nicModels)
        request.verifyManifest = try all.bool("verify_manifest", default: true)
        request.agent = try all.bool("agent", default: false)
        request.verify = try all.bool("verify", default: true)
        request.resume = try all.bool("resume", default: false)
        if let identity = try all.optionalString("identity") {
            request.identity = try roots.existing(identity, field: "identity")
        }
        let secrets = JobSecrets(password: try all.optionalString("password"), passphrase: try all.optionalString("passphrase"))

        switch kind {
        case .convert, .appliance:
            let isAppliance = engine.isAppliance(request.source)
            if kind == .convert && isAppliance {
                throw Problem(.unprocessableContent, code: "invalid-argument",
                              "\(request.source) is an OVA/OVF appliance: submit a job of kind \"appliance\" with a destination folder",
                              file: request.source, field: "source")
            }
            if kind == .appliance && !isAppliance {
                throw Problem(.unprocessableContent, code: "invalid-argument",
                              "\(request.source) is not an OVA/OVF appliance", file: request.source, field: "source")
            }
            request.destination = try roots.destination(destination, field: "destination")
            if kind == .appliance, let type = RootSet.fileType(request.destination), type != S_IFDIR {
                throw .badRequest("\(destination) exists and is not a folder", field: "destination")
            }
        case .export, .convertAndExport:
            request.destination = try engine.checkRemoteDestination(destination)
            if secrets.password == nil && request.identity == nil && !request.agent {
                throw .badRequest("a remote destination needs \"password\", \"identity\" or \"agent\": true", field: "password")
            }
        }
        return (request, secrets)
    }

    /// Reads how the source is opened: `source_format`, `references`, `parents` (inside the roots), `untrusted`,
    /// `configuration` (shared by jobs, `inspect` and `measure`).
    mutating func readSourceOptions(_ fields: RequestFields, roots: RootSet, engine: LibraryEngine) throws(Problem) {
        sourceFormat = try fields.optionalString("source_format")
        if let format = sourceFormat, !engine.isReadableFormat(format) {
            throw .badRequest("\"source_format\" \"\(format)\" is not a format this service reads (see GET /api/v1/formats)",
                              field: "source_format")
        }
        references = try fields.choice("references", ["same-dir", "none"]) ?? "same-dir"
        parents = try fields.strings("parents", limit: 16).enumerated().map { index, path throws(Problem) in
            try roots.existing(path, field: "parents[\(index)]")
        }
        untrusted = try fields.bool("untrusted", default: false)
        configuration = try fields.optionalString("configuration")
    }

    /// The request as stored and shown: every field that applies to the kind, no secret.
    var json: JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("kind", .string(kind.rawValue)), ("source", .string(source)), ("destination", .string(destination)),
        ]
        let applicable = Self.fields(for: kind)
        func add(_ key: String, _ value: JSONValue?) {
            if applicable.contains(key), let value { pairs.append((key, value)) }
        }
        add("output_format", .string(outputFormat))
        add("compress", .bool(compress))
        add("compression_type", compressionType.map { .string($0) })
        add("cluster_size", clusterSize.map { .int(Int64($0)) })
        add("preallocation", preallocation.map { .string($0) })
        add("force", .bool(force))
        add("checksum", .bool(checksum))
        add("source_format", sourceFormat.map { .string($0) })
        add("references", .string(references))
        add("parents", parents.isEmpty ? nil : .array(parents.map { .string($0) }))
        add("untrusted", .bool(untrusted))
        add("configuration", configuration.map { .string($0) })
        add("disk_bus", diskBus.map { .string($0) })
        add("nic_model", nicModel.map { .string($0) })
        add("verify_manifest", .bool(verifyManifest))
        add("identity", identity.map { .string($0) })
        add("agent", .bool(agent))
        add("verify", .bool(verify))
        add("resume", .bool(resume))
        return .object(pairs)
    }
}

/// A temporary file a running job created, recorded before any data goes into it so that a service killed
/// mid-job removes it at its next start: `name` exactly, or every regular file whose name has `prefix` and
/// `suffix` (a library temporary name with a random part).
struct TemporaryFile: Sendable, Equatable {
    var directory: String
    var name: String?
    var prefix: String?
    var suffix: String?

    var json: JSONValue {
        var pairs: [(String, JSONValue)] = [("directory", .string(directory))]
        if let name { pairs.append(("name", .string(name))) }
        if let prefix { pairs.append(("prefix", .string(prefix))) }
        if let suffix { pairs.append(("suffix", .string(suffix))) }
        return .object(pairs)
    }

    init(directory: String, name: String? = nil, prefix: String? = nil, suffix: String? = nil) {
        self.directory = directory
        self.name = name
        self.prefix = prefix
        self.suffix = suffix
    }

    init?(json: JSONValue) {
        guard let directory = json["directory"]?.stringValue else { return nil }
        self.init(directory: directory, name: json["name"]?.stringValue, prefix: json["prefix"]?.stringValue,
                  suffix: json["suffix"]?.stringValue)
        guard name != nil || prefix != nil else { return nil }
    }

    /// True when the file name `candidate` is this temporary file.
    func matches(_ candidate: String) -> Bool {
        if let name { return candidate == name }
        guard let prefix, candidate.hasPrefix(prefix) else { return false }
        return suffix.map { candidate.hasSuffix($0) && candidate.count >= prefix.count + $0.count } ?? true
    }

    /// Removes the matching regular files (never a symlink, a folder or a device); returns the paths removed.
    @discardableResult
    func remove() -> [String] {
        guard let folder = opendir(directory) else { return [] }
        var names: [String] = []
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." && matches(name) { names.append(name) }
        }
        closedir(folder)
        var removed: [String] = []
        for name in names {
            let path = directory == "/" ? "/" + name : directory + "/" + name
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            if unlink(path) == 0 { removed.append(path) }
        }
        return removed
    }
}

/// A job as stored and as the API shows it.
struct JobRecord: Sendable {
    var id: String
    /// Increasing with each new job: the order of `GET /jobs` (newest first) and its paging cursor.
    var number: Int64
    var kind: JobKind
    var state: JobState
    var request: JSONValue
    var createdAt: Double
    var startedAt: Double?
    var finishedAt: Double?
    /// The latest progress object (`--progress json`'s keys, without `event`).
    var progress: JSONValue?
    var result: JSONValue?
    var error: JSONValue?
    /// Increases with every event the job publishes: the SSE `id`.
    var revision: Int64
    /// An export whose partial upload `POST /jobs/{id}/resume` can continue.
    var resumable: Bool
    /// Runs so far (a resume adds one).
    var attempts: Int
    /// The job this one retries.
    var retryOf: String?
    /// Temporary files of the current run (not shown).
    var cleanup: [TemporaryFile]

    /// The job object of the API.
    var json: JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("id", .string(id)),
            ("number", .int(number)),
            ("kind", .string(kind.rawValue)),
            ("state", .string(state.rawValue)),
            ("request", request),
            ("created_at", .string(Timestamp.rfc3339(createdAt))),
            ("started_at", startedAt.map { .string(Timestamp.rfc3339($0)) } ?? .null),
            ("finished_at", finishedAt.map { .string(Timestamp.rfc3339($0)) } ?? .null),
            ("progress", progress ?? Self.emptyProgress),
        ]
        if let result { pairs.append(("result", result)) }
        if let error { pairs.append(("error", error)) }
        pairs.append(("resumable", .bool(resumable)))
        pairs.append(("attempts", .int(Int64(attempts))))
        if let retryOf { pairs.append(("retry_of", .string(retryOf))) }
        pairs.append(("revision", .int(revision)))
        return .object(pairs)
    }

    /// Progress before the job has reported any.
    static let emptyProgress: JSONValue = .object([("processed", .int(0)), ("total", .int(0)), ("percent", .int(0))])

    /// The last SSE event of a finished job, as `--progress json` ends: `done` with the result's keys, or
    /// `failed` with the error (for `cancelled` and `interrupted` too), plus the final `state`.
    var finalEvent: JSONValue {
        let elapsed = JSONValue.number(max(0, (finishedAt ?? createdAt) - (startedAt ?? createdAt)))
        var pairs: [(String, JSONValue)] = [
            ("event", .string(state == .succeeded ? "done" : "failed")),
            ("id", .string(id)),
            ("state", .string(state.rawValue)),
            ("elapsed-seconds", elapsed),
        ]
        if state == .succeeded, case let .object(fields)? = result {
            pairs += fields.filter { $0.0 != "elapsed-seconds" }
        } else if let error {
            pairs.append(("error", error))
            pairs.append(("resumable", .bool(resumable)))
        }
        return .object(pairs)
    }
}

/// RFC 3339 timestamps (UTC, milliseconds) and the current time.
enum Timestamp {
    /// Seconds since the epoch.
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Monotonic seconds, for durations.
    static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// `2026-01-31T12:34:56.789Z`.
    static func rfc3339(_ seconds: Double) -> String {
        var whole = time_t(seconds.rounded(.down))
        let millis = Int((seconds - Double(whole)) * 1000)
        var parts = tm()
        gmtime_r(&whole, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}
