import CKDCTShims
import KDCTFormats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Sends a local disk image (any file, sent byte for byte) to a KVM host.
///
/// SFTP (the default): the file is written under a temporary name beside the destination
/// (`.NAME.kdct-export.part`, created exclusively), on `streams` connections at once, each writing its own
/// chunks; all-zero runs are not sent (the remote file gets holes). The file is flushed with
/// `fsync@openssh.com` when the server offers it (unless `flush` is false), its chunks' SHA-256 digests are
/// compared with the local file's, and only then is it renamed to the destination name (atomically replacing an old file with
/// `overwrite`). An interrupted upload stays under the temporary name; `resume` keeps every chunk of it that
/// matches the local file and sends the rest.
///
/// Every wait on the host honours `connection.timeout` and `connection.cancellation` (see `SessionDriver`).
///
/// scp (`transferProtocol = .scp`, for hosts with no SFTP server) can promise less, and the exporter says so: the
/// protocol streams every byte (no holes), cannot append (no resume), cannot create exclusively or rename, and has
/// no flush. The file still goes to the temporary name; flushing (`sync FILE`), verification (`sha256sum`) and the
/// final rename (`ln` then `rm`, which refuses an existing destination, or `mv -f` with `overwrite`) run as
/// commands over an exec channel, so scp mode needs a POSIX shell on the host.
public enum DiskExporter {
    /// Exports `localPath` to `location`.
    public static func export(localPath: String, to location: RemoteLocation, options: ExportOptions) throws -> ExportResult {
        var options = options
        if options.resume && options.transferProtocol == .scp {
            throw KDCTError(.unsupported, "--resume needs SFTP: the scp protocol cannot continue a partial file", field: "--resume")
        }
        try ReadAheadStage.validate(depth: options.readAhead, field: "readAhead")
        guard (1...ExportOptions.maximumStreams).contains(options.streams) else {
            throw KDCTError(.invalidArgument, "streams must be between 1 and \(ExportOptions.maximumStreams), not \(options.streams)",
                            field: "--streams")
        }
        guard options.connection.timeout > 0 else {
            throw KDCTError(.invalidArgument, "the timeout must be positive", field: "--timeout")
        }
        try options.connection.resolvePassword()
        let file = try ReadOnlyFile(path: localPath)
        _ = kdct_advise_sequential(file.descriptor)
        options.progress?(ExportProgress(phase: .connecting, processedBytes: 0, totalBytes: file.size))
        let connection = try SSHConnection(endpoint: location.endpoint, options: options.connection)
        defer { connection.disconnect() }
        switch options.transferProtocol {
        case .sftp:
            return try SFTPUpload(file: file, location: location, connection: connection, options: options).run()
        case .scp:
            return try SCPUpload(file: file, location: location, connection: connection, options: options).run()
        }
    }

    /// The temporary name an export to `path` uses (stable, so an interrupted upload can be found again).
    public static func temporaryPath(for path: String) -> String {
        FilePaths.join(FilePaths.directory(of: path), ".\(FilePaths.lastComponent(of: path)).kdct-export.part")
    }

    /// The permission bits of a local file, given to the remote one (0644 when they cannot be read).
    static func permissions(of descriptor: Int32) -> Int32 {
        var st = stat()
        guard fstat(descriptor, &st) == 0 else { return 0o644 }
        return Int32(st.st_mode & 0o777)
    }

    /// The path to write for `location`: a directory (or a path ending in `/`) gets `localName` (without one,
    /// a directory is refused); a symbolic link is followed (its target is replaced, the link stays). Refuses a
    /// device or anything but a regular file, and an existing file without `overwrite`.
    static func destinationPath(for location: RemoteLocation, localName: String?, overwrite: Bool,
                                sftp: SFTPSession) throws -> String {
        var path = location.path
        if let localName {
            let isDirectory = try path.hasSuffix("/") || sftp.status(of: path)?.isDirectory == true
            if isDirectory { path = FilePaths.join(path.hasSuffix("/") ? String(path.dropLast()) : path, localName) }
        }
        guard var existing = try sftp.status(of: path, followLinks: false) else { return path }
        if existing.isSymbolicLink {
            let target: String
            do {
                target = try sftp.canonicalPath(path)
            } catch {
                throw KDCTError(.invalidArgument, "is a symbolic link whose target cannot be resolved on the host (\(error))",
                                file: sftp.remoteName(path))
            }
            path = target
            guard let resolved = try sftp.status(of: path, followLinks: false) else { return path }
            existing = resolved
        }
        let name = sftp.remoteName(path)
        if existing.isDirectory { throw KDCTError(.invalidArgument, "is a directory on the host", file: name) }
        guard existing.isRegularFile else {
            throw KDCTError(.invalidArgument, "is not a regular file on the host (a device or a special file); exports write regular files only",
                            file: name)
        }
        if !overwrite { throw KDCTError(.alreadyExists, "exists on the host (use --force to replace it)", file: name) }
        return path
    }
}

