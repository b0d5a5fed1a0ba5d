#if canImport(Glibc)
import Glibc
import Synchronization
#endif
import CKDCTShims

/// A file opened read-only for positional reads: the only way readers touch an input image.
///
/// Thin wrapper over `open(O_RDONLY)`, `pread` and `lseek(SEEK_DATA/SEEK_HOLE)`: EINTR is retried, short reads are
/// continued, and errors carry the errno and the path. Positional I/O only, so one instance serves many threads.
///
/// A `ReadOnlyFile` may be a *window*: a byte range `[window.offset, window.offset + window.length)` of a larger
/// file (a member of an OVA/tar archive), read as if it were the whole file. All offsets are then relative to the
/// window, `size` is the window's length, reads stop at its end and SEEK_DATA/SEEK_HOLE answers are clipped to it,
/// so a format reader opens an archive member exactly as it opens a plain file.
public final class ReadOnlyFile: Sendable {
    /// The path the file was opened with; for a window, `archive/member` (a name for messages and format hints,
    /// not itself openable; see `openedPath`).
    public let path: String
    /// The path that was actually opened (the archive, for a window).
    public let openedPath: String
    /// The file descriptor (owned; closed on deinit). Code that uses it directly must add `windowOffset`.
    public let descriptor: Int32
    /// Size in bytes at open time (the window's length, for a window).
    public let size: UInt64
    /// Bytes allocated on disk at open time (`st_blocks * 512`; for a window, at most its length).
    public let allocatedSize: UInt64
    /// Device and inode, to recognise the same file reached through two names (chain loops).
    public let identity: FileIdentity
    /// Where the window starts in the underlying file (0 for a whole file).
    public let windowOffset: UInt64
    /// True when this is a window onto part of a larger file.
    public let isWindow: Bool

