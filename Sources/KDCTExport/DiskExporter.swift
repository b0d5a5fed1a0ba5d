import CKDCTShims
import CLibSSH2
import Crypto
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// Sends a local disk image (any file, sent byte for byte) to a KVM host.
///
/// SFTP (the default): the file is written under a temporary name beside the destination
/// (`.NAME.kdct-export.part`, created exclusively), zero runs of at least `minimumHole` bytes are not sent (the
/// remote file gets holes), the file is flushed with `fsync@openssh.com` when the server offers it, its SHA-256 is
/// compared with the local file's, and only then is it renamed to the destination name. An interrupted upload
/// stays under the temporary name; `resume` continues it after checking that its content equals the local
/// file's prefix (and starts over when it does not).
///
/// scp (`transferProtocol = .scp`, for hosts with no SFTP server) can promise less, and the exporter says so: the
/// protocol streams every byte (no holes), cannot append (no resume), cannot create exclusively or rename, and has
/// no flush. The file still goes to the temporary name; flushing (`sync FILE`), verification (`sha256sum`) and the
/// final rename (`ln` then `rm`, which refuses an existing destination, or `mv -f` with `overwrite`) run as
/// commands over an exec channel, so scp mode needs a POSIX shell on the host.
public enum DiskExporter {
    /// Exports `localPath` to `location`.
    public static func export(localPath: String, to location: RemoteLocation, options: ExportOptions) throws -> ExportResult {
        let file = try ReadOnlyFile(path: localPath)
        if options.resume && options.transferProtocol == .scp {
            throw KDCTError(.unsupported, "--resume needs SFTP: the scp protocol cannot continue a partial file", field: "--resume")
        }
        _ = kdct_advise_sequential(file.descriptor)
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

    /// The permission bits of the local file, given to the remote one.
    static func permissions(of file: ReadOnlyFile) -> Int32 {
        var st = stat()
        guard fstat(file.descriptor, &st) == 0 else { return 0o644 }
        return Int32(st.st_mode & 0o777)
    }

    /// SHA-256 state over the local file's first `length` bytes (holes hashed as zeros without being read).
    static func hashPrefix(of file: ReadOnlyFile, length: UInt64) throws -> SHA256 {
        var hasher = SHA256()
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var position: UInt64 = 0
        while position < length {
            let dataStart = min(try file.nextData(from: position) ?? length, length)
            WrittenContentDigest.hashZeros(&hasher, count: dataStart - position)
            let dataEnd = min(try file.nextHole(from: dataStart), length)
            var offset = dataStart
            while offset < dataEnd {
                let count = Int(min(UInt64(chunk), dataEnd - offset))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try file.read(into: slice, at: offset, what: "local data")
                hasher.update(bufferPointer: UnsafeRawBufferPointer(slice))
                offset += UInt64(count)
            }
            position = max(dataEnd, dataStart)
        }
        return hasher
    }
}

/// Feeds a local file to a sink in order: data runs as they are, zero runs (holes and all-zero 64 KiB blocks)
/// either skipped (when at least `minimumHole` long) or passed on as zeros.
struct SparseFileReader {
    let file: ReadOnlyFile
    let minimumHole: UInt64
    let sendShortZeroRuns: Bool
    static let blockSize = 64 << 10

