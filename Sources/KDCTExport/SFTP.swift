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
    /// Modification time (seconds since 1970), when reported.
    public var modificationTime: UInt32?

    /// Nothing known.
    public init() {}

    private var type: UInt32? { mode.map { $0 & 0o170000 } }
    /// True for a directory.
    public var isDirectory: Bool { type == 0o040000 }
    /// True for a regular file (or when the server did not say).
    public var isRegularFile: Bool { type.map { $0 == 0o100000 } ?? true }
    /// True for a symbolic link (only `lstat` reports one).
    public var isSymbolicLink: Bool { type == 0o120000 }
}

/// An SFTP session (protocol version 3, as OpenSSH speaks it) on a `sftp` subsystem channel, implemented here
/// rather than by libssh2 1.10's SFTP layer, which cannot send OpenSSH's `posix-rename@openssh.com`, copies every
/// write twice in 30000-byte pieces, and drops its whole write pipeline whenever the offset jumps (at every hole).
///
/// Requests are answered in turn (`request`), except writes, which an `SFTPFile` keeps in flight; a session
/// runs plain requests only while none of its files has writes outstanding.
public final class SFTPSession {
    /// The connection it runs on.
    public let connection: SSHConnection
    let channel: OpaquePointer
    /// The extensions the server announced (`posix-rename@openssh.com`, `fsync@openssh.com`, ...).
    private(set) var extensions: Set<String> = []
    /// The most data one write request carries (the server's `limits@openssh.com`, else 32 KiB).
    private(set) var maximumWrite = 32768
    /// The most data one read request asks for.
    private(set) var maximumRead = 32768
    private var nextRequest: UInt32 = 1
    /// Requests whose replies nobody waits for any more (writes of a file given up after a failure): skipped
    /// when they arrive.
    var abandonedRequests: Set<UInt32> = []
    private var inbox: [UInt8] = []
    private var inboxStart = 0
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)

    init(connection: SSHConnection) throws {
        self.connection = connection
        let driver = connection.driver
        let session = connection.session
        guard let channel = try driver.callPointer("opening the SFTP channel", .reply, { kdct_ssh2_channel_open_session(session) }) else {
            throw connection.error("opening the SFTP channel", code: Int(libssh2_session_last_errno(session)))
        }
        self.channel = channel
        // From here on the object is whole: a failure ends in deinit, which frees the channel.
        var extensions: Set<String> = []
        let started = try driver.call("starting the SFTP subsystem") { kdct_ssh2_channel_subsystem(channel, "sftp") }
        guard started == 0 else {
            var failure = connection.error("starting the SFTP subsystem", code: Int(started))
            failure.message += "; if the host offers no SFTP server, use --protocol scp"
            throw failure
        }
        var hello = SFTPPacketWriter(type: SFTPProtocol.initRequest, id: nil)
        hello.u32(3)
        try send(hello.finished, what: "starting the SFTP subsystem")
        let (type, body) = try receive("starting the SFTP subsystem")
        guard type == SFTPProtocol.version else {
            throw KDCTError(.io, "the SFTP server answered its greeting with packet type \(type)", file: connection.endpoint.displayName)
        }
        var reader = SFTPPacketReader(body, host: connection.endpoint.displayName)
        _ = try reader.u32("version")
        while !reader.isAtEnd {
            let name = try reader.string("extension name")
            _ = try reader.string("extension data")
            extensions.insert(String(decoding: name, as: UTF8.self))
        }
        self.extensions = extensions
        if extensions.contains("limits@openssh.com") { try readLimits() }
    }

    deinit {
        connection.freeChannel(channel)
        scratch.deallocate()
    }

    /// `user@host:path`, for messages.
    func remoteName(_ path: String) -> String { "\(connection.endpoint.displayName):\(path)" }

    /// True when the server renames over an existing file atomically (`posix-rename@openssh.com`, rename(2)).
    public var supportsAtomicReplace: Bool { extensions.contains("posix-rename@openssh.com") }

    // MARK: Wire

    func newRequestID() -> UInt32 {
        defer { nextRequest &+= 1 }
        return nextRequest
    }

    /// Sends bytes on the channel (libssh2 takes at most one SSH packet, 32700 bytes, per call).
    func send(_ bytes: UnsafeRawBufferPointer, what: @autoclosure () -> String) throws {
        let driver = connection.driver
        var done = 0
        var lastProgress = MonotonicClock.now
        while done < bytes.count {
            let n = try driver.call(what()) {
                libssh2_channel_write_ex(channel, 0, (bytes.baseAddress! + done).assumingMemoryBound(to: CChar.self), bytes.count - done)
            }
            if n < 0 { throw connection.error(what(), code: n) }
            if n == 0 {
                // The server's window is full and libssh2 did not say EAGAIN: wait for its adjustment.
                try driver.waitForSocket(what, .reply, lastProgress: &lastProgress)
            } else {
                lastProgress = MonotonicClock.now
            }
            done += n
        }
    }

    func send(_ bytes: [UInt8], what: @autoclosure () -> String) throws {
        try bytes.withUnsafeBytes { try send($0, what: what()) }
    }

    /// The next packet from the server: its type and its body after the type byte. With `blocking` false,
    /// returns nil at once when no complete packet has arrived.
    func receive(_ what: @autoclosure () -> String, wait: SessionDriver.Wait = .reply,
                 blocking: Bool = true) throws -> (UInt8, [UInt8])? {
        let driver = connection.driver
        var lastProgress = MonotonicClock.now
        while true {
            if let packet = try takePacket() { return packet }
            try driver.requireUsable(what())
            let n = libssh2_channel_read_ex(channel, 0, scratch.baseAddress?.assumingMemoryBound(to: CChar.self), scratch.count)
            if n > 0 {
                if inboxStart > 0 && inboxStart >= inbox.count / 2 {
                    inbox.removeFirst(inboxStart)
                    inboxStart = 0
                }
                inbox.append(contentsOf: UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
                lastProgress = MonotonicClock.now
                continue
            }
            if n < 0 && n != LIBSSH2_ERROR_EAGAIN {
                if SSHLibrary.isConnectionLost(n) { driver.abandon() }
                throw connection.error(what(), code: n)
            }
            if n == 0 && libssh2_channel_eof(channel) != 0 {
                throw KDCTError(.io, "\(what()): the SFTP server closed the session", file: connection.endpoint.displayName)
            }
            guard blocking else { return nil }
            try driver.waitForSocket(what, wait, lastProgress: &lastProgress)
        }
    }

    func receive(_ what: @autoclosure () -> String, wait: SessionDriver.Wait = .reply) throws -> (UInt8, [UInt8]) {
        guard let packet = try receive(what(), wait: wait, blocking: true) else {
            throw KDCTError(.io, "\(what()): no reply", file: connection.endpoint.displayName)
        }
        return packet
    }

    /// A complete packet from the inbox, if there is one.
    private func takePacket() throws -> (UInt8, [UInt8])? {
        let available = inbox.count - inboxStart
        guard available >= 5 else { return nil }
        let length = Int(UInt32(inbox[inboxStart]) << 24 | UInt32(inbox[inboxStart + 1]) << 16
                         | UInt32(inbox[inboxStart + 2]) << 8 | UInt32(inbox[inboxStart + 3]))
        guard length >= 1, length <= SFTPProtocol.maximumPacket else {
            connection.abandon()
            throw KDCTError(.io, "the SFTP server sent a packet of \(length) bytes; the session is out of step",
                            file: connection.endpoint.displayName)
        }
        guard available >= 4 + length else { return nil }
        let type = inbox[inboxStart + 4]
        let body = Array(inbox[(inboxStart + 5)..<(inboxStart + 4 + length)])
        inboxStart += 4 + length
        if inboxStart == inbox.count {
            inbox.removeAll(keepingCapacity: true)
            inboxStart = 0
        }
        return (type, body)
    }

    /// A reply to one request.
    enum Reply {
        case status(UInt32, String)
        case handle([UInt8])
        case data(ArraySlice<UInt8>)
        case name([String])
        case attributes(RemoteFileStatus)
        case extended(SFTPPacketReader)
    }

    /// Parses a reply packet: its request id and content.
    func parse(type: UInt8, body: [UInt8]) throws -> (UInt32, Reply) {
        var reader = SFTPPacketReader(body, host: connection.endpoint.displayName)
        let id = try reader.u32("request id")
        switch type {
        case SFTPProtocol.status:
            let code = try reader.u32("status code")
            let message = reader.isAtEnd ? "" : String(decoding: try reader.string("status message"), as: UTF8.self)
            return (id, .status(code, message))
        case SFTPProtocol.handle:
            return (id, .handle(Array(try reader.string("handle"))))
        case SFTPProtocol.data:
            return (id, .data(try reader.string("data")))
        case SFTPProtocol.name:
            let count = try reader.u32("name count")
            var names: [String] = []
            for _ in 0..<min(count, 1) {
                names.append(String(decoding: try reader.string("file name"), as: UTF8.self))
                _ = try reader.string("long name")
                _ = try reader.attributes()
            }
            return (id, .name(names))
        case SFTPProtocol.attributes:
            return (id, .attributes(try reader.attributes()))
        case SFTPProtocol.extendedReply:
            return (id, .extended(reader))
        default:
            throw KDCTError(.io, "the SFTP server sent an unexpected packet (type \(type))", file: connection.endpoint.displayName)
        }
    }

    /// Sends `packet` (built with `id`) and returns its reply. No writes may be outstanding on this session.
    func request(_ packet: SFTPPacketWriter, id: UInt32, what: @autoclosure () -> String,
                 wait: SessionDriver.Wait = .reply) throws -> Reply {
        try send(packet.finished, what: what())
        var (type, body) = try receive(what(), wait: wait)
        var (replyID, reply) = try parse(type: type, body: body)
        while replyID != id && abandonedRequests.remove(replyID) != nil {
            (type, body) = try receive(what(), wait: wait)
            (replyID, reply) = try parse(type: type, body: body)
        }
        guard replyID == id else {
            connection.abandon()
            throw KDCTError(.io, "\(what()): the SFTP server answered request \(replyID) instead of \(id)",
                            file: connection.endpoint.displayName)
        }
        return reply
    }

    /// The error for a status reply to an operation on `path`.
    func failure(_ operation: String, path: String, status: UInt32, message: String) -> KDCTError {
        let kind: KDCTError.Code
        switch status {
        case SFTPProtocol.noSuchFile, SFTPProtocol.noSuchPath: kind = .notFound
        case SFTPProtocol.fileAlreadyExists: kind = .alreadyExists
        case SFTPProtocol.unsupported: kind = .unsupported
        default: kind = .io
        }
        let detail = message.isEmpty || message.lowercased() == SFTPProtocol.statusName(status) ? "" : " (\(message))"
        return KDCTError(kind, "\(operation) failed: \(SFTPProtocol.statusName(status))\(detail)", file: remoteName(path))
    }

    /// Expects an OK status.
    func expectOK(_ reply: Reply, _ operation: String, path: String) throws {
        switch reply {
        case .status(SFTPProtocol.ok, _): return
        case let .status(code, message): throw failure(operation, path: path, status: code, message: message)
        default: throw KDCTError(.io, "\(operation): the SFTP server sent an unexpected reply", file: remoteName(path))
        }
    }

    private func readLimits() throws {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.extended, id: id)
        packet.string("limits@openssh.com")
        guard case var .extended(reader) = try request(packet, id: id, what: "asking the SFTP server's limits") else { return }
        let maximumPacket = try reader.u64("max-packet-length")
        let maximumRead = try reader.u64("max-read-length")
        let maximumWrite = try reader.u64("max-write-length")
        // Each limit is 0 when the server has none; 256 KiB is OpenSSH's packet size (sftp-common.h).
        let packetRoom = maximumPacket == 0 ? 256 << 10 : Int(min(maximumPacket, 256 << 10)) - 1024
        if maximumWrite > 0 { self.maximumWrite = max(4096, min(Int(min(maximumWrite, 1 << 20)), packetRoom)) }
        if maximumRead > 0 { self.maximumRead = max(4096, min(Int(min(maximumRead, 1 << 20)), packetRoom)) }
    }

    // MARK: Operations

    /// `stat` (following symlinks) or, with `followLinks` false, `lstat`; nil when the path does not exist.
    public func status(of path: String, followLinks: Bool = true) throws -> RemoteFileStatus? {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: followLinks ? SFTPProtocol.stat : SFTPProtocol.lstat, id: id)
        packet.string(path)
        switch try request(packet, id: id, what: "stat \(remoteName(path))") {
        case let .attributes(status): return status
        case .status(SFTPProtocol.noSuchFile, _), .status(SFTPProtocol.noSuchPath, _): return nil
        case let .status(code, message): throw failure("stat", path: path, status: code, message: message)
        default: throw KDCTError(.io, "stat: the SFTP server sent an unexpected reply", file: remoteName(path))
        }
    }

    /// The canonical absolute form of `path` (symlinks resolved, as the server's realpath(3) does).
    public func canonicalPath(_ path: String) throws -> String {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.realpath, id: id)
        packet.string(path)
        switch try request(packet, id: id, what: "resolving \(remoteName(path))") {
        case let .name(names) where !names.isEmpty: return names[0]
        case let .status(code, message): throw failure("resolving the path", path: path, status: code, message: message)
        default: throw KDCTError(.io, "realpath: the SFTP server sent an unexpected reply", file: remoteName(path))
        }
    }

    /// Removes a file.
    public func remove(_ path: String) throws {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.remove, id: id)
        packet.string(path)
        try expectOK(try request(packet, id: id, what: "removing \(remoteName(path))"), "remove", path: path)
    }

    /// Renames `from` to `to` with SSH_FXP_RENAME. OpenSSH's server links the new name, then unlinks the old one,
    /// so this never replaces an existing `to`: it fails instead.
    public func rename(_ from: String, to: String) throws {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.rename, id: id)
        packet.string(from)
        packet.string(to)
        try expectOK(try request(packet, id: id, what: "renaming \(remoteName(from))"), "rename to \(to)", path: from)
    }

    /// Renames `from` to `to` with `posix-rename@openssh.com`: rename(2) on the host, which replaces an
    /// existing `to` atomically (the name always refers to the old or the new file). Needs `supportsAtomicReplace`.
    public func renameReplacing(_ from: String, to: String) throws {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.extended, id: id)
        packet.string("posix-rename@openssh.com")
        packet.string(from)
        packet.string(to)
        try expectOK(try request(packet, id: id, what: "renaming \(remoteName(from))"), "rename over \(to)", path: from)
    }

    /// Opens `path` for writing: `exclusive` creates it with `mode` and fails when it exists; otherwise it must
    /// exist. Up to `window` bytes of writes are kept in flight.
    func openForWriting(_ path: String, exclusive: Bool, mode: Int32, window: Int) throws -> SFTPFile {
        let flags = exclusive ? SFTPProtocol.openWrite | SFTPProtocol.openCreate | SFTPProtocol.openExclusive
                              : SFTPProtocol.openWrite
        do {
            return try open(path, flags: flags, mode: exclusive ? mode : nil, window: window)
        } catch var failure as KDCTError {
            // OpenSSH reports O_EXCL's EEXIST as a plain "failure" (protocol version 3 has no better code).
            if exclusive, failure.code != .notFound, (try? status(of: path, followLinks: false)) ?? nil != nil {
                throw KDCTError(.alreadyExists, "exists already", file: remoteName(path))
            }
            if failure.code == .notFound { failure.message += " (does the directory \(FilePaths.directory(of: path)) exist on the host?)" }
            throw failure
        }
    }

    /// Opens `path` for reading.
    func openForReading(_ path: String) throws -> SFTPFile {
        try open(path, flags: SFTPProtocol.openRead, mode: nil, window: 0)
    }

    private func open(_ path: String, flags: UInt32, mode: Int32?, window: Int) throws -> SFTPFile {
        let id = newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.open, id: id)
        packet.string(path)
        packet.u32(flags)
        if let mode {
            packet.u32(SFTPProtocol.attrPermissions)
            packet.u32(UInt32(mode))
        } else {
            packet.u32(0)
        }
        let operation = flags & SFTPProtocol.openCreate != 0 ? "create" : flags & SFTPProtocol.openWrite != 0 ? "open for writing" : "open"
        switch try request(packet, id: id, what: "opening \(remoteName(path))") {
        case let .handle(handle) where !handle.isEmpty && handle.count <= 256:
            return SFTPFile(session: self, handle: handle, path: path, window: window)
        case let .status(code, message): throw failure(operation, path: path, status: code, message: message)
        default: throw KDCTError(.io, "\(operation): the SFTP server sent an unexpected reply", file: remoteName(path))
        }
    }
}

