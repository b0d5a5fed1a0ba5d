#if canImport(Glibc)
import Glibc
#endif
import CKDCTShims

/// Where a writer's bytes go: a new local file (temporary name, renamed into place on commit), a block device or
/// an existing image written in place, or, with KDCTExport, a file on a remote host. Writers only ever see this
/// protocol.
public protocol OutputTarget: AnyObject {
    /// The destination as the user named it, for messages.
    var displayName: String { get }
    /// Writes `bytes` at `offset` of the output.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws
    /// Makes the output at least (a new file: exactly) `length` bytes long; ranges never written read as zeros
    /// only where `readsAsZeros` says so.
    func setLength(_ length: UInt64) throws
    /// Allocates `[offset, offset+length)` without writing data; throws `unsupported` where that is impossible.
    func allocate(offset: UInt64, length: UInt64) throws
    /// Flushes everything and makes the output appear under its final name.
    func commit() throws
    /// Discards the partial output; nothing appears under the final name. Never throws.
    func abort()

    /// True when every byte not written reads as zeros (a new file). False for a block device or an existing
    /// image written in place: a writer must then zero the ranges it leaves out (`writeZeros`).
    var readsAsZeros: Bool { get }
    /// The most bytes the output can hold (a block device's size), or nil when it grows as written.
    var capacity: UInt64? { get }
    /// Makes `[offset, offset+length)` read as zeros, as cheaply as the target can (deallocating where possible).
    func writeZeros(offset: UInt64, length: UInt64) throws
    /// Stores `length` bytes found at `sourceOffset` of `source` at `offset` of the output, in the kernel where
    /// the target can (`copy_file_range`, a reflink), else through a buffer.
    func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws
}

extension OutputTarget {
    public var readsAsZeros: Bool { true }

    public var capacity: UInt64? { nil }

    public func writeZeros(offset: UInt64, length: UInt64) throws {
        try ZeroBuffer.shared.forEachChunk(of: length) { chunk, done in try write(chunk, at: offset + done) }
    }

    public func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws {
        try copyThroughBuffer(from: source, at: sourceOffset, to: offset, length: length)
    }

    /// `copy` through a user-space buffer (`pread`, then `write`).
    public func copyThroughBuffer(from source: ReadOnlyFile, at sourceOffset: UInt64, to offset: UInt64,
                                  length: UInt64) throws {
        let chunkSize = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(chunkSize), length - done))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            try source.read(into: slice, at: sourceOffset + done, what: "data to copy")
            try write(UnsafeRawBufferPointer(slice), at: offset + done)
            done += UInt64(count)
        }
    }
}

/// A read-only block of zeros to write from, shared by every target.
final class ZeroBuffer: @unchecked Sendable {
    // @unchecked: `bytes` is a raw pointer (never Sendable to the compiler) to memory written once in `init` and
    // only read afterwards.
    static let shared = ZeroBuffer()
    /// 4 MiB of zeros (never written to, so safe to share).
    let bytes: UnsafeRawBufferPointer

    private init() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        bytes = UnsafeRawBufferPointer(buffer)
    }

    /// Calls `body` with slices of zeros covering `length` bytes and the count covered before each.
    func forEachChunk(of length: UInt64, _ body: (UnsafeRawBufferPointer, UInt64) throws -> Void) throws {
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(bytes.count), length - done))
            try body(UnsafeRawBufferPointer(rebasing: bytes[0..<count]), done)
            done += UInt64(count)
        }
    }
}

/// A new local output file: written under a hidden temporary name beside the destination
/// (`.NAME.kdct-XXXXXXXX.part`), locked while it is written, and renamed over the destination by `commit()`
/// after `fsync`. A failed or interrupted conversion never leaves a file under the destination name.
///
/// A destination that is a symlink is resolved first: the temporary file goes beside the link's target and is
/// renamed over the target, so the link stays. The temporary file is created unnamed (`O_TMPFILE`) and locked
/// (`flock`) before it gets its name, so a `.part` file nobody holds a lock on belongs to a writer that is gone
/// (killed, or its machine crashed): the next conversion to the same destination removes it. Messages name the
/// destination as the user gave it, never the temporary file.
public final class LocalFileTarget: OutputTarget {
    /// The destination as the user gave it.
    public let destination: String
    /// The file that is replaced: the destination, or the file its symlinks lead to.
    public let finalPath: String
    /// The temporary path being written.
    public let temporaryPath: String
    /// Stale temporary files of this destination removed when the target was created.
    public let removedStaleFiles: [String]
    private let file: WritableFile
    private let overwrite: Bool
    private let flush: Bool
    private var finished = false
    /// When to start writing back what was written; nil when the output is not flushed (`-t unsafe`): early
    /// writeback only shortens the final `fsync`, and without one it is work the run need not wait for (qcow2 ->
    /// qcow2 with `-t unsafe`, medians of 5: cold 1.85 s without it against 2.61 s with it, warm 0.55 against
    /// 2.47 s; Benchmarks/RESULTS.md, "Write scheduling").
    private var writeback: WritebackSchedule?
    /// Ranges whose writeback this target started (for tests).
    private(set) var writebackStarts = 0

