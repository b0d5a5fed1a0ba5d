import KDCTFormats

// A convert job with `"checksum": true` reports the SHA-256 of its output file (what `sha256sum` prints for it),
// so the user can check a copy of the file later. The file is hashed after the writer has finished and before it
// is renamed into place: a job cancelled while hashing still leaves no output.

/// A local output whose bytes are hashed when it is committed.
final class ChecksummedTarget: OutputTarget {
    private let base: LocalFileTarget
    private let isCancelled: @Sendable () -> Bool
    private let report: @Sendable (ProgressUpdate) -> Void
    /// The output's SHA-256 (lower-case hex), once committed.
    private(set) var sha256: String?

    /// Wraps `base`; `report` receives the `hashing` phase's progress, `isCancelled` stops it.
    init(_ base: LocalFileTarget, isCancelled: @escaping @Sendable () -> Bool,
         report: @escaping @Sendable (ProgressUpdate) -> Void) {
        self.base = base
        self.isCancelled = isCancelled
        self.report = report
    }

    var displayName: String { base.displayName }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws { try base.write(bytes, at: offset) }
    func setLength(_ length: UInt64) throws { try base.setLength(length) }
    func allocate(offset: UInt64, length: UInt64) throws { try base.allocate(offset: offset, length: length) }
    func abort() { base.abort() }

    /// Hashes the finished file (read as raw bytes, holes as zeros without reading them), then commits it.
    func commit() throws {
        let file = FileBytes(file: try ReadOnlyFile(path: base.temporaryPath), isCancelled: isCancelled)
        let (total, report) = (file.virtualSize, self.report)
        report(ProgressUpdate(phase: "hashing", processed: 0, total: total, moved: 0))
        sha256 = try GuestDigest.sha256(of: file) { done in
            report(ProgressUpdate(phase: "hashing", processed: done, total: total, moved: done))
        }
        try base.commit()
    }
}

/// A file's bytes as a device (byte N is file byte N, holes are zero runs), whose reads fail with `cancelled`
/// once `isCancelled` says so.
private struct FileBytes: BlockDevice {
    let file: ReadOnlyFile
    let isCancelled: @Sendable () -> Bool

    var virtualSize: UInt64 { file.size }
    var info: ImageInfo { ImageInfo(format: .raw, filename: file.path, virtualSize: file.size) }

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let limit = min(file.size, offset + maxLength)
        guard let data = try file.nextData(from: offset), data < limit else {
            return Extent(offset: offset, length: limit - offset, status: .zero)
        }
        if data > offset { return Extent(offset: offset, length: data - offset, status: .zero) }
        let end = max(min(try file.nextHole(from: offset), limit), offset + 1)
        return Extent(offset: offset, length: end - offset, status: .data, hostOffset: offset)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        if isCancelled() { throw KDCTError(.cancelled, "cancelled", file: file.path) }
        try file.read(into: buffer, at: offset)
    }
}
