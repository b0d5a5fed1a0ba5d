import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// What a remote output target did when it was committed.
public struct RemoteCommitReport: Sendable {
    /// The SHA-256 of each verified range of the file: the chunks (and, when the writer wrote a header last,
    /// the bytes before its first write).
    public var digests: [RangeDigest]
    /// How the remote file was verified.
    public var verification: VerificationMethod
    /// How the file got its final name.
    public var placement: PlacementMethod
    /// True when the server confirmed the data is on stable storage (`fsync@openssh.com`).
    public var flushed: Bool
    /// The file's size.
    public var size: UInt64
    /// Remarks worth showing.
    public var notes: [String]
}

/// An `OutputTarget` on a remote host, over SFTP: what `kdct-native convert SRC sftp://USER@HOST/path` writes to,
/// so a converted image streams to the KVM host with no local copy.
///
/// The same rules as a local output and as `DiskExporter`: the image is written under a stable temporary name
/// beside the destination (`.NAME.kdct-convert.part`, created exclusively; a leftover of an earlier conversion
/// that did not finish is removed first), `commit` compares the SHA-256 of what was written with the remote
/// file's chunk by chunk (on the host, else read back), flushes it (`fsync@openssh.com` when offered) and renames
/// it into place, atomically replacing an old file with `overwrite`. `abort` removes the temporary file, over a
/// new connection when the failure left the old one unusable (a lost connection, a timeout, a cancellation).
///
/// Writes go through a pipelined stream and must move forward (the RAW and QCOW2 writers do; the QCOW2 header,
/// written last at offset 0, is verified as its own range).
public final class SFTPFileTarget: OutputTarget {
    /// The destination as given.
    public let location: RemoteLocation
    /// The path the file gets (the destination, or the target of a symbolic link there).
    public let destinationPath: String
    /// The temporary path being written on the host.
    public let temporaryPath: String
    /// Filled in by a successful `commit`.
    public private(set) var report: RemoteCommitReport?
    /// Set by `abort` when the temporary file could not be removed (the next conversion to the same destination
    /// removes it).
    public private(set) var cleanupFailure: String?
    /// Flush the file to the host's disk (`fsync@openssh.com`) before the rename; set false for `-t unsafe`
    /// (faster by the time the host's disk takes, but a host crash soon after may leave a partly written file
    /// under the name).
    public var flush = true
    private let connection: SSHConnection
    private let sftp: SFTPSession
    private let file: SFTPFile
    private let digest: WrittenContentDigest?
    private let overwrite: Bool
    private let verification: VerificationPreference
    private let progress: (@Sendable (ExportProgress) -> Void)?
    private let sent = AtomicCounter()
    private var finished = false
    private var notes: [String]

    /// The temporary name a conversion to `path` uses: stable, so a later run finds what a failed one left.
    public static func temporaryPath(for path: String) -> String {
        FilePaths.join(FilePaths.directory(of: path), ".\(FilePaths.lastComponent(of: path)).kdct-convert.part")
    }

    /// Connects to `location`'s host (host key check, authentication) and creates the temporary file with
    /// permission bits `mode`. Fails with `alreadyExists` when the destination exists and `overwrite` is false.
    /// `expectedSize` (the virtual size) picks the verification chunk size. `progress` gets the `connecting`,
    /// `checking`, `verifying` and `committing` phases (the conversion reports `uploading`).
    public convenience init(location: RemoteLocation, connectionOptions: SSHConnectionOptions, overwrite: Bool,
                            verify: Bool = true, verification: VerificationPreference = .automatic, mode: Int32 = 0o644,
                            expectedSize: UInt64? = nil, progress: (@Sendable (ExportProgress) -> Void)? = nil) throws {
        var options = connectionOptions
        try options.resolvePassword()
        progress?(ExportProgress(phase: .connecting, processedBytes: 0, totalBytes: expectedSize ?? 0))
        let connection = try SSHConnection(endpoint: location.endpoint, options: options)
        try self.init(location: location, connection: connection, overwrite: overwrite, verify: verify,
                      verification: verification, mode: mode, expectedSize: expectedSize, progress: progress)
    }

