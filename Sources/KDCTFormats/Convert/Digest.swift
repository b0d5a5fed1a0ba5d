import CLibCrypto

/// SHA-256 of a device's whole guest content (every virtual byte; zero and absent ranges hashed as zeros
/// without being read).
///
/// Reading and hashing overlap: a reader thread fills a few chunk buffers in guest order while the calling thread
/// hashes the previous ones, and a read-ahead stage (`PipelineOptions.readAhead`) keeps the chunks after them
/// requested from the disk. The digest does not depend on either.
public enum GuestDigest {
    /// Guest bytes per chunk read and hashed.
    static let chunkSize = 4 << 20
    /// Chunk buffers shared by the reader and the hasher (one being read, one being hashed, one ready).
    static let bufferCount = 3

    /// Computes the digest as lower-case hex, calling `progress` with the guest bytes hashed so far; reads ahead
    /// `PipelineOptions.defaultReadAhead` chunks.
    public static func sha256(of device: any BlockDevice,
                              progress: ((UInt64) -> Void)? = nil) throws -> String {
        try sha256(of: device, readAhead: PipelineOptions.defaultReadAhead, progress: progress)
    }

    /// Computes the digest as lower-case hex, requesting `readAhead` chunks of 4 MiB ahead of the reader (0: no
    /// read-ahead; at most `PipelineOptions.maxReadAhead`), and calling `progress` with the guest bytes hashed so far.
    public static func sha256(of device: any BlockDevice, readAhead: Int,
                              progress: ((UInt64) -> Void)?) throws -> String {
        try ReadAheadStage.validate(depth: readAhead, field: "readAhead")
        var readAheadChunks = GuestChunks(device: device, chunkSize: UInt64(chunkSize), dataOnly: true)
        let stage = readAhead == 0 ? nil : try ReadAheadStage(
            device: device, budget: UInt64(readAhead * chunkSize), ranges: { try readAheadChunks.next().map { ($0.offset, $0.length) } })
        defer { stage?.stop() }
        let cursor = stage?.cursor

        let buffers = (0..<bufferCount).map { _ in DigestChunk(capacity: chunkSize) }
        let queue = ConditionMutex(DigestQueue(free: buffers))
        let reader = try JoinableThread {
            readChunks(of: device, into: queue, readAhead: cursor)
        }
        defer {
            queue.withLock { $0.stopped = true }
            reader.join()
        }

        let hasher = try SHA256Hasher()
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        while let chunk = try queue.withLock(when: { !$0.ready.isEmpty || $0.error != nil || $0.finished }, { state -> DigestChunk? in
            if let error = state.error { throw error }
            return state.ready.isEmpty ? nil : state.ready.removeFirst()
        }) {
            let count = Int(chunk.length)
            let bytes = chunk.isData ? UnsafeRawBufferPointer(rebasing: chunk.bytes[0..<count])
                                     : UnsafeRawBufferPointer(rebasing: zeros[0..<count])
            let end = chunk.offset + chunk.length
            let hashed = Result { try hasher.update(bytes) }
            queue.withLock { $0.free.append(chunk) }
            try hashed.get()
            progress?(end)
        }
        return try hasher.finalize().map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    /// The reader thread: reads every chunk in guest order into a free buffer (data chunks only; zero and absent
    /// chunks only say how long they are) and queues it for the hasher.
    private static func readChunks(of device: any BlockDevice, into queue: ConditionMutex<DigestQueue>,
                                   readAhead: ReadAheadStage.Cursor?) {
        var chunks = GuestChunks(device: device, chunkSize: UInt64(chunkSize), dataOnly: false)
        while true {
            guard let buffer = queue.withLock(when: { !$0.free.isEmpty || $0.stopped }, { state -> DigestChunk? in
                state.stopped ? nil : state.free.removeLast()
            }) else { return }
            do {
                guard let next = try chunks.next() else {
                    queue.withLock { $0.finished = true }
                    return
                }
                buffer.offset = next.offset
                buffer.length = next.length
                buffer.isData = next.isData
                if next.isData {
                    readAhead?.advance(by: next.length)
                    try device.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer.bytes[0..<Int(next.length)]),
                                    at: next.offset)
                }
                queue.withLock { $0.ready.append(buffer) }
            } catch {
                queue.withLock { $0.error = $0.error ?? error }
                return
            }
        }
    }
}

/// One chunk between the digest's reader and hasher.
private final class DigestChunk: @unchecked Sendable {
    // @unchecked: a chunk has one owner at a time. It goes from the free list to the reader, which fills it, then
    // through the ready queue (under its mutex) to the hasher, then back to the free list; the raw pointer and the
    // fields are never touched by two threads at once, which the compiler cannot see.
    let bytes: UnsafeMutableRawBufferPointer
    var offset: UInt64 = 0
    var length: UInt64 = 0
    var isData = false

    init(capacity: Int) { bytes = .allocate(byteCount: capacity, alignment: 4096) }
    deinit { bytes.deallocate() }
}

/// What the digest's reader and hasher share.
private struct DigestQueue: Sendable {
    /// Buffers nobody uses.
    var free: [DigestChunk]
    /// Chunks read, in guest order, waiting to be hashed.
    var ready: [DigestChunk] = []
    /// The reader has queued the last chunk.
    var finished = false
    /// The hasher is done (or failed): the reader stops.
    var stopped = false
    /// The reader's error.
    var error: (any Error)?
}

/// A device's guest range cut into chunks of at most `chunkSize` bytes that never straddle an extent boundary, in
/// guest order: each says whether it holds data (to be read) or reads as zeros. With `dataOnly`, only data chunks.
struct GuestChunks {
    let device: any BlockDevice
    let chunkSize: UInt64
    let dataOnly: Bool
    private var offset: UInt64 = 0
    private var extent: Extent?

    init(device: any BlockDevice, chunkSize: UInt64, dataOnly: Bool) {
        self.device = device
        self.chunkSize = max(1, chunkSize)
        self.dataOnly = dataOnly
    }

    /// The next chunk, or nil past the end of the guest.
    mutating func next() throws -> (offset: UInt64, length: UInt64, isData: Bool)? {
        while offset < device.virtualSize {
            let current: Extent
            if let extent, extent.offset <= offset, offset < extent.end {
                current = extent
            } else {
                current = try device.extent(at: offset, maxLength: device.virtualSize - offset)
                guard current.length > 0, current.offset == offset, current.length <= device.virtualSize - offset else {
                    throw KDCTError(.corrupt, "reader returned an invalid extent \(current) for offset \(offset)",
                                    file: device.info.filename)
                }
                extent = current
            }
            let length = min(chunkSize, current.end - offset)
            let start = offset
            offset += length
            if current.status == .data || !dataOnly { return (start, length, current.status == .data) }
        }
        return nil
    }
}

/// SHA-256 through libcrypto's EVP interface. One instance hashes one message.
final class SHA256Hasher {
    private let context: OpaquePointer

    /// A hasher ready for the first bytes.
    init() throws {
        guard let context = EVP_MD_CTX_new() else { throw KDCTError(.io, "EVP_MD_CTX_new failed") }
        self.context = context
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else { throw KDCTError(.io, "EVP_DigestInit_ex failed") }
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Adds `bytes` to the message.
    func update(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        guard EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1 else {
            throw KDCTError(.io, "EVP_DigestUpdate failed")
        }
    }

    /// The 32-byte digest of the message.
    func finalize() throws -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(context, &digest, &length) == 1 else { throw KDCTError(.io, "EVP_DigestFinal_ex failed") }
        return Array(digest.prefix(Int(length)))
    }
}
