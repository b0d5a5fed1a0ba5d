import KDCTFormats

/// Progress of an export or of a conversion to a host, reported as it goes.
public struct ExportProgress: Sendable, Equatable {
    /// What is being done. The phases come in this order (a fresh upload skips `checking`).
    public enum Phase: String, Sendable, CaseIterable {
        /// Connecting, checking the host key, authenticating. `processedBytes` is 0.
        case connecting
        /// Comparing an interrupted upload with the local file, chunk by chunk (`--resume`), or removing a
        /// conversion's leftover. Counts bytes of the interrupted upload compared.
        case checking
        /// Sending data. Counts bytes of the file dealt with, including `resumedBytes` kept from an earlier run
        /// and zero runs not sent.
        case uploading
        /// The host (or a read-back) hashing the uploaded file. Counts bytes hashed.
        case verifying
        /// Flushing and renaming the file into place. `processedBytes == totalBytes`.
        case committing
    }
    /// The current phase.
    public var phase: Phase
    /// Bytes done in this phase (see `Phase`).
    public var processedBytes: UInt64
    /// Bytes this phase goes through.
    public var totalBytes: UInt64
    /// Bytes sent over the network by this run so far.
    public var sentBytes: UInt64
    /// Bytes kept from an interrupted upload (`--resume`); part of `processedBytes` while uploading.
    public var resumedBytes: UInt64

    /// A progress report.
    public init(phase: Phase, processedBytes: UInt64, totalBytes: UInt64, sentBytes: UInt64 = 0, resumedBytes: UInt64 = 0) {
        self.phase = phase
        self.processedBytes = processedBytes
        self.totalBytes = totalBytes
        self.sentBytes = sentBytes
        self.resumedBytes = resumedBytes
    }

    /// Fraction of this phase done, 0...1.
    public var fraction: Double { totalBytes == 0 ? 1 : Double(min(processedBytes, totalBytes)) / Double(totalBytes) }
}

/// How `DiskExporter` sends a file.
public struct ExportOptions: Sendable {
    /// The file transfer protocol.
    public enum TransferProtocol: String, Sendable, CaseIterable {
        /// SFTP: exclusive temporary file, holes, fsync, resume, parallel streams, atomic rename.
        case sftp
        /// scp (for hosts without an SFTP server): the whole file is streamed; see `DiskExporter` for what it can
        /// and cannot promise.
        case scp
    }

    /// Host verification, authentication, `timeout` and `cancellation`.
    public var connection = SSHConnectionOptions()
    /// SFTP (default) or scp.
    public var transferProtocol: TransferProtocol = .sftp
    /// Replace an existing destination (`--force`), atomically; also discards an interrupted upload instead of
    /// resuming it.
    public var overwrite = false
    /// Continue an interrupted upload: chunks that match the local file are kept (`--resume`).
    public var resume = false
    /// Compare the SHA-256 of the remote file with the local one before renaming it into place.
    public var verify = true
    /// How to compute the remote SHA-256.
    public var verification: VerificationPreference = .automatic
    /// All-zero runs at least this long are not sent (the remote file gets a hole). Zero detection works on
    /// 64 KiB blocks, so this is rounded up to a multiple of that.
    public var minimumHole: UInt64 = 64 << 10
    /// Flush the file to stable storage on the host before it gets its name (`fsync@openssh.com`, or `sync` for
    /// scp). False only for `-t unsafe`: faster by the time the host's disk takes to write the file, but a crash
    /// of the host soon after may leave the name on a partly written file.
    public var flush = true
    /// Bytes of SFTP writes kept in flight on each stream.
    public var pipelineWindow = 8 << 20
    /// SFTP connections writing disjoint chunks of the file at once (`--streams`). Each is its own SSH
    /// connection (its own encryption thread here and its own sshd and sftp-server on the host).
    public var streams = ExportOptions.defaultStreams
    /// Pieces of 4 MiB of the local file requested from its disk ahead of the streams' reads
    /// (`posix_fadvise(WILLNEED)`), whatever the number of streams: 0 turns read-ahead off, at most
    /// `PipelineOptions.maxReadAhead`; default `PipelineOptions.defaultReadAhead`, as for conversions.
    public var readAhead = PipelineOptions.defaultReadAhead
    /// Called with progress, from the exporting thread.
    public var progress: (@Sendable (ExportProgress) -> Void)?

    /// The default `streams`: 2 on any machine with two or more CPUs; one more stream than that measured no
    /// faster on the 2-core benchmark machine (Benchmarks/RESULTS-export.md).
    public static let defaultStreams = 2

    /// The most `streams` accepted (OpenSSH's MaxStartups allows 10 unauthenticated connections by default).
    public static let maximumStreams = 8

    /// Defaults: SFTP, verified, no overwrite, no resume, `defaultStreams` streams.
    public init() {}
}

/// What an export did.
public struct ExportResult: Sendable {
    /// Where the file now is.
    public var destination: RemoteLocation
    /// The temporary name it was uploaded under.
    public var temporaryPath: String
    /// The file's size.
    public var size: UInt64
    /// Bytes sent in this run.
    public var sentBytes: UInt64
    /// Bytes of zero runs not sent (holes on the remote side).
    public var skippedZeroBytes: UInt64
    /// Bytes kept from an interrupted upload (`--resume`), or nil when none was used.
    public var resumedBytes: UInt64?
    /// True when an interrupted upload did not match the local file and was started over.
    public var restartedPartialUpload: Bool
    /// The file's SHA-256 (lower-case hex) when verified.
    public var sha256: String?
    /// How the remote copy was verified.
    public var verification: VerificationMethod
    /// How the file got its final name.
    public var placement: PlacementMethod
    /// True when the server confirmed the data is on stable storage (`fsync@openssh.com`, or `sync` for scp).
    public var flushed: Bool
    /// Streams used to send the data.
    public var streams: Int
    /// The host key's fingerprint.
    public var hostKeyFingerprint: String
    /// True when the host key was recorded in this run.
    public var hostKeyRecorded: Bool
    /// How authentication succeeded.
    public var authentication: String
    /// Remarks worth showing the user.
    public var notes: [String]
}
