import CLibSSH2
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// An export over scp (see `DiskExporter`): the whole file streamed in order, then `sync`, a SHA-256 computed
/// on the host and a rename, each a shell command over an exec channel. scp cannot continue a partial file, so
/// a failed upload's temporary file is removed (over a new connection when needed).
struct SCPUpload {
    let file: ReadOnlyFile
    let location: RemoteLocation
    let connection: SSHConnection
    let options: ExportOptions

    private func report(_ phase: ExportProgress.Phase, _ processed: UInt64, of total: UInt64, sent: UInt64 = 0) {
        options.progress?(ExportProgress(phase: phase, processedBytes: processed, totalBytes: total, sentBytes: sent))
    }

    /// Runs a shell snippet; throws when the host has no usable shell.
    private func shell(_ command: String, what: String) throws -> RemoteCommandResult {
        let result = try connection.run(command)
        if result.status == 127 || result.status == -1 {
            throw KDCTError(.unsupported, "scp mode runs small shell commands on the host (\(what)) and that failed: \(String(decoding: result.errorOutput.prefix(200), as: UTF8.self))",
                            file: connection.endpoint.displayName)
        }
        return result
    }

    private func kind(of path: String) throws -> String {
        let q = TextEncoding.shellQuoted(path)
        let result = try shell("if [ -d \(q) ]; then echo directory; elif [ -L \(q) ]; then echo link; elif [ -f \(q) ]; then echo file; elif [ -e \(q) ]; then echo special; else echo none; fi",
                               what: "checking the destination")
        let answer = String(decoding: result.output, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
        guard ["directory", "link", "file", "special", "none"].contains(answer) else {
            throw KDCTError(.unsupported, "scp mode needs a POSIX shell on the host; checking the destination printed '\(answer)'",
                            file: connection.endpoint.displayName)
        }
        return answer
    }

    func run() throws -> ExportResult {
        var notes = connection.notes
        var path = location.path
        var kind = try kind(of: path)
        if kind == "directory" || path.hasSuffix("/") {
            path = FilePaths.join(path.hasSuffix("/") ? String(path.dropLast()) : path, FilePaths.lastComponent(of: file.path))
            kind = try self.kind(of: path)
        }
        let remoteName = "\(connection.endpoint.displayName):\(path)"
        switch kind {
        case "directory": throw KDCTError(.invalidArgument, "is a directory on the host", file: remoteName)
        case "link": throw KDCTError(.invalidArgument, "is a symbolic link on the host; scp mode does not follow links (name the target)", file: remoteName)
        case "special": throw KDCTError(.invalidArgument, "is not a regular file on the host; exports write regular files only", file: remoteName)
        case "file" where !options.overwrite:
            throw KDCTError(.alreadyExists, "exists on the host (use --force to replace it)", file: remoteName)
        default: break
        }
        let temporary = DiskExporter.temporaryPath(for: path)
        let size = file.size
        let layout = ChunkLayout.chunks(ofFileSize: size)
        let cancellation = options.connection.cancellation
        let hashing = options.verify
            ? try LocalHashing(file: file, ranges: layout, wholeFile: true, cancellation: cancellation)
            : nil
        var sent: UInt64 = 0
        do {
            sent = try send(to: temporary, size: size)
        } catch var error as KDCTError {
            let cancelled = error.code == .cancelled
            if let reason = RemoteCleanup.remove(temporary, sftp: nil, connection: connection, cancelled: cancelled) {
                error.message += "; the partial upload \(temporary) may remain on the host (\(reason)); a rerun overwrites it"
            }
            throw error
        }

        let tq = TextEncoding.shellQuoted(temporary)
        var sha256: String?
        var method = VerificationMethod.skipped
        if let hashing {
            let (expected, whole) = try hashing.result()
            report(.verifying, 0, of: size, sent: sent)
            let hasher = RemoteHasher(connection: connection, sftp: nil, preference: .automatic)
            let (remote, how) = try hasher.digests(of: temporary, ranges: layout, notes: &notes) { done in
                report(.verifying, done, of: size, sent: sent)
            }
            guard remote == expected else {
                _ = try? connection.run("rm -f -- \(tq)")
                throw KDCTError(.checksum, "the uploaded file's SHA-256 differs from the local file's; the upload was removed",
                                file: remoteName)
            }
            sha256 = whole
            method = how
        }

        report(.committing, 0, of: size, sent: sent)
        let flushed = options.flush && (try? connection.run("sync -- \(tq)", longOperation: true).status) == 0
        if options.flush && !flushed { notes.append("`sync FILE` did not run on the host: the data was not explicitly flushed to stable storage") }
        let pq = TextEncoding.shellQuoted(path)
        let rename = options.overwrite
            ? "mv -f -- \(tq) \(pq)"
            : "if ln -- \(tq) \(pq) 2>/dev/null; then rm -f -- \(tq); elif [ -e \(pq) ] || [ -L \(pq) ]; then exit 17; else mv -- \(tq) \(pq); fi"
        let renamed = try shell(rename, what: "renaming the upload into place")
        if renamed.status == 17 {
            throw KDCTError(.alreadyExists, "appeared on the host during the upload; the verified upload is kept as \(temporary)",
                            file: remoteName)
        }
        guard renamed.status == 0 else {
            throw KDCTError(.io, "renaming \(temporary) into place failed: \(String(decoding: renamed.errorOutput.prefix(300), as: UTF8.self))",
                            file: remoteName)
        }
        report(.committing, size, of: size, sent: sent)
        var destination = location
        destination.path = path
        return ExportResult(destination: destination, temporaryPath: temporary, size: size, sentBytes: sent,
                            skippedZeroBytes: 0, resumedBytes: nil, restartedPartialUpload: false, sha256: sha256,
                            verification: method,
                            placement: options.overwrite ? .atomicReplaceByCommand : .renamedWithoutReplacing,
                            flushed: flushed, streams: 1, hostKeyFingerprint: connection.hostKey.fingerprint,
                            hostKeyRecorded: connection.hostKeyWasRecorded, authentication: connection.authentication,
                            notes: notes)
    }

    /// Streams the whole file to `temporary` with the scp protocol; returns the bytes sent.
    private func send(to temporary: String, size: UInt64) throws -> UInt64 {
        let driver = connection.driver
        let mode = DiskExporter.permissions(of: file.descriptor)
        guard let channel = try driver.callPointer("starting scp to \(temporary)", .reply, {
            libssh2_scp_send64(connection.session, temporary, mode, Int64(size), 0, 0)
        }) else {
            throw connection.error("starting scp to \(temporary)", code: Int(libssh2_session_last_errno(connection.session)))
        }
        defer { connection.freeChannel(channel) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        report(.uploading, 0, of: size)
        var position: UInt64 = 0
        while position < size {
            try options.connection.cancellation?.check()
            let count = Int(min(UInt64(buffer.count), size - position))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            // scp streams every byte in order: holes are read (as zeros) and sent.
            try file.read(into: chunk, at: position, what: "local data")
            try write(UnsafeRawBufferPointer(chunk), channel: channel)
            position += UInt64(count)
            report(.uploading, position, of: size, sent: position)
        }
        // The scp protocol ends a file with a status byte from the sender; `scp -t` waits for it.
        try [UInt8(0)].withUnsafeBytes { try write($0, channel: channel) }
        for (step, call) in [("send_eof", libssh2_channel_send_eof), ("wait_eof", libssh2_channel_wait_eof),
                             ("wait_closed", libssh2_channel_wait_closed)] {
            let rc = try driver.call("finishing scp (\(step))", .longOperation) { call(channel) }
            if rc != 0 { throw connection.error("finishing scp (\(step))", code: Int(rc), file: "\(connection.endpoint.displayName):\(temporary)") }
        }
        let status = libssh2_channel_get_exit_status(channel)
        if status != 0 {
            throw KDCTError(.io, "scp on the host exited with status \(status)", file: "\(connection.endpoint.displayName):\(temporary)")
        }
        return position
    }

    private func write(_ bytes: UnsafeRawBufferPointer, channel: OpaquePointer) throws {
        var done = 0
        var lastProgress = MonotonicClock.now
        while done < bytes.count {
            let rc = try connection.driver.call("scp write") {
                kdct_ssh2_channel_write(channel, (bytes.baseAddress! + done).assumingMemoryBound(to: CChar.self), bytes.count - done)
            }
            if rc < 0 { throw connection.error("scp write", code: rc) }
            if rc == 0 {
                try connection.driver.waitForSocket({ "scp write" }, .reply, lastProgress: &lastProgress)
            } else {
                lastProgress = MonotonicClock.now
            }
            done += rc
        }
    }
}
