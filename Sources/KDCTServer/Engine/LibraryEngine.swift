import HTTPTypes
import KDCTAppliance
import KDCTExport
import KDCTFormats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Every call from the service into KDCTFormats and KDCTExport is in this file (and only the types declared here
// cross the boundary), so a change of the libraries' API — the async conversion, the error struct, measure —
// is a change here and nowhere else. The calls block; the service runs them on its own threads.

/// Progress of one step of a job, as the engine reports it.
struct ProgressUpdate: Sendable {
    /// `converting`, `connecting`, `checking`, `uploading`, `verifying`, `committing`.
    var phase: String
    var processed: UInt64
    var total: UInt64
    /// Bytes this run moved in this phase: the numerator of the rate (bytes sent, for an upload).
    var moved: UInt64
    /// Command-specific keys (`data-read`; `sent` and `resumed`).
    var extras: [(String, JSONValue)] = []
}

/// What a running job hands the engine.
struct JobContext: Sendable {
    /// The roots, to check every file the library opens for the job.
    let roots: RootSet
    /// Cancelled once the job is stopped (DELETE, or the service stopping).
    let cancellation: CancellationToken
    /// True once the job is cancelled.
    var isCancelled: @Sendable () -> Bool { { [cancellation] in cancellation.isCancelled } }
    /// Receives progress (from the library's thread).
    let report: @Sendable (ProgressUpdate) -> Void
    /// Records a temporary file before data is written to it (so a killed service removes it at the next start).
    let registerTemporary: @Sendable (TemporaryFile) throws -> Void
}

/// The service's view of the conversion and export libraries.
struct LibraryEngine: Sendable {
    /// The known_hosts file for host probes, trust and remote jobs.
    let knownHostsFile: String
    /// Conversion worker threads (nil: one per CPU, as the CLI).
    let conversionWorkers: Int?

    /// An engine using `knownHostsFile` (nil: `~/.ssh/known_hosts`, as `export`).
    init(knownHostsFile: String?, conversionWorkers: Int?) {
        var options = SSHConnectionOptions()
        options.knownHostsFile = knownHostsFile
        self.knownHostsFile = options.resolvedKnownHostsFile
        self.conversionWorkers = conversionWorkers
    }

    // MARK: Describing files

    /// `GET /formats`.
    var formats: JSONValue {
        let formats: [JSONValue] = ImageFormat.allCases.map { format in
            var pairs: [(String, JSONValue)] = [("name", .string(format.rawValue))]
            if format == .vhd { pairs.append(("qemu-name", .string("vpc"))) }
            pairs.append(("read", .bool(ImageOpener.canRead(format))))
            pairs.append(("write", .bool(format.isWritable)))
            pairs.append(("extensions", .array(format.fileExtensions.map { .string($0) })))
            return .object(pairs)
        }
        return .object([
            ("formats", .array(formats)),
            ("appliances", .array([.string("ova"), .string("ovf")])),
            ("output-formats", .array([.string("raw"), .string("qcow2")])),
            ("compression-types", .array(CompressionType.allCases.map { .string($0.rawValue) })),
            ("disk-buses", .array(diskBuses.map { .string($0) })),
            ("nic-models", .array(nicModels.map { .string($0) })),
        ])
    }

    /// Libvirt disk buses an appliance job accepts.
    var diskBuses: [String] { DiskBus.allCases.map(\.rawValue) }
    /// Libvirt NIC models an appliance job accepts.
    var nicModels: [String] { NICModel.allCases.map(\.rawValue) }

    /// True when `name` is a format the library reads (qemu's aliases included).
    func isReadableFormat(_ name: String) -> Bool {
        ImageFormat(name: name).map(ImageOpener.canRead) ?? false
    }

    /// True when `path` is an OVA archive or an OVF descriptor.
    func isAppliance(_ path: String) -> Bool { Appliance.isAppliance(path: path) }

    /// The format a listing shows for a regular file: probed from the content (`ova`/`ovf` for appliances),
    /// `raw` for a headerless file named like a raw disk (raw has no signature), nil otherwise; with the
    /// virtual size when the image opens.
    func probe(file path: String) -> (format: String, virtualSize: UInt64?)? {
        if isAppliance(path) { return (FilePaths.fileExtension(of: path) == "ovf" ? "ovf" : "ova", nil) }
        guard let file = try? ReadOnlyFile(path: path), let probe = try? FormatProbe.probe(file) else { return nil }
        if probe.matches.isEmpty && !["raw", "img", "dd", "bin", "iso"].contains(FilePaths.fileExtension(of: path)) {
            return nil
        }
        let format = probe.format
        let virtualSize = try? ImageOpener.inspect(path, options: OpenOptions(format: format)).virtualSize
        return (format == .vhd ? "vpc" : format.rawValue, virtualSize)
    }

    /// `POST /inspect`: `info --output json`'s object, plus `chain` (every layer, when the references open
    /// under the policy), each reference's `allowed` verdict and `warnings`; an appliance's VM.
    func inspect(_ request: JobRequest, roots: RootSet) throws -> JSONValue {
        if isAppliance(request.source) {
            let appliance = try Appliance(path: request.source, options: applianceOptions(request))
            return json(appliance.infoValue).setting("appliance", .bool(true))
        }
        let options = openOptions(request)
        let info = try ImageOpener.inspect(request.source, options: options)
        var value = json(info.infoValue)
        var warnings: [JSONValue] = info.notes.map { .object([("code", .string("note")), ("message", .string($0))]) }
        var layers: [ImageInfo] = [info]
        var references = info.references
        do {
            let opened = try ImageOpener.open(request.source, options: options)
            layers = [opened.info] + opened.info.backingChain
            references = opened.info.references
            try checkReadsInsideRoots(opened.info, roots: roots, destination: nil)
        } catch {
            let problem = Self.problem(from: error)
            var warning = problem.errorObject
            if let field = problem.field, ["parent", "backing-file"].contains(field) {
                warning = warning.setting("hint", .string("name the parent image in the request's \"parents\" (the CLI's --parent), or allow references with \"references\": \"same-dir\""))
            }
            warnings.append(warning)
        }
        for layer in layers where layer.dirty {
            warnings.append(.object([
                ("code", .string("dirty")),
                ("message", .string("\(layer.filename) was not closed cleanly; its log is replayed in memory when it is read (the file is not changed)")),
                ("file", .string(layer.filename)),
            ]))
        }
        value = value.setting("references", .array(references.map { reference($0, of: request.source, options: options, roots: roots) }))
        value = value.setting("chain", .array(layers.map { layer in
            var flat = layer
            flat.backingChain = []
            return json(flat.infoValue)
        }))
        return value.setting("warnings", .array(warnings))
    }

    /// A reference with the policy's verdict: `allowed` (the policy lets it be opened and it is inside the
    /// roots), `exists`, and `reason` when not allowed.
    private func reference(_ reference: ImageReference, of image: String, options: OpenOptions, roots: RootSet) -> JSONValue {
        var value = json(reference.infoValue)
        if reference.opened, let path = reference.resolvedPath {
            let inside = roots.contains(RootSet.realPath(path) ?? path)
            value = value.setting("allowed", .bool(inside)).setting("exists", .bool(true))
            return inside ? value : value.setting("reason", .string("\(path) is outside the service's root directories"))
        }
        do {
            let path = try ReferenceResolver.resolve(reference.name, kind: reference.kind, relativeTo: image,
                                                     policy: options.effectiveReferencePolicy)
            let inside = roots.contains(path)
            value = value.setting("resolved-path", .string(path)).setting("allowed", .bool(inside)).setting("exists", .bool(true))
            return inside ? value : value.setting("reason", .string("\(path) is outside the service's root directories"))
        } catch {
            let problem = Self.problem(from: error)
            let missing = problem.code == KDCTError.Code.notFound.rawValue
            return value.setting("allowed", .bool(missing)).setting("exists", .bool(false)).setting("reason", .string(problem.detail))
        }
    }

    /// `POST /measure`: the space a RAW or QCOW2 output of the source needs (qemu-img measure's `required` and
    /// `fully-allocated`; for an appliance, summed over its disks).
    func measure(_ request: JobRequest, roots: RootSet) throws -> (required: UInt64, fullyAllocated: UInt64, virtualSize: UInt64) {
        let format: ImageFormat = request.outputFormat == "qcow2" ? .qcow2 : .raw
        var devices: [any BlockDevice] = []
        if isAppliance(request.source) {
            let appliance = try Appliance(path: request.source, options: applianceOptions(request))
            devices = try appliance.machine.disks.map { try appliance.openDisk($0).device }
        } else {
            let device = try ImageOpener.open(request.source, options: openOptions(request))
            try checkReadsInsideRoots(device.info, roots: roots, destination: nil)
            devices = [device]
        }
        var options = MeasureOptions(format: format)
        options.clusterSize = request.clusterSize ?? options.clusterSize
        var total = (required: UInt64(0), fullyAllocated: UInt64(0), virtualSize: UInt64(0))
        for device in devices {
            let space = try SpaceEstimate.measure(device, options: options)
            total.required += space.required
            total.fullyAllocated += space.fullyAllocated
            total.virtualSize += device.virtualSize
        }
        return total
    }

    /// The normalized `sftp://` URL of a remote destination; refuses a URL that is malformed or carries a
    /// password (it would be stored with the job).
    func checkRemoteDestination(_ url: String) throws(Problem) -> String {
        guard RemoteLocation.isURL(url) else {
            throw .badRequest("\"destination\" must be an sftp://USER@HOST[:PORT]/PATH URL", field: "destination")
        }
        let location: RemoteLocation
        do {
            location = try RemoteLocation.parse(url: url)
        } catch {
            throw Problem(.badRequest, code: "invalid-request", Self.problem(from: error).detail, field: "destination")
        }
        if location.endpoint.user.contains(":") {
            throw .badRequest("put the password in \"password\", not in the URL (it would be stored with the job)",
                              field: "destination")
        }
        return location.urlString
    }

    // MARK: Running jobs

    /// Runs `request` to completion on the calling thread; returns the result object.
    func run(_ request: JobRequest, secrets: JobSecrets, context: JobContext) throws -> JSONValue {
        switch request.kind {
        case .convert: return try convert(request, context: context)
        case .appliance: return try convertAppliance(request, context: context)
        case .export: return try export(request, secrets: secrets, context: context)
        case .convertAndExport: return try convertAndExport(request, secrets: secrets, context: context)
        }
    }

    private func convert(_ request: JobRequest, context: JobContext) throws -> JSONValue {
        let device = try ImageOpener.open(request.source, options: openOptions(request))
        try checkReadsInsideRoots(device.info, roots: context.roots, destination: request.destination)
        let options = convertOptions(request, context: context, phase: "converting")
        // The target is made here rather than by `convert(_:toFile:)` so its temporary name is recorded before
        // any data is written.
        let target = try LocalFileTarget(destination: request.destination, overwrite: request.force)
        do {
            try context.registerTemporary(TemporaryFile(directory: RootSet.directory(of: target.temporaryPath),
                                                        name: RootSet.lastComponent(of: target.temporaryPath)))
        } catch {
            target.abort()
            throw error
        }
        let hashed = request.checksum ? ChecksummedTarget(target, isCancelled: context.isCancelled, report: context.report) : nil
        let result = try DiskConverter.convert(device, to: hashed ?? target, options: options)
        var st = stat()
        _ = stat(request.destination, &st)
        var pairs: [(String, JSONValue)] = [
            ("output", .string(request.destination)),
            ("output-format", .string(request.outputFormat)),
            ("virtual-size", .uint(result.virtualSize)),
            ("size", .int(Int64(st.st_size))),
            ("allocated-size", .int(Int64(st.st_blocks) * 512)),
            ("data-read", .uint(result.dataBytesRead)),
        ]
        if let sha256 = hashed?.sha256 { pairs.append(("sha256", .string(sha256))) }
        return .object(pairs)
    }

    private func convertAppliance(_ request: JobRequest, context: JobContext) throws -> JSONValue {
        let appliance = try Appliance(path: request.source, options: applianceOptions(request))
        let format: ImageFormat = request.outputFormat == "qcow2" ? .qcow2 : .raw
        var options = ApplianceConvertOptions()
        options.convert = convertOptions(request, context: context, phase: "converting")
        options.diskBus = request.diskBus.flatMap(DiskBus.init(rawValue:))
        options.nicModel = request.nicModel.flatMap(NICModel.init(rawValue:))
        options.verifyManifest = request.verifyManifest
        options.verifyProgress = { done, total in
            context.report(ProgressUpdate(phase: "verifying", processed: done, total: total, moved: done))
        }
        // The converter stages each output as `.kdct-PID-NAME` (written through a `..kdct-PID-NAME.kdct-*.part`)
        // in the output folder and renames them all at the end.
        let names = ApplianceConverter.outputNames(for: appliance, format: format)
        let staging = ".kdct-\(getpid())-"
        for name in names.disks + [names.domainXML] {
            try context.registerTemporary(TemporaryFile(directory: request.destination, name: staging + name))
            try context.registerTemporary(TemporaryFile(directory: request.destination, prefix: "." + staging + name + ".kdct-",
                                                        suffix: ".part"))
        }
        let result = try ApplianceConverter.convert(appliance, toDirectory: request.destination, options: options)
        let domainXML = (try? ReadOnlyFile(path: result.domainXMLPath)).flatMap { file in
            try? file.readBytes(count: Int(min(file.size, 1 << 20)), at: 0)
        }.map { String(decoding: $0, as: UTF8.self) }
        var pairs: [(String, JSONValue)] = [
            ("output", .string(request.destination)),
            ("output-format", .string(request.outputFormat)),
            ("disks", .array(result.disks.map { disk in
                var st = stat()
                _ = stat(disk.path, &st)
                return .object([("id", .string(disk.diskID)), ("path", .string(disk.path)),
                                ("virtual-size", .uint(disk.result.virtualSize)), ("size", .int(Int64(st.st_size)))])
            })),
            ("domain-xml", .string(result.domainXMLPath)),
            ("virtual-size", .uint(result.disks.reduce(0) { $0 + $1.result.virtualSize })),
        ]
        if let domainXML { pairs.append(("domain-xml-text", .string(domainXML))) }
        if !result.hints.isEmpty { pairs.append(("notes", .array(result.hints.map { .string($0.text) }))) }
        if let manifest = result.manifest { pairs.append(("manifest-verified", .array(manifest.verified.map { .string($0) }))) }
        return .object(pairs)
    }

    private func export(_ request: JobRequest, secrets: JobSecrets, context: JobContext) throws -> JSONValue {
        let location = try RemoteLocation.parse(url: request.destination)
        var options = ExportOptions()
        options.connection = connectionOptions(request, secrets: secrets, cancellation: context.cancellation)
        options.overwrite = request.force
        options.resume = request.resume
        options.verify = request.verify
        let resumed = Mutex<UInt64?>(nil)
        options.progress = { progress in
            // The first upload report starts at the bytes kept from an interrupted upload.
            let kept = resumed.withLock { value in
                if value == nil && progress.phase == .uploading { value = progress.processedBytes }
                return value ?? 0
            }
            let uploading = progress.phase == .uploading
            context.report(ProgressUpdate(phase: progress.phase.rawValue, processed: progress.processedBytes,
                                          total: progress.totalBytes,
                                          moved: uploading ? progress.sentBytes : progress.processedBytes,
                                          extras: [("sent", .uint(progress.sentBytes)), ("resumed", .uint(kept))]))
        }
        let size = (try? ReadOnlyFile(path: request.source))?.size ?? 0
        context.report(ProgressUpdate(phase: "connecting", processed: 0, total: size, moved: 0))
        let result = try DiskExporter.export(localPath: request.source, to: location, options: options)
        var pairs: [(String, JSONValue)] = [
            ("destination", .string(result.destination.urlString)),
            ("size", .uint(result.size)),
            ("sent", .uint(result.sentBytes)),
            ("skipped-zero-bytes", .uint(result.skippedZeroBytes)),
        ]
        if let from = result.resumedBytes { pairs.append(("resumed-from", .uint(from))) }
        if let sha256 = result.sha256 { pairs.append(("sha256", .string(sha256))) }
        pairs += [
            ("verification", .string(result.verification.rawValue)),
            ("flushed", .bool(result.flushed)),
            ("host-key", .string(result.hostKeyFingerprint)),
        ]
        if !result.notes.isEmpty { pairs.append(("notes", .array(result.notes.map { .string($0) }))) }
        return .object(pairs)
    }

    private func convertAndExport(_ request: JobRequest, secrets: JobSecrets, context: JobContext) throws -> JSONValue {
        let device = try ImageOpener.open(request.source, options: openOptions(request))
        try checkReadsInsideRoots(device.info, roots: context.roots, destination: nil)
        let location = try RemoteLocation.parse(url: request.destination)
        context.report(ProgressUpdate(phase: "connecting", processed: 0, total: device.virtualSize, moved: 0))
        // The host's temporary file is removed by the target on failure; after a crash it stays on the host
        // (no credentials survive a restart to remove it).
        let target = try SFTPFileTarget(location: location, connectionOptions: connectionOptions(request, secrets: secrets, cancellation: context.cancellation),
                                        overwrite: request.force, verify: true)
        var options = convertOptions(request, context: context, phase: "uploading")
        let report = context.report
        options.pipeline.progress = { progress in
            // The last report comes after the writer finished: what is left is the flush, the check and the rename.
            let done = progress.processedBytes >= progress.totalBytes
            report(ProgressUpdate(phase: done ? "committing" : "uploading", processed: progress.processedBytes,
                                  total: progress.totalBytes, moved: progress.processedBytes,
                                  extras: [("data-read", .uint(progress.dataBytesRead))]))
        }
        let result = try DiskConverter.convert(device, to: target, options: options)
        var pairs: [(String, JSONValue)] = [
            ("destination", .string(location.urlString)),
            ("output-format", .string(request.outputFormat)),
            ("virtual-size", .uint(result.virtualSize)),
            ("data-read", .uint(result.dataBytesRead)),
        ]
        if let commit = target.report {
            if commit.digests.count == 1 { pairs.append(("sha256", .string(commit.digests[0].sha256))) }
            pairs.append(("verification", .string(commit.verification.rawValue)))
            pairs.append(("flushed", .bool(commit.flushed)))
            if !commit.notes.isEmpty { pairs.append(("notes", .array(commit.notes.map { .string($0) }))) }
        }
        return .object(pairs)
    }

    // MARK: Hosts

    /// `POST /hosts/probe`.
    func probeHost(host: String, port: Int) throws -> JSONValue {
        json(try HostKeyProbe.probe(host: host, port: port, options: hostOptions()))
    }

    /// `POST /hosts/trust`.
    func trustHost(host: String, port: Int, fingerprint: String) throws -> JSONValue {
        json(try HostKeyProbe.trust(host: host, port: port, fingerprint: fingerprint, options: hostOptions()))
    }

    private func hostOptions() -> SSHConnectionOptions {
        var options = SSHConnectionOptions()
        options.knownHostsFile = knownHostsFile
        options.timeout = 20
        return options
    }

    private func json(_ probe: HostKeyProbeResult) -> JSONValue {
        .object([
            ("host", .string(probe.host)),
            ("port", .int(Int64(probe.port))),
            ("known-hosts-name", .string(probe.knownHostsName)),
            ("key-type", .string(probe.key.type.name)),
            ("fingerprint", .string(probe.key.fingerprint)),
            ("status", .string(probe.status.rawValue)),
            ("known", .bool(probe.status == .known)),
            ("known-hosts-file", .string(probe.knownHostsFile)),
            ("recorded", .bool(probe.recorded)),
        ])
    }

    // MARK: Options

    private func openOptions(_ request: JobRequest) -> OpenOptions {
        var options = OpenOptions(format: request.sourceFormat.flatMap { ImageFormat(name: $0) })
        options.untrusted = request.untrusted
        options.referencePolicy = request.references == "none" ? .none : .sameDirectory
        options.parentFiles = request.parents
        return options
    }

    private func applianceOptions(_ request: JobRequest) -> ApplianceOptions {
        var options = ApplianceOptions(configuration: request.configuration)
        options.referencePolicy = openOptions(request).effectiveReferencePolicy
        options.untrusted = request.untrusted
        return options
    }

    private func convertOptions(_ request: JobRequest, context: JobContext, phase: String) -> ConvertOptions {
        var options = ConvertOptions(outputFormat: request.outputFormat == "qcow2" ? .qcow2 : .raw)
        options.qcow2.compress = request.compress
        if let type = request.compressionType.flatMap(CompressionType.init(rawValue:)) { options.qcow2.compressionType = type }
        if let size = request.clusterSize { options.qcow2.clusterSize = size }
        if let mode = request.preallocation.flatMap(RawPreallocation.init(rawValue:)) { options.rawPreallocation = mode }
        options.overwrite = request.force
        if let workers = conversionWorkers { options.pipeline.workers = workers }
        options.pipeline.isCancelled = context.isCancelled
        let report = context.report
        options.pipeline.progress = { progress in
            report(ProgressUpdate(phase: phase, processed: progress.processedBytes, total: progress.totalBytes,
                                  moved: progress.processedBytes, extras: [("data-read", .uint(progress.dataBytesRead))]))
        }
        return options
    }

    private func connectionOptions(_ request: JobRequest, secrets: JobSecrets,
                                   cancellation: CancellationToken) -> SSHConnectionOptions {
        var options = SSHConnectionOptions()
        options.cancellation = cancellation
        options.knownHostsFile = knownHostsFile
        options.acceptNewHostKey = false
        options.identityFiles = request.identity.map { [$0] } ?? []
        options.useDefaultIdentities = false
        options.agent = request.agent ? .environment : .disabled
        options.password = secrets.password.map { .value($0) }
        options.passphraseSources = secrets.passphrase.map { [.value($0)] } ?? []
        return options
    }

    /// Refuses a source whose chain or extents lead outside the roots, or include the destination.
    private func checkReadsInsideRoots(_ info: ImageInfo, roots: RootSet, destination: String?) throws {
        var files = [info.filename] + info.backingChain.map(\.filename)
        files += ([info] + info.backingChain).flatMap { $0.references.compactMap(\.resolvedPath) }
        for file in files {
            let canonical = RootSet.realPath(file) ?? file
            guard roots.contains(canonical) else {
                throw Problem.forbiddenPath(file, "the image reads this file, which is outside the service's root directories",
                                            field: "source")
            }
            if let destination, canonical == destination {
                throw Problem(.badRequest, code: KDCTError.Code.invalidArgument.rawValue,
                              "the destination is \(file), which the source image reads; inputs are never written",
                              file: destination, field: "destination")
            }
        }
    }

    // MARK: Errors

    /// The one mapping from a library error to the service's problem: the library's error code is the `code`, its
    /// message, file and field are kept; the HTTP status says whose mistake it was (4xx: the request or the
    /// file it names; 5xx only for the service's own I/O failures and unreachable hosts).
    static func problem(from error: any Error) -> Problem {
        if let problem = error as? Problem { return problem }
        guard let error = error as? KDCTError else {
            return Problem(.internalServerError, code: "internal", "\(error)")
        }
        var detail = error.message
        if let errno = error.errno { detail += " (\(String(cString: strerror(errno))))" }
        let status: HTTPResponse.Status
        switch error.code {
        case .notFound: status = .notFound
        case .alreadyExists, .cancelled, .hostKeyRefused: status = .conflict
        case .invalidArgument: status = .badRequest
        case .io:
            switch error.errno {
            case EACCES?, EPERM?, EROFS?: status = .forbidden
            case ENOENT?, ENOTDIR?: status = .notFound
            case EISDIR?, ELOOP?, ENAMETOOLONG?: status = .badRequest
            case ENOSPC?, EDQUOT?: status = HTTPResponse.Status(code: 507, reasonPhrase: "Insufficient Storage")
            case ECONNREFUSED?, EHOSTUNREACH?, ENETUNREACH?, ETIMEDOUT?: status = .badGateway
            default: status = error.message.hasPrefix("cannot resolve host") || error.message.contains("SSH handshake")
                ? .badGateway : .internalServerError
            }
        default:
            // The file named in the request is not what it should be (invalidFormat, unsupported, corrupt, checksum,
            // truncated, limitExceeded, referenceRefused), or the host refused the credentials.
            status = .unprocessableContent
        }
        return Problem(status, code: error.code.rawValue, detail, file: error.file, field: error.field)
    }

    // MARK: JSON

    /// The library's ordered JSON value as the service's.
    func json(_ value: InfoValue) -> JSONValue {
        switch value {
        case let .string(text): return .string(text)
        case let .integer(number): return .int(number)
        case let .unsigned(number): return .uint(number)
        case let .bool(flag): return .bool(flag)
        case let .array(items): return .array(items.map(json))
        case let .object(pairs): return .object(pairs.map { ($0.0, json($0.1)) })
        }
    }
}

extension Problem {
    /// The error object of a job and of `--progress json`'s final line: `code`, `message`, `file`, `field`.
    var errorObject: JSONValue {
        var pairs: [(String, JSONValue)] = [("code", .string(code)), ("message", .string(detail))]
        if let file { pairs.append(("file", .string(file))) }
        if let field { pairs.append(("field", .string(field))) }
        return .object(pairs)
    }
}
