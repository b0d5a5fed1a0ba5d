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
        let file = CancellableDevice(RawImage(file: try ReadOnlyFile(path: base.temporaryPath)), isCancelled: isCancelled)
        let (total, report) = (file.virtualSize, self.report)
        report(ProgressUpdate(phase: "hashing", processed: 0, total: total, moved: 0))
        sha256 = try GuestDigest.sha256(of: file) { done in
            report(ProgressUpdate(phase: "hashing", processed: done, total: total, moved: done))
        }
        try base.commit()
    }
}

/// A device whose reads fail with `cancelled` once `isCancelled` says so.
private struct CancellableDevice: BlockDevice {
    let base: any BlockDevice
    let isCancelled: @Sendable () -> Bool

    init(_ base: any BlockDevice, isCancelled: @escaping @Sendable () -> Bool) {
        self.base = base
        self.isCancelled = isCancelled
    }

    var virtualSize: UInt64 { base.virtualSize }
    var info: ImageInfo { base.info }
    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent { try base.extent(at: offset, maxLength: maxLength) }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        if isCancelled() { throw KDCTError(.cancelled, "cancelled", file: base.info.filename) }
        try base.read(into: buffer, at: offset)
    }
}