/// An open remote file. Writes are pipelined: each goes out as one SSH_FXP_WRITE request of up to
/// `SFTPSession.maximumWrite` bytes at its own offset (so holes cost nothing), and up to `window` bytes wait for
/// their acknowledgement at a time. `writeInPlace` sends straight from the caller's buffer, building each
/// request's header in the bytes just before its data.
final class SFTPFile {
    let session: SFTPSession
    let path: String
    private let handle: [UInt8]
    private let window: Int
    private var pending: [UInt32: (offset: UInt64, count: Int)] = [:]
    private var pendingBytes = 0
    private var isOpen = true
    private var staging: UnsafeMutableRawBufferPointer?

    /// Writable bytes `writeInPlace` needs before its data for a request header (a v3 handle is at most 256 bytes).
    static let headerRoom = 320

    init(session: SFTPSession, handle: [UInt8], path: String, window: Int) {
        self.session = session
        self.handle = handle
        self.path = path
        self.window = max(window, 1 << 20)
    }

    deinit {
        closeDiscarding()
        staging?.deallocate()
    }

    /// Writes `data` at `offset` without copying it. `SFTPFile.headerRoom` bytes before `data` must be writable,
    /// and the content of `data` is undefined afterwards (request headers are built over its bytes). Returns
    /// once the requests are sent; `flush` waits for their acknowledgements.
    func writeInPlace(_ data: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard let base = data.baseAddress else { return }
        var done = 0
        while done < data.count {
            let count = min(session.maximumWrite, data.count - done)
            let id = session.newRequestID()
            let header = SFTPPacketWriter.writeHeader(id: id, handle: handle, offset: offset + UInt64(done), count: count)
            let start = base + done - header.count
            header.withUnsafeBytes { start.copyMemory(from: $0.baseAddress!, byteCount: header.count) }
            try session.send(UnsafeRawBufferPointer(start: start, count: header.count + count),
                             what: "writing \(session.remoteName(path)) at offset \(offset + UInt64(done))")
            pending[id] = (offset + UInt64(done), count)
            pendingBytes += count
            done += count
            try collectAcknowledgements(limit: window)
        }
    }