    /// Prepares to write `destination`. Fails with `alreadyExists` if it exists and `overwrite` is false, and
    /// with `invalidArgument` when it is not a regular file (a directory, a device: see `InPlaceTarget`).
    /// `flush: false` skips the `fsync` calls (`-t unsafe`).
    public init(destination: String, overwrite: Bool, flush: Bool = true) throws {
        let path = try DestinationPath.inspect(destination)
        switch path.kind {
        case .missing:
            break
        case .regularFile:
            if !overwrite {
                let note = path.isLink ? " (a link to \(path.resolved))" : ""
                throw KDCTError(.alreadyExists, "destination exists\(note)", file: destination)
            }
        case .blockDevice:
            throw KDCTError(.invalidArgument, "is a block device; devices are written in place", file: destination)
        }
        self.destination = destination
        self.finalPath = path.resolved
        self.overwrite = overwrite
        self.flush = flush
        let directory = FilePaths.directory(of: path.resolved)
        guard FilePaths.isDirectory(directory) else {
            throw KDCTError(.notFound, "folder \(directory) does not exist", file: destination, field: "destination")
        }
        removedStaleFiles = TemporaryOutputName.removeStale(for: path.resolved)
        do {
            (file, temporaryPath) = try Self.createLockedTemporary(for: path.resolved)
            writeback = flush ? WritebackSchedule(output: file.descriptor) : nil
            if case let .regularFile(status) = path.kind { file.copyOwnership(of: status) }
        } catch let error as KDCTError {
            throw error.naming(destination)
        }
    }

    /// Creates `.NAME.kdct-XXXXXXXX.part` beside `finalPath`, locked. Unnamed then linked where the file system
    /// allows (so nobody ever sees it unlocked), else created exclusively and locked at once.
    private static func createLockedTemporary(for finalPath: String) throws -> (WritableFile, String) {
        let directory = FilePaths.directory(of: finalPath)
        if let unnamed = try WritableFile.unnamed(in: directory) {
            _ = try unnamed.tryLock()
            for _ in 0..<16 {
                let candidate = TemporaryOutputName.make(for: finalPath)
                if try unnamed.link(as: candidate) { return (unnamed, candidate) }
            }
            throw KDCTError(.alreadyExists, "no free temporary name", file: finalPath)
        }
        var lastError: KDCTError?
        for _ in 0..<16 {
            let candidate = TemporaryOutputName.make(for: finalPath)
            do {
                let file = try WritableFile(creatingExclusively: candidate)
                _ = try file.tryLock()
                return (file, candidate)
            } catch let error as KDCTError where error.code == .alreadyExists {
                lastError = error
            }
        }
        throw lastError ?? KDCTError(.io, "could not create a temporary file", file: finalPath)
    }

    deinit { if !finished { abort() } }

    public var displayName: String { destination }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try naming { try file.write(bytes, at: offset) }
        if let range = writeback?.noteWritten(offset: offset, count: UInt64(bytes.count)) {
            file.startWriteback(offset: range.offset, length: range.length)
            writebackStarts += 1
        }
    }

    public func setLength(_ length: UInt64) throws { try naming { try file.truncate(to: length) } }

    public func allocate(offset: UInt64, length: UInt64) throws {
        try naming { try file.allocate(offset: offset, length: length) }
    }

    public func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws {
        let copied = try naming { try file.copyRange(from: source, at: sourceOffset, to: offset, length: length) }
        if copied < length {
            try copyThroughBuffer(from: source, at: sourceOffset + copied, to: offset + copied, length: length - copied)
        }
    }

    public func commit() throws {
        guard !finished else { return }
        do {
            try naming {
                if flush { try file.sync() }
                if !overwrite {
                    try FilePaths.renameNoReplace(temporaryPath, to: finalPath)
                } else if flush {
                    try FilePaths.rename(temporaryPath, to: finalPath)
                } else {
                    try FilePaths.replaceByExchange(finalPath, with: temporaryPath)
                }
            }
            finished = true
            if flush { FilePaths.syncDirectory(of: finalPath) }
            // Closed only now: the lock is held until the file has its final name.
            try naming { try file.close() }
        } catch {
            abort()
            throw error
        }
    }

    public func abort() {
        if !finished {
            finished = true
            FilePaths.remove(temporaryPath)
        }
        try? file.close()
    }

    private func naming<T>(_ body: () throws -> T) throws -> T { try attributing(to: destination, body) }
}

/// Runs `body`, attributing its errors to `destination` as the user named it (not a temporary file or a resolved
/// device path).
func attributing<T>(to destination: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as KDCTError {
        throw error.naming(destination)
    }
}

extension KDCTError {
    /// This error with `file` set to `destination` (a temporary file's or folder's name replaced), so a user
    /// reads the name they gave.
    func naming(_ destination: String) -> KDCTError {
        var copy = self
        copy.file = destination
        return copy
    }
}

extension FilePaths {
    /// True when `path` is a directory.
    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Puts `replacement` under the name `path`, as a rename over it does, by exchanging the two names and then
    /// removing the old file from the replacement's former name; a plain rename where the exchange is not
    /// available or `path` does not exist. For an unflushed output (`-t unsafe`): ext4 (`auto_da_alloc`) starts
    /// writeback of a file renamed over another and the rename waits for it to be submitted (a cold 1.6 GB
    /// conversion over an existing output wrote all of it before it ended: 2.25-3.40 s with a rename, 1.44-1.69 s
    /// with the exchange; Benchmarks/RESULTS.md, "Write scheduling"), while an exchange replaces nothing. A crash between the two steps leaves the old file under the temporary name, which
    /// the next conversion to `path` removes as stale.
    static func replaceByExchange(_ path: String, with replacement: String) throws {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG,
              kdct_rename_exchange(replacement, path) == 0 else {
            try rename(replacement, to: path)
            return
        }
        remove(replacement)
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