    /// Calls `emit` with each run to send, in increasing offsets, from `start` to the end of the file; `tick`
    /// after each chunk with the offset reached. Returns the bytes passed to `emit`.
    func run(from start: UInt64, emit: (UnsafeRawBufferPointer, UInt64) throws -> Void,
             tick: (UInt64) throws -> Void) throws -> UInt64 {
        let size = file.size
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var emitted: UInt64 = 0
        var zeroRunStart: UInt64?

        func endZeroRun(at end: UInt64) throws {
            guard let runStart = zeroRunStart else { return }
            zeroRunStart = nil
            guard end - runStart < minimumHole, sendShortZeroRuns else { return }
            var offset = runStart
            try zeroBytes.withUnsafeBytes { zeros in
                while offset < end {
                    let count = Int(min(UInt64(zeros.count), end - offset))
                    try emit(UnsafeRawBufferPointer(rebasing: zeros[0..<count]), offset)
                    emitted += UInt64(count)
                    offset += UInt64(count)
                }
            }
        }

        var position = start
        while position < size {
            guard let dataStart = try file.nextData(from: position) else { break }
            if dataStart > position && zeroRunStart == nil { zeroRunStart = position }
            let dataEnd = max(try file.nextHole(from: dataStart), dataStart)
            var offset = dataStart
            while offset < dataEnd {
                let count = Int(min(UInt64(chunk), dataEnd - offset))
                let got = try file.readAvailable(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset)
                guard got == count else {
                    throw KDCTError(.truncated, "the file shrank while being exported (read \(got) of \(count) bytes at offset \(offset))",
                                    file: file.path)
                }
                var index = 0
                var dataRun: Int?
                while index < count {
                    let length = min(Self.blockSize, count - index)
                    if kdct_is_zero(buffer.baseAddress! + index, length) != 0 {
                        if let runStart = dataRun {
                            try emit(UnsafeRawBufferPointer(rebasing: buffer[runStart..<index]), offset + UInt64(runStart))
                            emitted += UInt64(index - runStart)
                            dataRun = nil
                        }
                        if zeroRunStart == nil { zeroRunStart = offset + UInt64(index) }
                    } else if dataRun == nil {
                        try endZeroRun(at: offset + UInt64(index))
                        dataRun = index
                    }
                    index += length
                }
                if let runStart = dataRun {
                    try emit(UnsafeRawBufferPointer(rebasing: buffer[runStart..<count]), offset + UInt64(runStart))
                    emitted += UInt64(count - runStart)
                }
                offset += UInt64(count)
                try tick(offset)
            }
            position = dataEnd
        }
        // A trailing zero run is never sent: the final size makes it a hole (SFTP) or the caller pads it (scp).
        return emitted
    }
}

/// 1 MiB of zeros to send for short zero runs.
private let zeroBytes = [UInt8](repeating: 0, count: 1 << 20)

/// An export over SFTP.
private struct SFTPUpload {
    let file: ReadOnlyFile
    let location: RemoteLocation
    let connection: SSHConnection
    let options: ExportOptions