    /// Writes `bytes` at `offset`, copying them (for callers whose buffer is not theirs to scribble on).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard let source = bytes.baseAddress else { return }
        let room = Self.headerRoom
        let buffer = staging ?? UnsafeMutableRawBufferPointer.allocate(byteCount: room + session.maximumWrite, alignment: 16)
        staging = buffer
        var done = 0
        while done < bytes.count {
            let count = min(session.maximumWrite, bytes.count - done)
            (buffer.baseAddress! + room).copyMemory(from: source + done, byteCount: count)
            try writeInPlace(UnsafeMutableRawBufferPointer(rebasing: buffer[room..<(room + count)]), at: offset + UInt64(done))
            done += count
        }
    }

    /// Handles acknowledgements that have arrived; waits for more while more than `limit` bytes are unacknowledged.
    private func collectAcknowledgements(limit: Int) throws {
        var blocking = pendingBytes > limit
        while pendingBytes > 0 {
            // Look without waiting once half the window is in flight; wait when it is full.
            guard blocking || pendingBytes >= limit / 2 else { return }
            guard let (type, body) = try session.receive("waiting for \(session.remoteName(path)) to be written",
                                                         blocking: blocking) else { return }
            let (id, reply) = try session.parse(type: type, body: body)
            guard let write = pending.removeValue(forKey: id) else {
                session.connection.abandon()
                throw KDCTError(.io, "the SFTP server acknowledged request \(id), which is not an outstanding write",
                                file: session.remoteName(path))
            }
            pendingBytes -= write.count
            switch reply {
            case .status(SFTPProtocol.ok, _): break
            case let .status(code, message):
                throw session.failure("write of \(write.count) bytes at offset \(write.offset)", path: path, status: code, message: message)
            default:
                throw KDCTError(.io, "a write got an unexpected reply from the SFTP server", file: session.remoteName(path))
            }
            blocking = pendingBytes > limit
        }
    }

    /// Waits until the server has acknowledged every write.
    func flush() throws { try collectAcknowledgements(limit: 0) }

    private func handleRequest(_ type: UInt8) -> (SFTPPacketWriter, UInt32) {
        let id = session.newRequestID()
        var packet = SFTPPacketWriter(type: type, id: id)
        packet.string(handle)
        return (packet, id)
    }

    /// The file's size on the server (`fstat`), after `flush`.
    func size() throws -> UInt64 {
        try flush()
        let (packet, id) = handleRequest(SFTPProtocol.fstat)
        switch try session.request(packet, id: id, what: "fstat \(session.remoteName(path))") {
        case let .attributes(status):
            guard let size = status.size else {
                throw KDCTError(.unsupported, "the server did not report the file size", file: session.remoteName(path))
            }
            return size
        case let .status(code, message): throw session.failure("fstat", path: path, status: code, message: message)
        default: throw KDCTError(.io, "fstat: unexpected reply", file: session.remoteName(path))
        }
    }

    /// Sets the file's size (`fsetstat`; OpenSSH's server truncates or extends with a hole), after `flush`.
    func setSize(_ size: UInt64) throws {
        try flush()
        var (packet, id) = handleRequest(SFTPProtocol.fsetstat)
        packet.u32(SFTPProtocol.attrSize)
        packet.u64(size)
        try session.expectOK(try session.request(packet, id: id, what: "setting the size of \(session.remoteName(path))"),
                             "setting the size to \(size)", path: path)
    }

    /// Waits for every write's acknowledgement, then, with `toDisk`, flushes the file to stable storage on the host
    /// (`fsync@openssh.com`). True when the data is on stable storage: false without `toDisk` (`-t unsafe`) or
    /// when the server does not offer the extension. The host may take long: keepalives show it is still there.
    func sync(toDisk: Bool) throws -> Bool {
        try flush()
        guard toDisk, session.extensions.contains("fsync@openssh.com") else { return false }
        let id = session.newRequestID()
        var packet = SFTPPacketWriter(type: SFTPProtocol.extended, id: id)
        packet.string("fsync@openssh.com")
        packet.string(handle)
        try session.expectOK(try session.request(packet, id: id, what: "flushing \(session.remoteName(path))", wait: .longOperation),
                             "fsync", path: path)
        return true
    }

    /// Reads `[start, start + length)` with up to `window` bytes of requests in flight, handing the bytes to
    /// `consume` in order. Fails when the file ends before `start + length`.
    func read(from start: UInt64, length: UInt64, window: Int = 8 << 20,
              consume: (UnsafeRawBufferPointer) throws -> Void) throws {
        let end = start + length
        var requested = start
        var delivered = start
        var outstanding: [UInt32: (offset: UInt64, count: Int)] = [:]
        var outstandingBytes = 0
        var arrived: [UInt64: ArraySlice<UInt8>] = [:]
        func ask(_ offset: UInt64, _ count: Int) throws {
            var (packet, id) = handleRequest(SFTPProtocol.read)
            packet.u64(offset)
            packet.u32(UInt32(count))
            try session.send(packet.finished, what: "reading \(session.remoteName(path))")
            outstanding[id] = (offset, count)
            outstandingBytes += count
        }
        while delivered < end {
            while requested < end && outstandingBytes < window {
                let count = Int(min(UInt64(session.maximumRead), end - requested))
                try ask(requested, count)
                requested += UInt64(count)
            }
            let (type, body) = try session.receive("reading \(session.remoteName(path))")
            let (id, reply) = try session.parse(type: type, body: body)
            guard let request = outstanding.removeValue(forKey: id) else {
                session.connection.abandon()
                throw KDCTError(.io, "the SFTP server answered request \(id), which is not an outstanding read", file: session.remoteName(path))
            }
            outstandingBytes -= request.count
            switch reply {
            case let .data(bytes) where !bytes.isEmpty && bytes.count <= request.count:
                arrived[request.offset] = bytes
                if bytes.count < request.count {
                    // A short read: ask for the rest before anything after it can be delivered.
                    try ask(request.offset + UInt64(bytes.count), request.count - bytes.count)
                }
            case .status(SFTPProtocol.endOfFile, _):
                throw KDCTError(.truncated, "the remote file ends before offset \(request.offset + UInt64(request.count))",
                                file: session.remoteName(path))
            case let .status(code, message):
                throw session.failure("read at offset \(request.offset)", path: path, status: code, message: message)
            default:
                throw KDCTError(.io, "a read got an unexpected reply from the SFTP server", file: session.remoteName(path))
            }
            while let bytes = arrived.removeValue(forKey: delivered) {
                try bytes.withUnsafeBytes { try consume($0) }
                delivered += UInt64(bytes.count)
            }
        }
    }

    /// Flushes pending writes and closes the handle.
    func close() throws {
        guard isOpen else { return }
        try flush()
        isOpen = false
        let (packet, id) = handleRequest(SFTPProtocol.close)
        try session.expectOK(try session.request(packet, id: id, what: "closing \(session.remoteName(path))"), "close", path: path)
    }

    /// Gives the handle up after a failure, without waiting for outstanding writes (their replies will be
    /// skipped). While the session is usable the handle is closed (within the connection's policy); otherwise the
    /// server closes it with the session.
    func closeDiscarding() {
        guard isOpen else { return }
        isOpen = false
        session.abandonedRequests.formUnion(pending.keys)
        pending.removeAll()
        pendingBytes = 0
        guard session.connection.isUsable else { return }
        let (packet, id) = handleRequest(SFTPProtocol.close)
        if (try? session.request(packet, id: id, what: "closing \(session.remoteName(path))")) == nil {
            session.connection.abandon()
        }
    }
}
