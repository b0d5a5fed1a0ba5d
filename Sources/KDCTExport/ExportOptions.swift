/// Progress of an export, reported as the upload goes.
public struct ExportProgress: Sendable {
    /// What the exporter is doing.
    public enum Phase: String, Sendable {
        /// Comparing an interrupted upload with the local file (`--resume`).
        case checkingPartialUpload = "checking"
        /// Sending data.
        case uploading = "uploading"
        /// Checking the remote file's SHA-256.
        case verifying = "verifying"
    }
    /// The current phase.
    public var phase: Phase
    /// Bytes of the local file dealt with (sent, skipped as zero, or kept from an interrupted upload).
    public var processedBytes: UInt64
    /// The local file's size.
    public var totalBytes: UInt64
    /// Bytes actually sent so far.
    public var sentBytes: UInt64

    /// Fraction done, 0...1.
    public var fraction: Double { totalBytes == 0 ? 1 : Double(min(processedBytes, totalBytes)) / Double(totalBytes) }
}

/// How `DiskExporter` sends a file.
public struct ExportOptions: Sendable {
    /// The file transfer protocol.
    public enum TransferProtocol: String, Sendable, CaseIterable {
        /// SFTP: exclusive temporary file, holes, fsync, resume, atomic no-replace rename.
        case sftp
        /// scp (for hosts without an SFTP server): the whole file is streamed; see `DiskExporter` for what it can
        /// and cannot promise.
        case scp
    }

    /// Host verification and authentication.
    public var connection = SSHConnectionOptions()
    /// SFTP (default) or scp.
    public var transferProtocol: TransferProtocol = .sftp
    /// Replace an existing destination (`--force`); also discards an interrupted upload instead of resuming it.
    public var overwrite = false
    /// Continue an interrupted upload whose content matches the local file (`--resume`).
    public var resume = false
    /// Compare the SHA-256 of the remote file with the local one before renaming it into place.
    public var verify = true
    /// How to compute the remote SHA-256.
    public var verification: VerificationPreference = .automatic
    /// Zero runs at least this long are not sent (the remote file gets a hole); shorter ones are sent, because
    /// each skip makes the pipeline wait for every outstanding write.
    public var minimumHole: UInt64 = 1 << 20
    /// Bytes of SFTP writes kept in flight.
    public var pipelineWindow = 8 << 20
    /// Called with progress from the exporting thread.
    public var progress: (@Sendable (ExportProgress) -> Void)?
    /// Polled between chunks; true stops the export (the partial upload is kept for `--resume`).
    public var isCancelled: (@Sendable () -> Bool)?

    /// Defaults: SFTP, verified, no overwrite, no resume.
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
    public var resumedFrom: UInt64?
    /// True when an interrupted upload did not match the local file and was started over.
    public var restartedPartialUpload: Bool
    /// The file's SHA-256 (lower-case hex) when verified.
    public var sha256: String?
    /// How the remote copy was verified.
    public var verification: VerificationMethod
    /// True when the server confirmed the data is on stable storage (`fsync@openssh.com`, or `sync` for scp).
    public var flushed: Bool
    /// The host key's fingerprint.
    public var hostKeyFingerprint: String
    /// True when the host key was recorded in this run.
    public var hostKeyRecorded: Bool
    /// How authentication succeeded.
    public var authentication: String
    /// Remarks worth showing the user.
    public var notes: [String]
}