    func run() throws -> ExportResult {
        let sftp = try connection.openSFTP()
        var notes = connection.notes
        var path = location.path
        let isDirectory = try sftp.status(of: path)?.isDirectory == true
        if path.hasSuffix("/") || isDirectory {
            path = FilePaths.join(path.hasSuffix("/") ? String(path.dropLast()) : path, FilePaths.lastComponent(of: file.path))
        }
        let remoteName = sftp.remoteName(path)
        if let existing = try sftp.status(of: path, followLinks: false) {
            if existing.isDirectory { throw KDCTError(.invalidArgument, "is a directory on the host", file: remoteName) }
            if !options.overwrite {
                throw KDCTError(.alreadyExists, "exists on the host (use --force to replace it)", file: remoteName)
            }
        }
        let temporary = DiskExporter.temporaryPath(for: path)
        let size = file.size
        let mode = DiskExporter.permissions(of: file)
        let digest = options.verify ? WrittenContentDigest(name: remoteName, hashFromZero: true) : nil
        var start: UInt64 = 0
        var resumedFrom: UInt64?
        var restarted = false
        let remote: SFTPFile
        if let partial = try sftp.status(of: temporary, followLinks: false) {
            if options.resume {
                guard partial.isRegularFile else {
                    throw KDCTError(.invalidArgument, "the interrupted upload is not a regular file", file: sftp.remoteName(temporary))
                }
                remote = try sftp.openForWriting(temporary, exclusive: false, mode: mode, window: options.pipelineWindow)
                let partialSize = try remote.size()
                if try prefixMatches(partialSize: partialSize, temporary: temporary, sftp: sftp, digest: digest, notes: &notes) {
                    start = partialSize
                    resumedFrom = partialSize
                } else {
                    restarted = true
                    try remote.setSize(0)
                    notes.append("the interrupted upload (\(partialSize) bytes) does not match the local file; started over")
                }
            } else if options.overwrite {
                try sftp.remove(temporary)
                remote = try sftp.openForWriting(temporary, exclusive: true, mode: mode, window: options.pipelineWindow)
            } else {
                throw KDCTError(.alreadyExists,
                                "an interrupted upload to this destination is on the host (\(partial.size.map { "\($0) bytes" } ?? "size unknown")); rerun with --resume to continue it, or --force to start over",
                                file: sftp.remoteName(temporary))
            }
        } else {
            if options.resume { notes.append("no interrupted upload was found; started from the beginning") }
            remote = try sftp.openForWriting(temporary, exclusive: true, mode: mode, window: options.pipelineWindow)
        }

        var sent: UInt64 = 0
        let flushed: Bool
        do {
            let reader = SparseFileReader(file: file, minimumHole: options.minimumHole, sendShortZeroRuns: true)
            let progress = options.progress
            let cancelled = options.isCancelled
            progress?(ExportProgress(phase: .uploading, processedBytes: start, totalBytes: size, sentBytes: 0))
            var sentSoFar: UInt64 = 0
            sent = try reader.run(from: start, emit: { bytes, offset in
                try remote.write(bytes, at: offset)
                try digest?.record(bytes, at: offset)
                sentSoFar += UInt64(bytes.count)
            }, tick: { offset in
                if cancelled?() == true {
                    throw KDCTError(.cancelled, "export interrupted")
                }
                progress?(ExportProgress(phase: .uploading, processedBytes: offset, totalBytes: size, sentBytes: sentSoFar))
            })
            try remote.setSize(size)
            try digest?.setLength(size)
            flushed = try remote.sync()
            try remote.close()
            progress?(ExportProgress(phase: .uploading, processedBytes: size, totalBytes: size, sentBytes: sent))
        } catch var error as KDCTError {
            if error.code == .cancelled { try? remote.close() } else { remote.closeDiscarding() }
            error.message += "; the partial upload is kept on the host as \(temporary): rerun with --resume to continue it"
            throw error
        } catch {
            remote.closeDiscarding()
            throw error
        }
        if !flushed {
            notes.append("the server does not offer fsync@openssh.com: the data was not flushed to stable storage on the host")
        }

        var sha256: String?
        var method = VerificationMethod.skipped
        if let digest {
            let expected = digest.finish()
            (sha256, method) = try verify(temporary: temporary, expected: expected, size: size, sftp: sftp, notes: &notes)
        }
        try placeFile(temporary, at: path, sftp: sftp)
        var destination = location
        destination.path = path
        return ExportResult(destination: destination, temporaryPath: temporary, size: size, sentBytes: sent,
                            skippedZeroBytes: size - start - min(sent, size - start), resumedFrom: resumedFrom,
                            restartedPartialUpload: restarted, sha256: sha256, verification: method, flushed: flushed,
                            hostKeyFingerprint: connection.hostKey.fingerprint,
                            hostKeyRecorded: connection.hostKeyWasRecorded, authentication: connection.authentication,
                            notes: notes)
    }

    /// True when the interrupted upload's `partialSize` bytes equal the local file's first bytes (SHA-256 on
    /// both sides); primes `digest` with that prefix.
    private func prefixMatches(partialSize: UInt64, temporary: String, sftp: SFTPSession, digest: WrittenContentDigest?,
                               notes: inout [String]) throws -> Bool {
        guard partialSize <= file.size else { return false }
        options.progress?(ExportProgress(phase: .checkingPartialUpload, processedBytes: 0, totalBytes: file.size, sentBytes: 0))
        let local = try DiskExporter.hashPrefix(of: file, length: partialSize)
        guard partialSize > 0 else {
            digest?.resume(afterPrefixOf: 0, hasher: local)
            return true
        }
        let hasher = RemoteHasher(connection: connection, sftp: sftp, preference: options.verification)
        let (remote, _) = try hasher.digests(of: temporary, ranges: [(0, partialSize)], fileSize: partialSize, notes: &notes)
        guard remote.first == TextEncoding.hex(local.finalize()) else { return false }
        digest?.resume(afterPrefixOf: partialSize, hasher: local)
        return true
    }

