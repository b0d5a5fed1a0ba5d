import CKDCTShims
import KDCTFormats
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A range of the local file to send, within one chunk.
struct UploadUnit: Sendable {
    var range: ByteRange
    /// Send zero runs too: the remote range may hold stale bytes (a resent chunk of an interrupted upload), so
    /// leaving a hole there would not make it read as zeros.
    var sendZeros: Bool
}

/// Counters shared by the streams and read by the progress reporter.
final class UploadCounters: Sendable {
    /// Bytes of the file dealt with in this run (sent, or skipped as zeros).
    let processed = Atomic<UInt64>(0)
    /// Bytes written to the host in this run.
    let sent = Atomic<UInt64>(0)
}

/// Sends upload units over one SFTP file handle: reads the local file (holes found with `SEEK_DATA`/`SEEK_HOLE`
/// are not read), skips all-zero 64 KiB blocks unless the unit says otherwise, and writes the data runs in place
/// from its read buffer (`SFTPFile.writeInPlace`), so each byte is copied once, by libssh2 into its packet.
struct StreamSender {
    let file: ReadOnlyFile
    let remote: SFTPFile
    let minimumHole: UInt64
    let counters: UploadCounters
    let cancellation: CancellationToken?
    /// Told of every byte of the file this sender deals with, so the read-ahead stays a window ahead.
    var readAhead: ReadAheadStage.Cursor?
    /// Zero detection granularity.
    static let blockSize = 64 << 10
    /// Bytes read from the local file at a time.
    static let readSize = 4 << 20

    /// Sends `unit`. `buffer` holds `SFTPFile.headerRoom + readSize` bytes; `zeros` holds
    /// `SFTPFile.headerRoom + zeroSize` bytes, zero after the room.
    func send(_ unit: UploadUnit, buffer: UnsafeMutableRawBufferPointer, zeros: UnsafeMutableRawBufferPointer) throws {
        let room = SFTPFile.headerRoom
        let end = unit.range.end
        var position = unit.range.start
        var pendingZeros: (start: UInt64, length: UInt64)?

        func processed(_ count: UInt64) { counters.processed.add(count, ordering: .relaxed) }
        func started(_ count: UInt64) { readAhead?.advance(by: count) }
        // A run of zeros ends: skipped when long enough, else sent (from the zero-filled tail of `buffer`).
        func endZeroRun() throws {
            guard let run = pendingZeros else { return }
            pendingZeros = nil
            guard unit.sendZeros || run.length < minimumHole else { return }
            try sendZeroBytes(run.start, run.length, zeros: zeros)
        }

        while position < end {
            try cancellation?.check()
            let dataStart = unit.sendZeros ? position : min(try file.nextData(from: position) ?? end, end)
            if dataStart > position {
                // A hole in the local file.
                let length = dataStart - position
                pendingZeros = pendingZeros.map { ($0.start, $0.length + length) } ?? (position, length)
                processed(length)
                started(length)
                position = dataStart
                continue
            }
            let dataEnd = unit.sendZeros ? end : min(max(try file.nextHole(from: position), position + 1), end)
            let count = Int(min(UInt64(Self.readSize), dataEnd - position))
            let data = UnsafeMutableRawBufferPointer(rebasing: buffer[room..<(room + count)])
            started(UInt64(count))
            let got = try file.readAvailable(into: data, at: position)
            guard got == count else {
                throw KDCTError(.truncated, "the file shrank while being exported (read \(got) of \(count) bytes at offset \(position))",
                                file: file.path)
            }
            // Data runs between all-zero blocks go out as they are; zero blocks join the pending zero run.
            var index = 0
            var runStart: Int?
            while index < count {
                let length = min(Self.blockSize, count - index)
                let isZero = kdct_is_zero(data.baseAddress! + index, length) != 0
                if isZero && !unit.sendZeros {
                    if let start = runStart {
                        try write(data, start..<index, at: position)
                        runStart = nil
                    }
                    let offset = position + UInt64(index)
                    pendingZeros = pendingZeros.map { ($0.start, $0.length + UInt64(length)) } ?? (offset, UInt64(length))
                } else if runStart == nil {
                    try endZeroRun()
                    runStart = index
                }
                index += length
            }
            if let start = runStart { try write(data, start..<count, at: position) }
            processed(UInt64(count))
            position += UInt64(count)
        }
        // A zero run reaching the end of the unit: skipped when long enough (the final size or the next unit's
        // data bounds it), as everywhere else.
        try endZeroRun()
    }

    private func write(_ data: UnsafeMutableRawBufferPointer, _ range: Range<Int>, at position: UInt64) throws {
        try remote.writeInPlace(UnsafeMutableRawBufferPointer(rebasing: data[range]), at: position + UInt64(range.lowerBound))
        counters.sent.add(UInt64(range.count), ordering: .relaxed)
    }

    /// Bytes of zeros sent per request batch for short zero runs.
    static let zeroSize = 1 << 20

    /// Writes `length` zero bytes at `offset` from `zeros` (request headers are built over its bytes, so the
    /// used part is cleared again afterwards).
    private func sendZeroBytes(_ offset: UInt64, _ length: UInt64, zeros: UnsafeMutableRawBufferPointer) throws {
        let room = SFTPFile.headerRoom
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(Self.zeroSize), length - done))
            let region = UnsafeMutableRawBufferPointer(rebasing: zeros[room..<(room + count)])
            try remote.writeInPlace(region, at: offset + done)
            region.initializeMemory(as: UInt8.self, repeating: 0)
            counters.sent.add(UInt64(count), ordering: .relaxed)
            done += UInt64(count)
        }
    }
}