    /// Opens `path` read-only. Fails with `notFound` when it does not exist and `invalidArgument` when it is
    /// not a regular file or block device.
    public init(path: String) throws {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw KDCTError(.notFound, "no such file", file: path, errno: code) }
            throw KDCTError.io("open", errno: code, file: path)
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let code = errno
            close(fd)
            throw KDCTError.io("fstat", errno: code, file: path)
        }
        let type = st.st_mode & S_IFMT
        if type == S_IFDIR {
            close(fd)
            throw KDCTError(.invalidArgument, "is a directory, not an image file", file: path)
        }
        var size = UInt64(max(0, st.st_size))
        if type == S_IFBLK {
            let end = lseek(fd, 0, SEEK_END)
            size = end > 0 ? UInt64(end) : 0
        }
        self.path = path
        self.openedPath = path
        self.descriptor = fd
        self.size = size
        self.allocatedSize = UInt64(max(0, st.st_blocks)) * 512
        self.identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        self.windowOffset = 0
        self.isWindow = false
    }

    /// Opens the byte range `window` of the file at `path` as if it were a whole file (see the type's notes).
    /// Fails with `truncated` when the window reaches past the end of the file.
    public convenience init(path: String, window: FileWindow) throws {
        let whole = try ReadOnlyFile(path: path)
        try self.init(windowOf: whole, window)
    }

    /// A new, independent `ReadOnlyFile` (its own descriptor) reading only `window` of this file; offsets in
    /// `window` are relative to this file (windows nest). Fails with `truncated` when the window reaches past
    /// this file's end.
    public func window(_ window: FileWindow) throws -> ReadOnlyFile {
        try ReadOnlyFile(windowOf: self, window)
    }

    private init(windowOf whole: ReadOnlyFile, _ window: FileWindow) throws {
        let (end, overflow) = window.offset.addingReportingOverflow(window.length)
        if overflow || end > whole.size {
            throw KDCTError(.truncated,
                            "\(window.name) needs bytes \(window.offset)..<\(overflow ? UInt64.max : end) but the file is \(whole.size) bytes long",
                            file: whole.path, field: window.name)
        }
        let (base, baseOverflow) = whole.windowOffset.addingReportingOverflow(window.offset)
        if baseOverflow || base > UInt64(Int64.max) {
            throw KDCTError(.invalidArgument, "window offset \(window.offset) is out of range", file: whole.path)
        }
        var fd: Int32
        repeat { fd = fcntl(whole.descriptor, F_DUPFD_CLOEXEC, Int32(0)) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { throw KDCTError.io("dup", errno: errno, file: whole.path) }
        self.path = whole.path + "/" + window.name
        self.openedPath = whole.openedPath
        self.descriptor = fd
        self.size = window.length
        self.allocatedSize = min(whole.allocatedSize, window.length)
        self.identity = whole.identity
        self.windowOffset = base
        self.isWindow = true
    }

    deinit { close(descriptor) }

    /// Reads exactly `buffer.count` bytes at `offset`; the file ending first is a `truncated` error naming `what`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: @autoclosure () -> String = "data") throws {
        let got = try readAvailable(into: buffer, at: offset)
        if got < buffer.count {
            throw KDCTError(.truncated,
                            "\(what()) at file offset \(offset) needs \(buffer.count) bytes but the file is \(size) bytes long",
                            file: path, field: what())
        }
    }

    /// Reads up to `buffer.count` bytes at `offset`, stopping early only at end of file (or of the window);
    /// returns the count read.
    public func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        var wanted = buffer.count
        if isWindow {
            guard offset < size else { return 0 }
            wanted = Int(min(UInt64(wanted), size - offset))
        }
        let (absolute, overflow) = offset.addingReportingOverflow(windowOffset)
        guard !overflow, absolute <= UInt64(Int64.max) - UInt64(wanted) else { return 0 }
        return try preadFully(descriptor, into: UnsafeMutableRawBufferPointer(start: base, count: wanted),
                              at: absolute, reportedOffset: offset, path: path)
    }

    /// Reads exactly `count` bytes at `offset` into a new array. `count` must already be checked against a limit.
    public func readBytes(count: Int, at offset: UInt64, what: @autoclosure () -> String = "data") throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset, what: what()) }
        return bytes
    }

    /// The most bytes one `posix_fadvise(WILLNEED)` call is given: Linux reads at most the larger of the device's
    /// readahead window and its largest request per call (1.25 MiB and more with its defaults) and silently drops
    /// the rest, so `prefetch` asks in pieces of this size.
    static let prefetchPiece: UInt64 = 1 << 20

    /// Asks the kernel to start reading `[offset, offset + length)` into the page cache without waiting for it
    /// (`posix_fadvise(WILLNEED)`): a read-ahead hint, errors ignored. The range is clipped to the file (to the
    /// window, for a window), so nothing outside it is ever read. The range is one sample for
    /// `SourceCacheMonitor.shared` (how much of it was not cached yet), taken before the hints.
    package func prefetch(offset: UInt64, length: UInt64) {
        let pieces = prefetchPieces(offset: offset, length: length)
        if let first = pieces.first, let last = pieces.last {
            let span = last.offset + last.length - first.offset
            if let uncached = SourceCacheMonitor.uncachedBytes(descriptor: descriptor, offset: first.offset, length: span) {
                SourceCacheMonitor.shared.record(uncached: uncached, of: span, source: identity) {
                    StorageDisks.of(descriptor: descriptor)
                }
            }
        }
        for piece in pieces {
            _ = kdct_advise_willneed(descriptor, off_t(piece.offset), off_t(piece.length))
        }
    }

    /// The absolute ranges of the underlying file `prefetch(offset:length:)` advises: `[offset, offset + length)`
    /// clipped to the file (or window), moved by the window's offset, in pieces of at most `prefetchPiece` bytes.
    func prefetchPieces(offset: UInt64, length: UInt64) -> [(offset: UInt64, length: UInt64)] {
        guard offset < size, length > 0 else { return [] }
        let end = offset + min(length, size - offset)
        var pieces: [(offset: UInt64, length: UInt64)] = []
        var position = offset
        while position < end {
            let count = min(Self.prefetchPiece, end - position)
            pieces.append((windowOffset + position, count))
            position += count
        }
        return pieces
    }

    /// The first offset at or after `offset` holding data (SEEK_DATA), or nil when only a hole follows.
    /// Filesystems without hole support report the whole file as data. For a window, offsets are relative to it
    /// and answers past its end are clipped.
    public func nextData(from offset: UInt64) throws -> UInt64? {
        if offset >= size { return nil }
        let r = kdct_seek_data(descriptor, off_t(windowOffset + offset))
        if r < 0 {
            if errno == ENXIO { return nil }
            if errno == EINVAL || errno == EOPNOTSUPP { return offset }
            throw KDCTError.io("lseek(SEEK_DATA) at \(offset)", errno: errno, file: path)
        }
        let relative = UInt64(r) - min(UInt64(r), windowOffset)
        return relative < size ? max(relative, offset) : nil
    }

    /// The first offset at or after `offset` in a hole (SEEK_HOLE); the file size when data runs to the end.
    /// For a window, offsets are relative to it and the end of the window counts as a hole.
    public func nextHole(from offset: UInt64) throws -> UInt64 {
        if offset >= size { return size }
        let r = kdct_seek_hole(descriptor, off_t(windowOffset + offset))
        if r < 0 {
            if errno == ENXIO { return size }
            if errno == EINVAL || errno == EOPNOTSUPP { return size }
            throw KDCTError.io("lseek(SEEK_HOLE) at \(offset)", errno: errno, file: path)
        }
        let relative = UInt64(r) - min(UInt64(r), windowOffset)
        return min(max(relative, offset), size)
    }
}