    private func verify(temporary: String, expected: [RangeDigest], size: UInt64, sftp: SFTPSession,
                        notes: inout [String]) throws -> (String?, VerificationMethod) {
        let name = sftp.remoteName(temporary)
        guard let remoteSize = try sftp.status(of: temporary)?.size, remoteSize == size else {
            try? sftp.remove(temporary)
            throw KDCTError(.checksum, "the uploaded file does not have the local file's size (\(size) bytes); it was removed", file: name)
        }
        options.progress?(ExportProgress(phase: .verifying, processedBytes: 0, totalBytes: size, sentBytes: 0))
        var hasher = RemoteHasher(connection: connection, sftp: sftp, preference: options.verification)
        let progress = options.progress
        hasher.progress = { progress?(ExportProgress(phase: .verifying, processedBytes: $0, totalBytes: size, sentBytes: 0)) }
        let (remote, method) = try hasher.digests(of: temporary, ranges: expected.map { ($0.start, $0.length) },
                                                  fileSize: size, notes: &notes)
        guard remote == expected.map(\.sha256) else {
            try? sftp.remove(temporary)
            throw KDCTError(.checksum,
                            "the uploaded file's SHA-256 (\(remote.joined(separator: ","))) differs from the local file's (\(expected.map(\.sha256).joined(separator: ","))); the upload was removed",
                            file: name)
        }
        return (expected.count == 1 ? expected[0].sha256 : nil, method)
    }