    /// Uses an existing connection.
    public init(location: RemoteLocation, connection: SSHConnection, overwrite: Bool, verify: Bool = true,
                verification: VerificationPreference = .automatic, mode: Int32 = 0o644, expectedSize: UInt64? = nil,
                pipelineWindow: Int = 8 << 20, progress: (@Sendable (ExportProgress) -> Void)? = nil) throws {
        let sftp = try connection.openSFTP()
        let path = try DiskExporter.destinationPath(for: location, localName: nil, overwrite: overwrite, sftp: sftp)
        let temporary = Self.temporaryPath(for: path)
        var notes = connection.notes
        if let leftover = try sftp.status(of: temporary, followLinks: false) {
            progress?(ExportProgress(phase: .checking, processedBytes: 0, totalBytes: leftover.size ?? 0))
            try sftp.remove(temporary)
            notes.append("removed \(temporary) (\(leftover.size.map { "\($0) bytes" } ?? "size unknown"), left by an earlier conversion that did not finish)")
            progress?(ExportProgress(phase: .checking, processedBytes: leftover.size ?? 0, totalBytes: leftover.size ?? 0))
        }
        file = try sftp.openForWriting(temporary, exclusive: true, mode: mode, window: pipelineWindow)
        self.location = location
        self.destinationPath = path
        self.connection = connection
        self.sftp = sftp
        self.temporaryPath = temporary
        self.overwrite = overwrite
        self.verification = verification
        self.progress = progress
        self.notes = notes
        self.digest = verify
            ? WrittenContentDigest(name: sftp.remoteName(path), hashFromZero: false,
                                   chunkSize: ChunkLayout.chunkSize(forFileSize: expectedSize ?? 0))
            : nil
    }

    deinit { if !finished { abort() } }

    public var displayName: String { location.urlString }

    /// Bytes written to the host so far.
    public var sentBytes: UInt64 { sent.load() }

    /// Reads `sentBytes` from any thread (for a progress callback running beside the conversion).
    public var sentBytesReader: @Sendable () -> UInt64 { { [sent] in sent.load() } }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try digest?.record(bytes, at: offset)
        try file.write(bytes, at: offset)
        sent.add(UInt64(bytes.count))
    }

    public func setLength(_ length: UInt64) throws {
        try digest?.setLength(length)
        try file.setSize(length)
    }

    public func allocate(offset: UInt64, length: UInt64) throws {
        throw KDCTError(.unsupported, "space cannot be preallocated over SFTP (use preallocation=off or full)",
                        file: displayName, field: "preallocation")
    }

    private func announce(_ phase: ExportProgress.Phase, _ processed: UInt64, of total: UInt64) {
        progress?(ExportProgress(phase: phase, processedBytes: processed, totalBytes: total, sentBytes: sentBytes))
    }

    public func commit() throws {
        guard !finished else { return }
        do {
            let size = try file.size()
            var digests: [RangeDigest] = []
            var method = VerificationMethod.skipped
            if let digest {
                digests = digest.finish()
                let name = sftp.remoteName(temporaryPath)
                guard size == digest.length else {
                    throw KDCTError(.checksum, "the remote file has \(size) bytes, but \(digest.length) were written", file: name)
                }
                announce(.verifying, 0, of: size)
                let hasher = RemoteHasher(connection: connection, sftp: sftp, preference: verification)
                let (remote, how) = try hasher.digests(of: temporaryPath, ranges: digests.map { ByteRange(start: $0.start, length: $0.length) },
                                                       notes: &notes) { done in self.announce(.verifying, done, of: size) }
                let differing = digests.indices.filter { remote[$0] != digests[$0].sha256 }
                guard differing.isEmpty else {
                    throw KDCTError(.checksum,
                                    "the remote file differs from what was written in \(differing.count) of \(digests.count) range(s) (the first at offset \(digests[differing[0]].start))",
                                    file: name)
                }
                method = how
            }
            announce(.committing, 0, of: size)
            let flushed = try file.sync(toDisk: flush)
            if flush && !flushed {
                notes.append("the server does not offer fsync@openssh.com: the image was not flushed to stable storage on the host")
            }
            try file.close()
            let placement = try RemotePlacement.place(temporaryPath, at: destinationPath, overwrite: overwrite, sftp: sftp,
                                                      notes: &notes)
            finished = true
            announce(.committing, size, of: size)
            report = RemoteCommitReport(digests: digests, verification: method, placement: placement, flushed: flushed,
                                        size: size, notes: notes)
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        guard !finished else { return }
        finished = true
        // One budget for closing the file and removing it, deaf to the cancellation that may have caused this.
        let cancelled = connection.policy.cancellation?.isCancelled == true
        let saved = connection.policy
        connection.policy = saved.forCleanup(seconds: cancelled ? RemoteCleanup.afterCancellation : RemoteCleanup.afterFailure)
        defer { connection.policy = saved }
        file.closeDiscarding()
        if let reason = RemoteCleanup.remove(temporaryPath, sftp: connection.isUsable ? sftp : nil, connection: connection,
                                             cancelled: cancelled) {
            cleanupFailure = "the temporary file \(sftp.remoteName(temporaryPath)) may remain on the host (\(reason)); the next conversion to this destination removes it"
        }
    }
}