/// `pread` until `buffer` is full or the file ends, EINTR retried; returns the count read. Errors name `path` and
/// `reportedOffset` (the offset the caller asked for, which differs from `offset` inside a window).
private func preadFully(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64,
                        reportedOffset: UInt64, path: String) throws -> Int {
    guard let base = buffer.baseAddress else { return 0 }
    var done = 0
    while done < buffer.count {
        let n = pread(descriptor, base + done, buffer.count - done, off_t(offset) + off_t(done))
        if n < 0 {
            if errno == EINTR { continue }
            throw KDCTError.io("pread at offset \(reportedOffset + UInt64(done))", errno: errno, file: path)
        }
        if n == 0 { break }
        done += n
    }
    return done
}

/// A byte range of a file read as a file of its own (a member of a tar archive): see `ReadOnlyFile`.
public struct FileWindow: Sendable, Equatable {
    /// Where the range starts in the file.
    public var offset: UInt64
    /// How many bytes it holds.
    public var length: UInt64
    /// What the range is (a member name), appended to the file's path in messages: `vm.ova/disk1.vmdk`.
    public var name: String

    /// A window of `length` bytes at `offset`, called `name`.
    public init(offset: UInt64, length: UInt64, name: String) {
        self.offset = offset
        self.length = length
        self.name = name
    }
}

/// Device and inode number of a file.
public struct FileIdentity: Hashable, Sendable {
    /// `st_dev`.
    public var device: UInt64
    /// `st_ino`.
    public var inode: UInt64
}

/// A file opened for writing with positional writes: the building block of output targets.
public final class WritableFile: Sendable {
    /// The path the file was created at.
    public let path: String
    /// The owned file descriptor.
    public let descriptor: Int32
    private let closed = Atomic<Bool>(false)

    /// Creates `path` exclusively (`O_CREAT|O_EXCL`), mode 0644; fails with `alreadyExists` when it exists.
    public init(creatingExclusively path: String) throws {
        var fd: Int32
        repeat { fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let code = errno
            if code == EEXIST { throw KDCTError(.alreadyExists, "file exists", file: path, errno: code) }
            if code == ENOENT { throw KDCTError(.notFound, "directory does not exist", file: path, errno: code) }
            throw KDCTError.io("create", errno: code, file: path)
        }
        self.path = path
        self.descriptor = fd
    }

