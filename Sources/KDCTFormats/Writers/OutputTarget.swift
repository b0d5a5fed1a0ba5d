#if canImport(Glibc)
import Glibc
#endif
import CKDCTShims

/// Where a writer's bytes go: a local file (temporary name, renamed into place on commit) or, with KDCTExport,
/// a file on a remote host. Writers only ever see this protocol.
public protocol OutputTarget: AnyObject {
    /// The destination as the user named it, for messages.
    var displayName: String { get }
    /// Writes `bytes` at `offset` of the output.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Sets the output's length (ranges never written read as zeros).
    func setLength(_ length: UInt64) throws
    /// Allocates `[offset, offset+length)` without writing data; throws `unsupported` where that is impossible.
    func allocate(offset: UInt64, length: UInt64) throws
    /// Flushes everything and makes the output appear under its final name.
    func commit() throws
    /// Discards the partial output; nothing appears under the final name. Never throws.
    func abort()
}

/// A local output file written under a temporary name beside the destination (`.NAME.kdct-XXXXXX.part`,
/// created exclusively) and renamed into place by `commit()` after `fsync`. A failed or interrupted conversion
/// never leaves a file under the destination name.
public final class LocalFileTarget: OutputTarget {
    /// The final path.
    public let destination: String
    /// The temporary path being written.
    public let temporaryPath: String
    private let file: WritableFile
    private let overwrite: Bool
    private var finished = false
    // Writeback is started every `writebackInterval` bytes so the final fsync has little left to do.
    private let writebackInterval: UInt64 = 64 << 20
    private var unhintedBytes: UInt64 = 0
    private var lowestUnhinted = UInt64.max
    private var highestWritten: UInt64 = 0

    /// Prepares to write `destination`. Fails with `alreadyExists` if it exists and `overwrite` is false.
    public init(destination: String, overwrite: Bool) throws {
        if !overwrite && FilePaths.exists(destination) {
            throw KDCTError(.alreadyExists, "destination exists (use --force to replace it)", file: destination)
        }
        if FilePaths.isDirectory(destination) {
            throw KDCTError(.invalidArgument, "destination is a directory", file: destination)
        }
        self.destination = destination
        self.overwrite = overwrite
        let directory = FilePaths.directory(of: destination)
        let name = FilePaths.lastComponent(of: destination)
        var lastError: KDCTError?
        for _ in 0..<16 {
            let candidate = FilePaths.join(directory, ".\(name).kdct-\(Self.randomSuffix()).part")
            do {
                let file = try WritableFile(creatingExclusively: candidate)
                self.file = file
                self.temporaryPath = candidate
                return
            } catch let error as KDCTError where error.code == .alreadyExists {
                lastError = error
            }
        }
        throw lastError ?? KDCTError(.io, "could not create a temporary file", file: destination)
    }

    deinit { if !finished { abort() } }

    private static func randomSuffix() -> String {
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return String((0..<8).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
    }

    public var displayName: String { destination }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try file.write(bytes, at: offset)
        lowestUnhinted = min(lowestUnhinted, offset)
        highestWritten = max(highestWritten, offset + UInt64(bytes.count))
        unhintedBytes += UInt64(bytes.count)
        if unhintedBytes >= writebackInterval {
            file.startWriteback(offset: lowestUnhinted, length: highestWritten - lowestUnhinted)
            unhintedBytes = 0
            lowestUnhinted = .max
        }
    }

    public func setLength(_ length: UInt64) throws { try file.truncate(to: length) }

    public func allocate(offset: UInt64, length: UInt64) throws { try file.allocate(offset: offset, length: length) }

    public func commit() throws {
        guard !finished else { return }
        do {
            try file.sync()
            try file.close()
            if overwrite {
                try FilePaths.rename(temporaryPath, to: destination)
            } else {
                try FilePaths.renameNoReplace(temporaryPath, to: destination)
            }
            FilePaths.syncDirectory(of: destination)
            finished = true
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        guard !finished else { return }
        finished = true
        try? file.close()
        FilePaths.remove(temporaryPath)
    }
}

extension FilePaths {
    /// True when `path` is a directory.
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Renames `from` to `to` unless `to` exists (`alreadyExists`), atomically where the filesystem allows.
    public static func renameNoReplace(_ from: String, to: String) throws {
        if kdct_rename_noreplace(from, to) == 0 { return }
        let code = errno
        if code == EEXIST { throw KDCTError(.alreadyExists, "destination appeared during the conversion", file: to) }
        guard code == EINVAL || code == ENOSYS || code == ENOTSUP else {
            throw KDCTError.io("rename to \(to)", errno: code, file: from)
        }
        if exists(to) { throw KDCTError(.alreadyExists, "destination appeared during the conversion", file: to) }
        try rename(from, to: to)
    }
}
