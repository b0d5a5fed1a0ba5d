import CKDCTShims

/// An output written in place: a block device (LVM volume, iSCSI/FC LUN, `/dev/nbdN`, loop device) or an existing
/// image file written into (`-n`). Nothing is ever unlinked, renamed or replaced; the node and the file stay what
/// they are, and only their content changes.
///
/// A block device is opened with `O_EXCL`, so one that is mounted or held by device-mapper is refused. Its size
/// is the `capacity`: writes past it are refused (callers check the size before the first write). Ranges the
/// writer leaves out are zeroed only where needed (`writeZeros`): deallocated with a write-zeroes command that
/// may unmap (`fallocate(PUNCH_HOLE)`) where the device has one; otherwise each chunk is read first and zeroed
/// (`BLKZEROOUT`) only when it does not already read as zeros. An existing file's holes are skipped and its data
/// ranges punched. `commit` flushes (`fsync`) unless told not to (`-t unsafe`); `abort` leaves the partly written
/// content (it cannot be undone).
public final class InPlaceTarget: OutputTarget {
    /// What is being written.
    public enum Kind: Sendable, Equatable {
        /// A block device node, written in place up to its `capacity`.
        case blockDevice
        /// An existing image file written into (`-n`); it may grow.
        case existingFile
    }

    /// The destination as the user gave it.
    public let displayName: String
    /// The device node or file written (symlinks resolved).
    public let path: String
    /// Device or file.
    public let kind: Kind
    /// A device's size in bytes; nil for a file (it grows).
    public let capacity: UInt64?
    /// True when the caller stated the target reads as zeros (`--target-is-zero`) or the content was discarded.
    public private(set) var readsAsZeros: Bool
    private let file: WritableFile
    private let flush: Bool
    /// The alignment of device zeroing commands (the logical sector size).
    private let sectorSize: UInt64
    /// Whether `fallocate(PUNCH_HOLE)` works here (nil until tried).
    private var punchWorks: Bool?
    private var closed = false

    /// Opens the block device `path` (exclusively). `assumeZeroed` is `--target-is-zero`.
    public init(device path: String, displayName: String, assumeZeroed: Bool = false, flush: Bool = true) throws {
        file = try WritableFile(openingExisting: path, exclusive: true)
        capacity = try file.blockDeviceSize()
        sectorSize = UInt64((try? file.blockSectorSize()) ?? 512)
        kind = .blockDevice
        self.path = path
        self.displayName = displayName
        self.readsAsZeros = assumeZeroed
        self.flush = flush
    }

    /// Opens the existing regular file `path` for writing into it. `assumeZeroed` is `--target-is-zero`.
    public init(existingFile path: String, displayName: String, assumeZeroed: Bool = false, flush: Bool = true) throws {
        file = try WritableFile(openingExisting: path)
        capacity = nil
        sectorSize = 512
        kind = .existingFile
        self.path = path
        self.displayName = displayName
        self.readsAsZeros = assumeZeroed
        self.flush = flush
    }

    deinit { if !closed { try? file.close() } }

    /// The current length: the device size, or the file's length.
    public func length() throws -> UInt64 { try capacity ?? naming { try file.length() } }

    /// Drops the old content so the target reads as zeros: an existing file is truncated to nothing (same inode,
    /// owner and mode). A device keeps its bytes (writers that need zeros must not call this on a device).
    public func discardContent() throws {
        guard kind == .existingFile else { return }
        try naming { try file.truncate(to: 0) }
        readsAsZeros = true
    }

    private func checkFits(_ end: UInt64, what: String) throws {
        if let capacity, end > capacity {
            throw KDCTError(.invalidArgument, "\(what) ends at byte \(end), past the end of the device (\(capacity) bytes)",
                            file: displayName)
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try checkFits(offset + UInt64(bytes.count), what: "a write")
        try naming { try file.write(bytes, at: offset) }
    }

    /// A device must already be `length` bytes or more; a file grows to `length` (it never shrinks: what lies
    /// past the source is the user's).
    public func setLength(_ length: UInt64) throws {
        try checkFits(length, what: "the output")
        if kind == .existingFile, try self.length() < length { try naming { try file.truncate(to: length) } }
    }

    public func allocate(offset: UInt64, length: UInt64) throws {
        guard kind == .existingFile else {
            throw KDCTError(.unsupported, "preallocation applies to files, not devices", file: displayName)
        }
        try naming { try file.allocate(offset: offset, length: length) }
    }

    public func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, to offset: UInt64, length: UInt64) throws {
        try checkFits(offset + length, what: "a copy")
        let copied = try naming { try file.copyRange(from: source, at: sourceOffset, to: offset, length: length) }
        if copied < length {
            try copyThroughBuffer(from: source, at: sourceOffset + copied, to: offset + copied, length: length - copied)
        }
    }

