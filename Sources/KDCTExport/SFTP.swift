import CLibSSH2
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// What `stat` says about a remote path.
public struct RemoteFileStatus: Sendable, Equatable {
    /// Size in bytes, when the server reported it.
    public var size: UInt64?
    /// Permission and type bits (`st_mode`), when reported.
    public var mode: UInt32?

    /// True for a directory.
    public var isDirectory: Bool { mode.map { $0 & UInt32(LIBSSH2_SFTP_S_IFMT) == UInt32(LIBSSH2_SFTP_S_IFDIR) } ?? false }
    /// True for a regular file (or when the server did not say).
    public var isRegularFile: Bool { mode.map { $0 & UInt32(LIBSSH2_SFTP_S_IFMT) == UInt32(LIBSSH2_SFTP_S_IFREG) } ?? true }

    init(_ attributes: LIBSSH2_SFTP_ATTRIBUTES) {
        size = attributes.flags & kdct_ssh2_attr_size != 0 ? attributes.filesize : nil
        mode = attributes.flags & kdct_ssh2_attr_permissions != 0 ? UInt32(truncatingIfNeeded: attributes.permissions) : nil
    }
}

/// The SFTP subsystem of a connection (protocol version 3, as OpenSSH speaks it).
public final class SFTPSession {
    /// The connection it runs on.
    public let connection: SSHConnection
    let sftp: OpaquePointer

    init(connection: SSHConnection) throws {
        guard let sftp = libssh2_sftp_init(connection.session) else {
            let code = Int(libssh2_session_last_errno(connection.session))
            var failure = connection.error("starting the SFTP subsystem", code: code)
            failure.message += "; if the host offers no SFTP server, use --protocol scp"
            throw failure
        }
        self.connection = connection
        self.sftp = sftp
    }

    deinit { libssh2_sftp_shutdown(sftp) }

    /// The SFTP status code of the last failure (`SSH_FX_*`).
    var lastStatus: UInt { libssh2_sftp_last_error(sftp) }

    /// An error for a failed SFTP call on `path`, classified by the server's status code.
    func error(_ operation: String, path: String, code: Int) -> KDCTError {
        guard code == Int(LIBSSH2_ERROR_SFTP_PROTOCOL) else { return connection.error(operation, code: code, file: remoteName(path)) }
        let status = lastStatus
        let kind: KDCTError.Code
        switch status {
        case LIBSSH2_FX_NO_SUCH_FILE, LIBSSH2_FX_NO_SUCH_PATH: kind = .notFound
        case LIBSSH2_FX_FILE_ALREADY_EXISTS: kind = .alreadyExists
        case LIBSSH2_FX_OP_UNSUPPORTED: kind = .unsupported
        default: kind = .io
        }
        return KDCTError(kind, "\(operation) failed: \(Self.statusName(status))", file: remoteName(path))
    }

    /// `user@host:path`, for messages.
    func remoteName(_ path: String) -> String { "\(connection.endpoint.displayName):\(path)" }

    static func statusName(_ status: UInt) -> String {
        let names: [UInt: String] = [
            1: "end of file", 2: "no such file", 3: "permission denied", 4: "failure (the server gives no reason)",
            5: "bad message", 6: "no connection", 7: "connection lost", 8: "operation not supported by the server",
            9: "invalid handle", 10: "no such path", 11: "file already exists", 12: "write protected", 13: "no media",
            14: "no space left on the file system", 15: "quota exceeded",
        ]
        return names[status] ?? "SFTP status \(status)"
    }

    /// `stat` (following symlinks) or, with `followLinks` false, `lstat`; nil when the path does not exist.
    public func status(of path: String, followLinks: Bool = true) throws -> RemoteFileStatus? {
        var attributes = LIBSSH2_SFTP_ATTRIBUTES()
        let rc = followLinks ? kdct_ssh2_sftp_stat(sftp, path, &attributes) : kdct_ssh2_sftp_lstat(sftp, path, &attributes)
        if rc == 0 { return RemoteFileStatus(attributes) }
        if rc == LIBSSH2_ERROR_SFTP_PROTOCOL && (lastStatus == LIBSSH2_FX_NO_SUCH_FILE || lastStatus == LIBSSH2_FX_NO_SUCH_PATH) {
            return nil
        }
        throw error("stat", path: path, code: Int(rc))
    }