    /// Renames the verified upload into place. OpenSSH's server never replaces a file on rename, so `overwrite`
    /// removes the old destination first: for a moment no file has that name, but never a partial one.
    private func placeFile(_ temporary: String, at path: String, sftp: SFTPSession) throws {
        if options.overwrite, try sftp.status(of: path, followLinks: false) != nil {
            try sftp.remove(path)
        }
        do {
            try sftp.rename(temporary, to: path)
        } catch let error as KDCTError {
            if (try? sftp.status(of: path, followLinks: false)) != nil {
                throw KDCTError(.alreadyExists,
                                "appeared on the host during the upload; the verified upload is kept as \(temporary)",
                                file: sftp.remoteName(path))
            }
            throw error
        }
    }
}

/// An export over scp (see `DiskExporter`).
private struct SCPUpload {
    let file: ReadOnlyFile
    let location: RemoteLocation
    let connection: SSHConnection
    let options: ExportOptions

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
        let result = try shell("if [ -d \(q) ]; then echo directory; elif [ -e \(q) ] || [ -L \(q) ]; then echo exists; else echo none; fi",
                               what: "checking the destination")
        let answer = String(decoding: result.output, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
        guard ["directory", "exists", "none"].contains(answer) else {
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
        if kind == "directory" { throw KDCTError(.invalidArgument, "is a directory on the host", file: remoteName) }
        if kind == "exists" && !options.overwrite {
            throw KDCTError(.alreadyExists, "exists on the host (use --force to replace it)", file: remoteName)
        }
        let temporary = DiskExporter.temporaryPath(for: path)
        let size = file.size
        let digest = options.verify ? WrittenContentDigest(name: remoteName, hashFromZero: true) : nil

        guard let channel = libssh2_scp_send64(connection.session, temporary, DiskExporter.permissions(of: file),
                                               Int64(size), 0, 0) else {
            throw connection.error("starting scp to \(temporary)", code: Int(libssh2_session_last_errno(connection.session)))
        }
        var sent: UInt64 = 0
        do {
            defer { libssh2_channel_free(channel) }
            var position: UInt64 = 0
            let progress = options.progress
            let cancelled = options.isCancelled
            // scp streams every byte in order: holes and zero runs are sent as zeros.
            func send(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
                if offset > position {
                    try zeroBytes.withUnsafeBytes { zeros in
                        while position < offset {
                            let count = Int(min(UInt64(zeros.count), offset - position))
                            try write(UnsafeRawBufferPointer(rebasing: zeros[0..<count]), channel: channel)
                            position += UInt64(count)
                        }
                    }
                }
                try write(bytes, channel: channel)
                try digest?.record(bytes, at: offset)
                position = offset + UInt64(bytes.count)
            }
            let reader = SparseFileReader(file: file, minimumHole: 0, sendShortZeroRuns: false)
            _ = try reader.run(from: 0, emit: send, tick: { offset in
                if cancelled?() == true { throw KDCTError(.cancelled, "export interrupted") }
                progress?(ExportProgress(phase: .uploading, processedBytes: offset, totalBytes: size, sentBytes: position))
            })
            if position < size {
                try zeroBytes.withUnsafeBytes { zeros in
                    while position < size {
                        let count = Int(min(UInt64(zeros.count), size - position))
                        try write(UnsafeRawBufferPointer(rebasing: zeros[0..<count]), channel: channel)
                        position += UInt64(count)
                    }
                }
            }
            sent = position
            // The scp protocol ends a file with a status byte from the sender; `scp -t` waits for it.
            try [UInt8(0)].withUnsafeBytes { try write($0, channel: channel) }
            try digest?.setLength(size)
            for (step, rc) in [("send_eof", libssh2_channel_send_eof(channel)), ("wait_eof", libssh2_channel_wait_eof(channel)),
                               ("wait_closed", libssh2_channel_wait_closed(channel))] where rc != 0 {
                throw connection.error("finishing scp (\(step))", code: Int(rc), file: "\(connection.endpoint.displayName):\(temporary)")
            }
            let status = libssh2_channel_get_exit_status(channel)
            if status != 0 {
                throw KDCTError(.io, "scp on the host exited with status \(status)", file: "\(connection.endpoint.displayName):\(temporary)")
            }
        } catch var error as KDCTError {
            error.message += "; a partial upload may remain on the host as \(temporary) (scp cannot resume; rerun to start over)"
            throw error
        }
        options.progress?(ExportProgress(phase: .uploading, processedBytes: size, totalBytes: size, sentBytes: sent))

        let tq = TextEncoding.shellQuoted(temporary)
        let flushed = (try? connection.run("sync -- \(tq)").status) == 0
        if !flushed { notes.append("`sync FILE` did not run on the host: the data was not explicitly flushed to stable storage") }

        var sha256: String?
        var method = VerificationMethod.skipped
        if let digest {
            let expected = digest.finish()
            options.progress?(ExportProgress(phase: .verifying, processedBytes: 0, totalBytes: size, sentBytes: sent))
            let hasher = RemoteHasher(connection: connection, sftp: nil, preference: .automatic)
            let (remote, how) = try hasher.digests(of: temporary, ranges: expected.map { ($0.start, $0.length) },
                                                   fileSize: size, notes: &notes)
            guard remote == expected.map(\.sha256) else {
                _ = try? connection.run("rm -f -- \(tq)")
                throw KDCTError(.checksum, "the uploaded file's SHA-256 (\(remote.joined(separator: ","))) differs from the local file's; the upload was removed",
                                file: remoteName)
            }
            sha256 = expected.first?.sha256
            method = how
        }

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
        var destination = location
        destination.path = path
        return ExportResult(destination: destination, temporaryPath: temporary, size: size, sentBytes: sent,
                            skippedZeroBytes: 0, resumedFrom: nil, restartedPartialUpload: false, sha256: sha256,
                            verification: method, flushed: flushed, hostKeyFingerprint: connection.hostKey.fingerprint,
                            hostKeyRecorded: connection.hostKeyWasRecorded, authentication: connection.authentication,
                            notes: notes)
    }

    private func write(_ bytes: UnsafeRawBufferPointer, channel: OpaquePointer) throws {
        var done = 0
        while done < bytes.count {
            let rc = kdct_ssh2_channel_write(channel, (bytes.baseAddress! + done).assumingMemoryBound(to: CChar.self), bytes.count - done)
            if rc < 0 { throw connection.error("scp write", code: rc) }
            done += rc
        }
    }
}