    public func writeZeros(offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        try checkFits(offset + length, what: "zeroing")
        try naming {
            switch kind {
            case .blockDevice: try zeroDeviceRange(offset: offset, end: offset + length)
            case .existingFile: try zeroFileRange(offset: offset, end: offset + length)
            }
        }
    }

    /// Device: the sector-aligned middle by a write-zeroes command (or read-check-zero), the unaligned edges by
    /// writing zeros.
    private func zeroDeviceRange(offset: UInt64, end: UInt64) throws {
        let alignedStart = (offset + sectorSize - 1) / sectorSize * sectorSize
        let alignedEnd = end / sectorSize * sectorSize
        guard alignedStart < alignedEnd else { return try writeZeroBytes(offset: offset, end: end) }
        try writeZeroBytes(offset: offset, end: alignedStart)
        if punchWorks != false {
            punchWorks = try file.punchHole(offset: alignedStart, length: alignedEnd - alignedStart)
        }
        if punchWorks == false {
            try zeroWhereNotZero(offset: alignedStart, end: alignedEnd) { start, length in
                do {
                    try file.zeroOut(offset: start, length: length)
                } catch {
                    try writeZeroBytes(offset: start, end: start + length)
                }
            }
        }
        try writeZeroBytes(offset: alignedEnd, end: end)
    }

    /// File: holes are zeros already; data ranges are punched, or (where punching is impossible) checked and
    /// overwritten with zeros.
    private func zeroFileRange(offset: UInt64, end: UInt64) throws {
        let fileEnd = min(end, try file.length())
        var cursor = offset
        while cursor < fileEnd {
            guard let data = file.nextData(from: cursor), data < fileEnd else { break }
            let hole = file.nextHole(from: data, end: fileEnd)
            if punchWorks != false { punchWorks = try file.punchHole(offset: data, length: hole - data) }
            if punchWorks == false {
                try zeroWhereNotZero(offset: data, end: hole) { start, length in
                    try writeZeroBytes(offset: start, end: start + length)
                }
            }
            cursor = hole
        }
    }

    /// Reads `[offset, end)` in chunks and calls `zero` for each chunk that holds a non-zero byte.
    private func zeroWhereNotZero(offset: UInt64, end: UInt64, _ zero: (UInt64, UInt64) throws -> Void) throws {
        let chunkSize = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var cursor = offset
        while cursor < end {
            let count = Int(min(UInt64(chunkSize), end - cursor))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            let got = try file.read(into: slice, at: cursor)
            if got < count || !ZeroDetection.isZero(UnsafeRawBufferPointer(slice)) {
                try zero(cursor, UInt64(count))
            }
            cursor += UInt64(count)
        }
    }

    private func writeZeroBytes(offset: UInt64, end: UInt64) throws {
        guard offset < end else { return }
        try ZeroBuffer.shared.forEachChunk(of: end - offset) { chunk, done in try file.write(chunk, at: offset + done) }
    }

    public func commit() throws {
        guard !closed else { return }
        try naming {
            if flush { try file.sync() }
            closed = true
            try file.close()
        }
    }

    public func abort() {
        guard !closed else { return }
        closed = true
        try? file.close()
    }

    private func naming<T>(_ body: () throws -> T) throws -> T { try attributing(to: displayName, body) }

    /// Runs `check` on this freshly opened target; on an error the target is closed (nothing was written).
    func checked(_ check: (InPlaceTarget) throws -> Void) throws -> InPlaceTarget {
        do {
            try check(self)
            return self
        } catch {
            abort()
            throw error
        }
    }
}

/// Zero detection over a buffer (word-wise, in C).
enum ZeroDetection {
    static func isZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let base = bytes.baseAddress else { return true }
        return kdct_is_zero(base, bytes.count) != 0
    }
}