    /// Removes a file.
    public func remove(_ path: String) throws {
        let rc = kdct_ssh2_sftp_unlink(sftp, path)
        if rc != 0 { throw error("remove", path: path, code: Int(rc)) }
    }

    /// Renames `from` to `to`. With OpenSSH's server this never replaces an existing `to` (it links, then unlinks).
    public func rename(_ from: String, to: String) throws {
        let rc = kdct_ssh2_sftp_rename(sftp, from, to)
        if rc != 0 { throw error("rename to \(to)", path: from, code: Int(rc)) }
    }

    /// Opens `path` for writing: `exclusive` creates it and fails when it exists; otherwise it must exist.
    func openForWriting(_ path: String, exclusive: Bool, mode: Int32, window: Int) throws -> SFTPFile {
        let flags = exclusive ? (kdct_ssh2_fxf_write | kdct_ssh2_fxf_creat | kdct_ssh2_fxf_excl) : kdct_ssh2_fxf_write
        guard let handle = kdct_ssh2_sftp_open(sftp, path, flags, Int(mode)) else {
            let code = Int(libssh2_session_last_errno(connection.session))
            if exclusive, code == Int(LIBSSH2_ERROR_SFTP_PROTOCOL), (try? status(of: path, followLinks: false)) != nil {
                throw KDCTError(.alreadyExists, "exists already", file: remoteName(path))
            }
            var failure = error(exclusive ? "create" : "open for writing", path: path, code: code)
            if failure.code == .notFound { failure.message += " (does the directory \(FilePaths.directory(of: path)) exist on the host?)" }
            throw failure
        }
        return SFTPFile(session: self, handle: handle, path: path, window: window)
    }

    /// Opens `path` for reading.
    func openForReading(_ path: String) throws -> SFTPFile {
        guard let handle = kdct_ssh2_sftp_open(sftp, path, kdct_ssh2_fxf_read, 0) else {
            throw error("open for reading", path: path, code: Int(libssh2_session_last_errno(connection.session)))
        }
        return SFTPFile(session: self, handle: handle, path: path, window: 0)
    }
}

/// An open remote file. Writes are pipelined: bytes are staged and handed to `libssh2_sftp_write`, which sends
/// them as 30000-byte SFTP WRITE requests and returns as acknowledgements arrive, so up to `window` bytes are in
/// flight at once (OpenSSH's sftp keeps 64 x 32 KiB). A write that does not continue the previous one waits for
/// every outstanding request first (libssh2 discards pending requests when the offset moves).
final class SFTPFile {
    let session: SFTPSession
    let path: String
    private let handle: OpaquePointer
    private let window: Int
    private var staging: UnsafeMutableRawBufferPointer?
    /// Staged bytes not yet acknowledged: `staging[unacknowledged..<staged]`.
    private var unacknowledged = 0
    private var staged = 0
    /// File offset of `staging[unacknowledged]`.
    private var acknowledgedOffset: UInt64 = 0
    private var isOpen = true

    init(session: SFTPSession, handle: OpaquePointer, path: String, window: Int) {
        self.session = session
        self.handle = handle
        self.path = path
        self.window = max(window, 1 << 20)
    }

    deinit {
        if isOpen { _ = kdct_ssh2_sftp_close(handle) }
        staging?.deallocate()
    }

    /// The offset right after the last staged byte: a write there continues the pipeline.
    private var streamEnd: UInt64 { acknowledgedOffset + UInt64(staged - unacknowledged) }