    /// Opens an existing file or block device for reading and writing (never used on inputs). `exclusive` adds
    /// `O_EXCL`, which for a block device fails with `EBUSY` while it is mounted or held by another user (a
    /// device-mapper table, a RAID set), as `mkfs` does; it is ignored for regular files.
    public init(openingExisting path: String, exclusive: Bool = false) throws {
        var fd: Int32
        let flags = O_RDWR | O_CLOEXEC | (exclusive ? O_EXCL : 0)
        repeat { fd = open(path, flags) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw KDCTError(.notFound, "no such file", file: path, errno: code) }
            if code == EBUSY {
                throw KDCTError(.io, "the device is in use (mounted, or held by another program or device-mapper)",
                                file: path, errno: code)
            }
            throw KDCTError.io("open for writing", errno: code, file: path)
        }
        self.path = path
        self.descriptor = fd
    }

    /// Creates an unnamed file in `directory` (`O_TMPFILE`), to be named later with `link(as:)`, so that it
    /// can be locked before anyone can see it. Returns nil where the file system or kernel has no `O_TMPFILE`.
    public static func unnamed(in directory: String, mode: mode_t = 0o644) throws -> WritableFile? {
        var fd: Int32
        repeat { fd = kdct_open_unnamed(directory, Int32(mode)) } while fd < 0 && errno == EINTR
        guard fd >= 0 else {
            let code = errno
            if code == EOPNOTSUPP || code == EISDIR || code == EINVAL || code == ENOSYS { return nil }
            if code == ENOENT { throw KDCTError(.notFound, "folder does not exist", file: directory, errno: code) }
            throw KDCTError.io("create a file in", errno: code, file: directory)
        }
        return WritableFile(descriptor: fd, path: directory)
    }

    private init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    /// Gives an unnamed file (from `unnamed(in:)`) the name `name`; false when that name exists already.
    public func link(as name: String) throws -> Bool {
        if kdct_link_unnamed(descriptor, name) == 0 { return true }
        let code = errno
        if code == EEXIST { return false }
        throw KDCTError.io("link", errno: code, file: name)
    }

    /// Takes an exclusive advisory lock (`flock(LOCK_EX|LOCK_NB)`) held until the descriptor is closed;
    /// false when another open file holds it.
    public func tryLock() throws -> Bool {
        var r: Int32
        repeat { r = flock(descriptor, LOCK_EX | LOCK_NB) } while r < 0 && errno == EINTR
        if r == 0 { return true }
        if errno == EWOULDBLOCK { return false }
        throw KDCTError.io("flock", errno: errno, file: path)
    }

    /// The size of a block device in bytes (`BLKGETSIZE64`).
    public func blockDeviceSize() throws -> UInt64 {
        var size: UInt64 = 0
        if kdct_block_device_size(descriptor, &size) != 0 {
            throw KDCTError.io("ioctl(BLKGETSIZE64)", errno: errno, file: path)
        }
        return size
    }

    /// The logical sector size of a block device (`BLKSSZGET`), the unit of `zeroOut` and `discard`.
    public func blockSectorSize() throws -> Int {
        var size: Int32 = 0
        if kdct_block_sector_size(descriptor, &size) != 0 || size <= 0 {
            throw KDCTError.io("ioctl(BLKSSZGET)", errno: errno, file: path)
        }
        return Int(size)
    }

    /// Asks a block device to make `[offset, offset+length)` read as zeros (`BLKZEROOUT`: a write-zeroes command
    /// where the device has one, else the kernel writes zero pages). Offsets are multiples of the sector size.
    public func zeroOut(offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        var r: Int32
        repeat { r = kdct_block_zero_out(descriptor, offset, length) } while r < 0 && errno == EINTR
        if r < 0 { throw KDCTError.io("ioctl(BLKZEROOUT) at \(offset)", errno: errno, file: path) }
    }

    /// Deallocates `[offset, offset+length)` so it reads as zeros (`fallocate(PUNCH_HOLE|KEEP_SIZE)`; on a block
    /// device a write-zeroes command that may unmap and never falls back to writing). Returns false where the
    /// file system or device cannot do it (`EOPNOTSUPP`, `EINVAL`, `ENODEV`, `ENOSYS`).
    public func punchHole(offset: UInt64, length: UInt64) throws -> Bool {
        guard length > 0 else { return true }
        var r: Int32
        repeat { r = kdct_punch_hole(descriptor, off_t(offset), off_t(length)) } while r < 0 && errno == EINTR
        if r == 0 { return true }
        let code = errno
        if code == EOPNOTSUPP || code == EINVAL || code == ENODEV || code == ENOSYS { return false }
        throw KDCTError.io("fallocate(PUNCH_HOLE) at \(offset)", errno: code, file: path)
    }

    /// Copies `length` bytes at `sourceOffset` of `source` to `offset` of this file in the kernel
    /// (`copy_file_range`: a reflink where the file system shares extents, a server-side copy on NFS 4.2).
    /// Returns the bytes copied, which is less than `length` only when the kernel cannot offload the rest
    /// (`EXDEV`, `EOPNOTSUPP`, `EINVAL`, `ENOSYS`): the caller copies that part itself.
    public func copyRange(from source: ReadOnlyFile, at sourceOffset: UInt64, to offset: UInt64,
                          length: UInt64) throws -> UInt64 {
        var done: UInt64 = 0
        while done < length {
            let chunk = Int(min(length - done, 1 << 30))
            let n = kdct_copy_file_range(source.descriptor, off_t(source.windowOffset + sourceOffset + done),
                                         descriptor, off_t(offset + done), chunk)
            if n < 0 {
                let code = errno
                if code == EINTR { continue }
                if code == EXDEV || code == EOPNOTSUPP || code == EINVAL || code == ENOSYS { return done }
                throw KDCTError.io("copy_file_range to offset \(offset + done)", errno: code, file: path)
            }
            if n == 0 { return done }
            done += UInt64(n)
        }
        return done
    }

    /// Gives this file the permission bits, owner and group of `status` (a file it replaces); best effort:
    /// only root may give a file away.
    public func copyOwnership(of status: FileStatus) {
        _ = fchown(descriptor, status.owner, status.group)
        _ = fchmod(descriptor, status.permissions)
    }

    /// The current length (`fstat`).
    public func length() throws -> UInt64 {
        var st = stat()
        guard fstat(descriptor, &st) == 0 else { throw KDCTError.io("fstat", errno: errno, file: path) }
        return UInt64(max(0, st.st_size))
    }

    /// Reads up to `buffer.count` bytes at `offset` (`pread`, EINTR retried, short reads continued); returns
    /// the count read, less only at the end of the file.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        try preadFully(descriptor, into: buffer, at: offset, reportedOffset: offset, path: path)
    }

    /// The first offset at or after `offset` in a hole (`SEEK_HOLE`); `end` when there is none before it or
    /// the file system cannot tell.
    public func nextHole(from offset: UInt64, end: UInt64) -> UInt64 {
        let r = kdct_seek_hole(descriptor, off_t(offset))
        return r < 0 ? end : min(max(UInt64(r), offset), end)
    }

    /// The first offset at or after `offset` holding data (`SEEK_DATA`); nil when only a hole follows. A file
    /// system that cannot tell answers `offset`.
    public func nextData(from offset: UInt64) -> UInt64? {
        let r = kdct_seek_data(descriptor, off_t(offset))
        if r < 0 { return errno == ENXIO ? nil : offset }
        return max(UInt64(r), offset)
    }

    deinit { if !closed.load(ordering: .acquiring) { Glibc.close(descriptor) } }

    /// Writes all of `buffer` at `offset`, retrying EINTR and continuing short writes.
    public func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard let base = buffer.baseAddress else { return }
        var done = 0
        while done < buffer.count {
            let n = pwrite(descriptor, base + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw KDCTError.io("pwrite at offset \(offset + UInt64(done))", errno: errno, file: path)
            }
            done += n
        }
    }

    /// Sets the file length (`ftruncate`).
    public func truncate(to size: UInt64) throws {
        var r: Int32
        repeat { r = ftruncate(descriptor, off_t(size)) } while r < 0 && errno == EINTR
        if r < 0 { throw KDCTError.io("ftruncate to \(size)", errno: errno, file: path) }
    }

    /// Allocates blocks for `[offset, offset+length)` without writing (`fallocate` mode 0).
    public func allocate(offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        var r: Int32
        repeat { r = kdct_fallocate(descriptor, off_t(offset), off_t(length)) } while r < 0 && errno == EINTR
        if r < 0 { throw KDCTError.io("fallocate", errno: errno, file: path) }
    }

    /// Asks the kernel to start writing back `[offset, offset+length)` now; errors are ignored (a hint only).
    public func startWriteback(offset: UInt64, length: UInt64) {
        _ = kdct_start_writeback(descriptor, off_t(offset), off_t(length))
    }

    /// Flushes data and metadata to stable storage (`fsync`).
    public func sync() throws {
        var r: Int32
        repeat { r = fsync(descriptor) } while r < 0 && errno == EINTR
        if r < 0 { throw KDCTError.io("fsync", errno: errno, file: path) }
    }

    /// Closes the descriptor, reporting a deferred write error.
    public func close() throws {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if Glibc.close(descriptor) != 0 && errno != EINTR {
            throw KDCTError.io("close", errno: errno, file: path)
        }
    }
}