/// An export over SFTP.
private struct SFTPUpload {
    let file: ReadOnlyFile
    let location: RemoteLocation
    let connection: SSHConnection
    let options: ExportOptions

    private var cancellation: CancellationToken? { options.connection.cancellation }

    private func report(_ phase: ExportProgress.Phase, _ processed: UInt64, of total: UInt64, sent: UInt64 = 0,
                        resumed: UInt64 = 0) {
        options.progress?(ExportProgress(phase: phase, processedBytes: processed, totalBytes: total, sentBytes: sent,
                                         resumedBytes: resumed))
    }

    /// What the upload will do: the units to send, the bytes kept from an interrupted upload, and the open file.
    private struct Plan {
        var remote: SFTPFile
        var units: [UploadUnit]
        var keptBytes: UInt64?
        var restarted = false
    }

    func run() throws -> ExportResult {
        let sftp = try connection.openSFTP()
        var notes = connection.notes
        let path = try DiskExporter.destinationPath(for: location, localName: FilePaths.lastComponent(of: file.path),
                                                    overwrite: options.overwrite, sftp: sftp)
        let temporary = DiskExporter.temporaryPath(for: path)
        let size = file.size
        let layout = ChunkLayout.chunks(ofFileSize: size)
        let plan = try makePlan(sftp: sftp, temporary: temporary, layout: layout, notes: &notes)
        let kept = plan.keptBytes ?? 0

        // The local digests (per chunk, and of the whole file), hashed on their own thread while the data goes.
        let hashing = options.verify
            ? try LocalHashing(file: file, ranges: layout, wholeFile: true, cancellation: cancellation)
            : nil
        let upload = ParallelUpload(file: file, units: plan.units, temporary: temporary, options: options)
        let counters = upload.counters
        let streams: Int
        var sha256: String?
        var method = VerificationMethod.skipped
        let flushed: Bool
        let placement: PlacementMethod
        do {
            report(.uploading, kept, of: size, resumed: kept)
            let outcome = try upload.run(primary: plan.remote) {
                report(.uploading, kept + counters.processed.load(ordering: .relaxed), of: size,
                       sent: counters.sent.load(ordering: .relaxed), resumed: kept)
            }
            streams = outcome.streams
            notes += outcome.notes
            try plan.remote.setSize(size)
            let sent = counters.sent.load(ordering: .relaxed)
            if let hashing {
                let (expected, whole) = try hashing.result()
                method = try verify(temporary: temporary, layout: layout, expected: expected, sent: sent, kept: kept,
                                    sftp: sftp, notes: &notes)
                sha256 = whole
            }
            // Flushed before the rename, so a crash of the host never leaves a partly written file under the name
            // (unless the user chose `-t unsafe`).
            report(.committing, 0, of: size, sent: sent, resumed: kept)
            flushed = try plan.remote.sync(toDisk: options.flush)
            try plan.remote.close()
            placement = try RemotePlacement.place(temporary, at: path, overwrite: options.overwrite, sftp: sftp, notes: &notes)
            report(.committing, size, of: size, sent: sent, resumed: kept)
        } catch var error as KDCTError {
            plan.remote.closeDiscarding()
            if error.code != .checksum && error.code != .alreadyExists {
                error.message += "; the partial upload is kept on the host as \(temporary): rerun with --resume to continue it"
            }
            throw error
        }
        let sent = counters.sent.load(ordering: .relaxed)
        if options.flush && !flushed {
            notes.append("the server does not offer fsync@openssh.com: the data was not flushed to stable storage on the host")
        }
        var destination = location
        destination.path = path
        let processed = counters.processed.load(ordering: .relaxed)
        return ExportResult(destination: destination, temporaryPath: temporary, size: size, sentBytes: sent,
                            skippedZeroBytes: processed - min(sent, processed), resumedBytes: plan.keptBytes,
                            restartedPartialUpload: plan.restarted, sha256: sha256, verification: method,
                            placement: placement, flushed: flushed, streams: streams,
                            hostKeyFingerprint: connection.hostKey.fingerprint,
                            hostKeyRecorded: connection.hostKeyWasRecorded, authentication: connection.authentication,
                            notes: notes)
    }

