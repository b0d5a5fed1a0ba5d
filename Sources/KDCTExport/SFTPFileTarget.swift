import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// What a remote output target did when it was committed.
public struct RemoteCommitReport: Sendable {
    /// The SHA-256 of each verified range of the file (one range unless the writer wrote a header last).
    public var digests: [RangeDigest]
    /// How the remote file was verified.
    public var verification: VerificationMethod
    /// True when the server confirmed the data is on stable storage (`fsync@openssh.com`).
    public var flushed: Bool
    /// Remarks worth showing.
    public var notes: [String]
}

/// An `OutputTarget` on a remote host, over SFTP: what `kdct-native convert SRC sftp://USER@HOST/path` writes to,
/// so a converted image streams to the KVM host with no local copy.
///
/// The same rules as a local output and as `DiskExporter`: the image is written under a temporary name beside
/// the destination (`.NAME.kdct-XXXXXXXX.part`, created exclusively), `commit` flushes it (`fsync@openssh.com`
/// when offered), compares the SHA-256 of what was written with the remote file's (`sha256sum` on the host,
/// else read back) and renames it into place; `abort` removes it. Writes go through a pipelined stream and
/// must move forward (the RAW and QCOW2 writers do; the QCOW2 header, written last at offset 0, is verified as
/// its own range).
public final class SFTPFileTarget: OutputTarget {
    /// The destination.
    public let location: RemoteLocation
    /// The temporary path being written on the host.
    public let temporaryPath: String
    /// Filled in by a successful `commit`.
    public private(set) var report: RemoteCommitReport?
    private let connection: SSHConnection
    private let sftp: SFTPSession
    private let file: SFTPFile
    private let digest: WrittenContentDigest?
    private let overwrite: Bool
    private let verification: VerificationPreference
    private var finished = false

    /// Connects to `location`'s host (host key check, authentication) and creates the temporary file.
    /// Fails with `alreadyExists` when the destination exists and `overwrite` is false.
    public convenience init(location: RemoteLocation, connectionOptions: SSHConnectionOptions, overwrite: Bool,
                            verify: Bool = true, verification: VerificationPreference = .automatic) throws {
        let connection = try SSHConnection(endpoint: location.endpoint, options: connectionOptions)
        try self.init(location: location, connection: connection, overwrite: overwrite, verify: verify,
                      verification: verification)
    }

    /// Uses an existing connection.
    public init(location: RemoteLocation, connection: SSHConnection, overwrite: Bool, verify: Bool = true,
                verification: VerificationPreference = .automatic, pipelineWindow: Int = 8 << 20) throws {
        let sftp = try connection.openSFTP()
        let name = sftp.remoteName(location.path)
        if let existing = try sftp.status(of: location.path, followLinks: false) {
            if existing.isDirectory { throw KDCTError(.invalidArgument, "destination is a directory on the host", file: name) }
            if !overwrite { throw KDCTError(.alreadyExists, "destination exists on the host (use --force to replace it)", file: name) }
        }
        let directory = FilePaths.directory(of: location.path)
        let base = FilePaths.lastComponent(of: location.path)
        var created: (String, SFTPFile)?
        var lastError: (any Error)?
        for _ in 0..<16 {
            let candidate = FilePaths.join(directory, ".\(base).kdct-\(Self.randomSuffix()).part")
            do {
                created = (candidate, try sftp.openForWriting(candidate, exclusive: true, mode: 0o644, window: pipelineWindow))
                break
            } catch let error as KDCTError where error.code == .alreadyExists {
                lastError = error
            }
        }
        guard let (temporary, file) = created else {
            throw lastError ?? KDCTError(.io, "could not create a temporary file", file: name)
        }
        self.location = location
        self.connection = connection
        self.sftp = sftp
        self.file = file
        self.temporaryPath = temporary
        self.overwrite = overwrite
        self.verification = verification
        self.digest = verify ? WrittenContentDigest(name: name, hashFromZero: false) : nil
    }

    deinit { if !finished { abort() } }

    private static func randomSuffix() -> String {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<8).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
    }

    public var displayName: String { location.urlString }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try digest?.record(bytes, at: offset)
        try file.write(bytes, at: offset)
    }

    public func setLength(_ length: UInt64) throws {
        try digest?.setLength(length)
        try file.setSize(length)
    }

    public func allocate(offset: UInt64, length: UInt64) throws {
        throw KDCTError(.unsupported, "space cannot be preallocated over SFTP (use preallocation=off or full)",
                        file: displayName, field: "preallocation")
    }

    public func commit() throws {
        guard !finished else { return }
        do {
            var notes: [String] = connection.notes
            let flushed = try file.sync()
            if !flushed {
                notes.append("the server does not offer fsync@openssh.com: the image was not flushed to stable storage on the host")
            }
            let size = try file.size()
            try file.close()
            var digests: [RangeDigest] = []
            var method = VerificationMethod.skipped
            if let digest {
                digests = digest.finish()
                let name = sftp.remoteName(temporaryPath)
                guard size == digest.length else {
                    throw KDCTError(.checksum, "the remote file has \(size) bytes, but \(digest.length) were written", file: name)
                }
                let hasher = RemoteHasher(connection: connection, sftp: sftp, preference: verification)
                let (remote, how) = try hasher.digests(of: temporaryPath, ranges: digests.map { ($0.start, $0.length) },
                                                       fileSize: size, notes: &notes)
                guard remote == digests.map(\.sha256) else {
                    throw KDCTError(.checksum,
                                    "the remote file's SHA-256 (\(remote.joined(separator: ","))) differs from what was written (\(digests.map(\.sha256).joined(separator: ",")))",
                                    file: name)
                }
                method = how
            }
            if overwrite, try sftp.status(of: location.path, followLinks: false) != nil {
                try sftp.remove(location.path)
            }
            do {
                try sftp.rename(temporaryPath, to: location.path)
            } catch let error as KDCTError {
                if (try? sftp.status(of: location.path, followLinks: false)) != nil {
                    throw KDCTError(.alreadyExists, "destination appeared on the host during the conversion",
                                    file: sftp.remoteName(location.path))
                }
                throw error
            }
            finished = true
            report = RemoteCommitReport(digests: digests, verification: method, flushed: flushed, notes: notes)
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        guard !finished else { return }
        finished = true
        file.closeDiscarding()
        try? sftp.remove(temporaryPath)
    }
}