/// Runs the units of an upload on `streams` SFTP connections at once, each on its own thread: the first stream
/// uses the connection the exporter already has, the others connect with its `reconnectOptions` (no prompt,
/// host key known). Units are taken in file order from a shared queue, so the streams write neighbouring
/// chunks of the same remote file. A failure on one stream stops the others.
final class ParallelUpload: Sendable {
    private let file: ReadOnlyFile
    private let units: [UploadUnit]
    private let temporary: String
    private let options: ExportOptions
    let counters = UploadCounters()
    private let next = Atomic<Int>(0)
    /// Cancelled by the user's token (its parent) or by the first stream that fails.
    private let abort: CancellationToken
    private let failures = Mutex<[any Error]>([])
    private let extraConnectNotes = Mutex<[String]>([])

    init(file: ReadOnlyFile, units: [UploadUnit], temporary: String, options: ExportOptions) {
        self.file = file
        self.units = units
        self.temporary = temporary
        self.options = options
        abort = CancellationToken(parent: options.connection.cancellation)
    }

    /// Sends every unit; `primary` is the exporter's connection and open file (stream 1). Calls `report` every
    /// 0.1 s from this thread. Returns the number of streams that sent data and remarks about streams that could
    /// not connect.
    func run(primary: SFTPFile, report: () -> Void) throws -> (streams: Int, notes: [String]) {
        let wanted = max(1, min(options.streams, units.count))
        // Read-ahead: the units in their order, in pieces of `readSize`, a window ahead of what the streams read.
        let readAhead = options.readAhead == 0 ? nil : try ReadAheadStage(
            budget: UInt64(options.readAhead * StreamSender.readSize), ranges: Self.pieces(of: units),
            prefetch: { [file] in file.prefetch(offset: $0, length: $1) })
        defer { readAhead?.stop() }
        let cursor = readAhead?.cursor
        let primaryConnection = primary.session.connection
        let savedPolicy = primaryConnection.policy
        primaryConnection.policy.cancellation = abort
        defer { primaryConnection.policy = savedPolicy }
        var workers: [BackgroundWork<Bool>] = []
        // The primary connection is used by its stream's thread only, until every stream has ended.
        let primaryFile = HandOver(value: primary)
        let primaryPeer = HandOver(value: primaryConnection)
        do {
            workers.append(try BackgroundWork { [self] in try self.stream(remote: primaryFile.value, readAhead: cursor) })
            for index in 1..<wanted {
                workers.append(try BackgroundWork { [self] in try self.extraStream(number: index + 1, of: primaryPeer.value, readAhead: cursor) })
            }
        } catch {
            abort.cancel()
            for worker in workers { _ = try? worker.join() }
            throw error
        }
        while !workers.allSatisfy(\.isFinished) {
            report()
            usleep(100_000)
        }
        var used = 0
        for worker in workers {
            if (try? worker.join()) == true { used += 1 }
        }
        report()
        if let cancellation = options.connection.cancellation, cancellation.isCancelled { throw cancellation.cancellationError() }
        let errors = failures.withLock { $0 }
        // The first real failure explains; the cancellations it caused in the other streams do not.
        if let first = errors.first(where: { ($0 as? KDCTError)?.code != .cancelled }) ?? errors.first { throw first }
        return (max(used, 1), extraConnectNotes.withLock { $0 })
    }

    /// One stream's loop; true when it sent at least one unit.
    private func stream(remote: SFTPFile, readAhead: ReadAheadStage.Cursor?) throws -> Bool {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SFTPFile.headerRoom + StreamSender.readSize, alignment: 4096)
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: SFTPFile.headerRoom + StreamSender.zeroSize, alignment: 4096)
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        defer {
            buffer.deallocate()
            zeros.deallocate()
        }
        let sender = StreamSender(file: file, remote: remote, minimumHole: options.minimumHole, counters: counters,
                                  cancellation: abort, readAhead: readAhead)
        var sentAny = false
        do {
            while true {
                let index = next.add(1, ordering: .relaxed).oldValue
                guard index < units.count else { break }
                try sender.send(units[index], buffer: buffer, zeros: zeros)
                sentAny = true
            }
            try remote.flush()
        } catch {
            fail(error)
            throw error
        }
        return sentAny
    }

    /// A stream on a connection of its own. A stream that cannot connect (a host limiting sessions per user)
    /// leaves its share to the others.
    private func extraStream(number: Int, of primary: SSHConnection, readAhead: ReadAheadStage.Cursor?) throws -> Bool {
        var connectionOptions = primary.reconnectOptions
        connectionOptions.cancellation = abort
        let remote: SFTPFile
        let connection: SSHConnection
        do {
            connection = try SSHConnection(endpoint: primary.endpoint, options: connectionOptions)
            remote = try connection.openSFTP().openForWriting(temporary, exclusive: false, mode: 0, window: options.pipelineWindow)
        } catch {
            if abort.isCancelled { return false }
            extraConnectNotes.withLock { $0.append("stream \(number) could not connect (\(error)); the other streams sent its share") }
            return false
        }
        defer { connection.disconnect() }
        let sentAny = try stream(remote: remote, readAhead: readAhead)
        try remote.close()
        return sentAny
    }

    /// The units' ranges in file order, in pieces of at most `StreamSender.readSize` bytes, one at a time.
    private static func pieces(of units: [UploadUnit]) -> () -> (offset: UInt64, length: UInt64)? {
        var index = 0
        var position = units.first?.range.start ?? 0
        return {
            while index < units.count {
                let range = units[index].range
                if position < range.end {
                    let length = min(UInt64(StreamSender.readSize), range.end - position)
                    defer { position += length }
                    return (position, length)
                }
                index += 1
                if index < units.count { position = units[index].range.start }
            }
            return nil
        }
    }

    private func fail(_ error: any Error) {
        failures.withLock { $0.append(error) }
        abort.cancel()
    }
}