    /// Writes `bytes` at `offset`. Returns once they are staged (they reach the server later; `flush` waits).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard !bytes.isEmpty else { return }
        if offset != streamEnd {
            try flush()
            libssh2_sftp_seek64(handle, offset)
            acknowledgedOffset = offset
        }
        let buffer = stagingBuffer()
        var done = 0
        while done < bytes.count {
            if staged == buffer.count {
                if unacknowledged > 0 {
                    // Move the unacknowledged tail to the front; libssh2 has already copied what it sent.
                    let pending = staged - unacknowledged
                    memmove(buffer.baseAddress!, buffer.baseAddress! + unacknowledged, pending)
                    unacknowledged = 0
                    staged = pending
                } else {
                    try pump()
                    continue
                }
            }
            let count = min(buffer.count - staged, bytes.count - done)
            (buffer.baseAddress! + staged).copyMemory(from: bytes.baseAddress! + done, byteCount: count)
            staged += count
            done += count
            while staged - unacknowledged >= window { try pump() }
        }
    }

    private func stagingBuffer() -> UnsafeMutableRawBufferPointer {
        if let staging { return staging }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: window * 4, alignment: 4096)
        staging = buffer
        return buffer
    }

    /// Lets libssh2 send what is staged and collect at least one acknowledgement.
    private func pump() throws {
        guard let buffer = staging, staged > unacknowledged else { return }
        let pending = staged - unacknowledged
        let rc = libssh2_sftp_write(handle, (buffer.baseAddress! + unacknowledged).assumingMemoryBound(to: CChar.self), pending)
        if rc < 0 {
            throw session.error("write at offset \(acknowledgedOffset)", path: path, code: rc)
        }
        unacknowledged += rc
        acknowledgedOffset += UInt64(rc)
        if unacknowledged == staged {
            unacknowledged = 0
            staged = 0
        }
    }

    /// Waits until the server has acknowledged every staged byte.
    func flush() throws {
        while staged > unacknowledged { try pump() }
    }

    /// The file's size on the server (`fstat`), after `flush`.
    func size() throws -> UInt64 {
        try flush()
        var attributes = LIBSSH2_SFTP_ATTRIBUTES()
        let rc = kdct_ssh2_sftp_fstat(handle, &attributes)
        guard rc == 0 else { throw session.error("fstat", path: path, code: Int(rc)) }
        guard let size = RemoteFileStatus(attributes).size else {
            throw KDCTError(.unsupported, "the server did not report the file size", file: session.remoteName(path))
        }
        return size
    }

    /// Sets the file's size (`fsetstat`; OpenSSH's server truncates or extends with a hole), after `flush`.
    func setSize(_ size: UInt64) throws {
        try flush()
        var attributes = LIBSSH2_SFTP_ATTRIBUTES()
        attributes.flags = kdct_ssh2_attr_size
        attributes.filesize = size
        let rc = kdct_ssh2_sftp_fsetstat(handle, &attributes)
        guard rc == 0 else { throw session.error("setting the size to \(size)", path: path, code: Int(rc)) }
    }

    /// Flushes the file to stable storage on the host (`fsync@openssh.com`); false when the server does not
    /// offer that extension.
    func sync() throws -> Bool {
        try flush()
        let rc = libssh2_sftp_fsync(handle)
        if rc == 0 { return true }
        if rc == LIBSSH2_ERROR_SFTP_PROTOCOL && session.lastStatus == LIBSSH2_FX_OP_UNSUPPORTED { return false }
        throw session.error("fsync", path: path, code: Int(rc))
    }

    /// Reads sequentially from `offset` into `buffer` (libssh2 reads ahead); returns the count, 0 at end of file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Int {
        if libssh2_sftp_tell64(handle) != offset { libssh2_sftp_seek64(handle, offset) }
        var done = 0
        while done < buffer.count {
            let rc = libssh2_sftp_read(handle, (buffer.baseAddress! + done).assumingMemoryBound(to: CChar.self), buffer.count - done)
            if rc < 0 { throw session.error("read at offset \(offset + UInt64(done))", path: path, code: rc) }
            if rc == 0 { break }
            done += rc
        }
        return done
    }

    /// Flushes pending writes and closes the handle.
    func close() throws {
        guard isOpen else { return }
        defer { isOpen = false }
        try flush()
        let rc = kdct_ssh2_sftp_close(handle)
        if rc != 0 { throw session.error("close", path: path, code: Int(rc)) }
    }

    /// Closes the handle without waiting for anything (after a failure).
    func closeDiscarding() {
        guard isOpen else { return }
        isOpen = false
        _ = kdct_ssh2_sftp_close(handle)
    }
}