    /// Opens the temporary file (creating it, or reusing an interrupted upload with `resume`) and decides what
    /// to send.
    private func makePlan(sftp: SFTPSession, temporary: String, layout: [ByteRange],
                          notes: inout [String]) throws -> Plan {
        let size = file.size
        let mode = DiskExporter.permissions(of: file.descriptor)
        let everything = layout.map { UploadUnit(range: $0, sendZeros: false) }
        guard let partial = try sftp.status(of: temporary, followLinks: false) else {
            if options.resume { notes.append("no interrupted upload was found; started from the beginning") }
            let remote = try sftp.openForWriting(temporary, exclusive: true, mode: mode, window: options.pipelineWindow)
            return Plan(remote: remote, units: everything)
        }
        guard options.resume else {
            if options.overwrite {
                try sftp.remove(temporary)
                let remote = try sftp.openForWriting(temporary, exclusive: true, mode: mode, window: options.pipelineWindow)
                return Plan(remote: remote, units: everything)
            }
            throw KDCTError(.alreadyExists,
                            "an interrupted upload to this destination is on the host (\(partial.size.map { "\($0) bytes" } ?? "size unknown")); rerun with --resume to continue it, or --force to start over",
                            file: sftp.remoteName(temporary))
        }
        guard partial.isRegularFile, !partial.isSymbolicLink else {
            throw KDCTError(.invalidArgument, "the interrupted upload is not a regular file", file: sftp.remoteName(temporary))
        }
        let remote = try sftp.openForWriting(temporary, exclusive: false, mode: mode, window: options.pipelineWindow)
        let partialSize = try remote.size()
        if partialSize > size {
            try remote.setSize(0)
            notes.append("the interrupted upload (\(partialSize) bytes) is longer than the local file; started over")
            return Plan(remote: remote, units: everything, restarted: true)
        }
        // The chunks of the interrupted upload, the last one cut where it ends.
        let compared = layout.compactMap { chunk -> ByteRange? in
            chunk.start < partialSize ? ByteRange(start: chunk.start, length: min(chunk.end, partialSize) - chunk.start) : nil
        }
        let matches = try compare(compared, temporary: temporary, sftp: sftp, notes: &notes)
        // Nothing in common: not an upload of this file. Starting from an empty file lets holes stay holes.
        if !matches.isEmpty && !matches.contains(true) {
            try remote.setSize(0)
            notes.append("the interrupted upload (\(partialSize) bytes) does not match the local file; started over")
            return Plan(remote: remote, units: everything, restarted: true)
        }
        var units: [UploadUnit] = []
        var keptBytes: UInt64 = 0
        for chunk in layout {
            guard let index = compared.firstIndex(where: { $0.start == chunk.start }) else {
                units.append(UploadUnit(range: chunk, sendZeros: false))
                continue
            }
            let old = compared[index]
            if matches[index] {
                keptBytes += old.length
            } else {
                units.append(UploadUnit(range: old, sendZeros: true))
            }
            if old.end < chunk.end {
                units.append(UploadUnit(range: ByteRange(start: old.end, length: chunk.end - old.end), sendZeros: false))
            }
        }
        let resent = compared.indices.filter { !matches[$0] }.count
        if resent > 0 {
            notes.append("\(resent) chunk(s) of the interrupted upload did not match the local file and were sent again")
        }
        return Plan(remote: remote, units: units, keptBytes: keptBytes)
    }

    /// Compares `ranges` of the interrupted upload with the local file (SHA-256 on both sides at once: the host
    /// hashes its copy while this thread waits for its lines and a second one hashes the local file).
    private func compare(_ ranges: [ByteRange], temporary: String, sftp: SFTPSession,
                         notes: inout [String]) throws -> [Bool] {
        guard let last = ranges.last else { return [] }
        let total = last.end
        let localDone = AtomicCounter()
        report(.checking, 0, of: total)
        let local = try LocalHashing(file: file, ranges: ranges, wholeFile: false, cancellation: cancellation) {
            localDone.store($0)
        }
        let hasher = RemoteHasher(connection: connection, sftp: sftp, preference: options.verification)
        let (remote, _) = try hasher.digests(of: temporary, ranges: ranges, notes: &notes) { done in
            report(.checking, min(done, localDone.load()), of: total)
        }
        let expected = try local.result().ranges
        report(.checking, total, of: total)
        return zip(expected, remote).map { $0 == $1 }
    }

    /// Checks the uploaded file chunk by chunk against `expected`. A mismatch keeps the upload: `--resume`
    /// then resends exactly the chunks that differ.
    private func verify(temporary: String, layout: [ByteRange], expected: [String], sent: UInt64, kept: UInt64,
                        sftp: SFTPSession, notes: inout [String]) throws -> VerificationMethod {
        let size = file.size
        let name = sftp.remoteName(temporary)
        guard let remoteSize = try sftp.status(of: temporary)?.size, remoteSize == size else {
            try? sftp.remove(temporary)
            throw KDCTError(.checksum, "the uploaded file does not have the local file's size (\(size) bytes); it was removed", file: name)
        }
        report(.verifying, 0, of: size, sent: sent, resumed: kept)
        let hasher = RemoteHasher(connection: connection, sftp: sftp, preference: options.verification)
        let (remote, method) = try hasher.digests(of: temporary, ranges: layout, notes: &notes) { done in
            report(.verifying, done, of: size, sent: sent, resumed: kept)
        }
        let differing = layout.indices.filter { remote[$0] != expected[$0] }
        guard differing.isEmpty else {
            throw KDCTError(.checksum,
                            "the uploaded file differs from the local file in \(differing.count) of \(layout.count) chunk(s) (the first at offset \(layout[differing[0]].start)); the upload is kept as \(temporary): rerun with --resume to send those chunks again",
                            file: name)
        }
        return method
    }
}