/// Path helpers over the C library, so the core needs no Foundation on its I/O paths.
public enum FilePaths {
    /// The directory part of `path` (`.` when it has none).
    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// The last component of `path`.
    public static func lastComponent(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// `directory/name`, or `name` when it is absolute.
    public static func join(_ directory: String, _ name: String) -> String {
        if name.hasPrefix("/") { return name }
        if directory.hasSuffix("/") { return directory + name }
        return directory + "/" + name
    }

    /// The canonical absolute path (symlinks resolved), or nil when it does not exist.
    public static func canonical(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// True when `path` exists (following symlinks).
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// True when `path` is a regular file (following symlinks).
    public static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// What is at `path` without following a final symlink (`lstat`), or nil when nothing is.
    public static func status(_ path: String, followingLinks: Bool = false) -> FileStatus? {
        var st = stat()
        guard (followingLinks ? stat(path, &st) : lstat(path, &st)) == 0 else { return nil }
        return FileStatus(st)
    }

    /// The text of the symlink at `path` (`readlink`), or nil when it is not one.
    public static func readLink(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Bytes available to an unprivileged writer on the file system holding `path` (`statvfs`:
    /// `f_bavail * f_frsize`), or nil when it cannot be asked.
    public static func availableSpace(at path: String) -> UInt64? {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return nil }
        return UInt64(info.f_bavail) * UInt64(info.f_frsize)
    }

    /// The names in `directory` (`opendir`/`readdir`), at most `limit` of them; empty when it cannot be read.
    public static func entries(of directory: String, limit: Int = 100_000) -> [String] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [String] = []
        while names.count < limit, let entry = readdir(handle) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Removes the regular file `path` unless an open file holds an advisory lock (`flock`) on it: the lock is
    /// taken first and held while the name is removed. True when it was removed.
    public static func removeIfUnlocked(_ path: String) -> Bool {
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) } while fd < 0 && errno == EINTR
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG, flock(fd, LOCK_EX | LOCK_NB) == 0 else { return false }
        return unlink(path) == 0
    }

    /// Removes `path`, ignoring a missing file.
    public static func remove(_ path: String) {
        _ = unlink(path)
    }

    /// Renames `from` to `to` atomically (`rename(2)`), replacing `to`.
    public static func rename(_ from: String, to: String) throws {
        if Glibc.rename(from, to) != 0 { throw KDCTError.io("rename to \(to)", errno: errno, file: from) }
    }

    /// Fsyncs the directory containing `path`, so a rename in it is durable.
    public static func syncDirectory(of path: String) {
        let fd = open(directory(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        Glibc.close(fd)
    }

    /// The lower-cased extension of the last path component, or "".
    public static func fileExtension(of path: String) -> String {
        let name = lastComponent(of: path)
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "" }
        return String(name[name.index(after: dot)...]).lowercased()
    }
}

/// What `lstat`/`stat` says about a path: its type, size and device numbers.
public struct FileStatus: Sendable, Equatable {
    /// The kinds of file a destination may be.
    public enum Kind: Sendable, Equatable {
        /// A regular file (`S_IFREG`).
        case regularFile
        /// A directory (`S_IFDIR`).
        case directory
        /// A block device node (`S_IFBLK`): an LVM volume, a LUN, a loop or nbd device.
        case blockDevice
        /// A character device node (`S_IFCHR`).
        case characterDevice
        /// A symbolic link itself (only `lstat` reports one).
        case symbolicLink
        /// A named pipe (`S_IFIFO`).
        case fifo
        /// A Unix-domain socket (`S_IFSOCK`).
        case socket
        /// Any other `st_mode` type.
        case other
    }

    /// The file's kind.
    public var kind: Kind
    /// `st_size` (0 for a block device: ask the device).
    public var size: UInt64
    /// The file system and inode.
    public var identity: FileIdentity
    /// `st_rdev`: which device a device node names.
    public var deviceNumber: UInt64
    /// The permission bits (`st_mode & 07777`).
    public var permissions: mode_t
    /// The owning user (`st_uid`).
    public var owner: uid_t
    /// The owning group (`st_gid`).
    public var group: gid_t

    init(_ st: stat) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: kind = .regularFile
        case S_IFDIR: kind = .directory
        case S_IFBLK: kind = .blockDevice
        case S_IFCHR: kind = .characterDevice
        case S_IFLNK: kind = .symbolicLink
        case S_IFIFO: kind = .fifo
        case S_IFSOCK: kind = .socket
        default: kind = .other
        }
        size = UInt64(max(0, st.st_size))
        identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        deviceNumber = UInt64(st.st_rdev)
        permissions = st.st_mode & 0o7777
        owner = st.st_uid
        group = st.st_gid
    }
}

/// Claims the image open on `descriptor` before it is changed in place or replaced (`resize`, a leak repair):
/// refused with `io` (EBUSY) when another process holds a lock on it, as qemu does on the images a running VM uses;
/// otherwise shared locks on the bytes qemu's lock protocol checks keep a qemu that starts meanwhile away until the
/// file is closed.
func claimImage(descriptor: Int32, path: String) throws {
    switch kdct_claim_image(descriptor) {
    case 0:
        return
    case 1:
        throw KDCTError(.io, "the image is in use: another process (a running VM?) holds a lock on it",
                        file: path, errno: EBUSY)
    default:
        throw KDCTError.io("fcntl(F_OFD_SETLK)", errno: errno, file: path)
    }
}
