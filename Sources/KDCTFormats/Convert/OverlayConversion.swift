/// `convert -B BACKING -F FMT`: the QCOW2 output is an overlay of a backing file and holds only what the backing
/// file does not already hold, for incremental migration (the base is shipped once, each later state as a small
/// overlay).
public struct BackingOverlay: Sendable {
    /// The backing file as the output's header stores it: relative to the output's folder, or absolute.
    public var backingFile: String
    /// Its format, recorded in the header and checked against its content.
    public var backingFormat: ImageFormat
    /// How the backing file is opened: its name is followed under this reference policy.
    public var openOptions = OpenOptions()

    /// An overlay of `backingFile` in `backingFormat`.
    public init(backingFile: String, backingFormat: ImageFormat) {
        self.backingFile = backingFile
        self.backingFormat = backingFormat
    }
}

/// What an overlay conversion writes, decided before the first write.
///
/// When the backing file is a layer of the source's chain (the same file, at depth `d`), the output holds what the
/// layers above it hold, as qemu-img convert -B does: ranges the source maps to that layer or below are left
/// unallocated (they read from the backing file), everything above is written, zeros included (as zero clusters,
/// so they hide the backing file). When it is not (a base converted earlier, kept on the KVM host), the output
/// holds what differs from it: each cluster is compared with the backing file's, equal clusters are left
/// unallocated, zeros over backing data become zero clusters.
struct OverlayPlan {
    /// The source as the converter walks it: ranges left to the backing file reported absent (never read), ranges
    /// to store reported as data, zeros included (read as zeros, then stored as zero clusters).
    let source: any BlockDevice
    /// The backing file to compare clusters with; nil when it is a layer of the source chain.
    let comparison: (any BlockDevice)?

    /// Opens `overlay`'s backing file for the output `destination` and decides how `source` is written over it.
    static func prepare(source: any BlockDevice, destination: String, overlay: BackingOverlay) throws -> OverlayPlan {
        let (backing, resolved) = try ImageOpener.openBacking(overlay.backingFile, format: overlay.backingFormat,
                                                              forImage: destination, options: overlay.openOptions)
        let identity = FilePaths.status(resolved, followingLinks: true)?.identity
        let layers = [source.info] + source.info.backingChain
        let depth = layers.firstIndex { FilePaths.status($0.filename, followingLinks: true)?.identity == identity }
        if let depth {
            return OverlayPlan(source: OverlaySource(source: source, backing: backing, layerDepth: depth), comparison: nil)
        }
        return OverlayPlan(source: OverlaySource(source: source, backing: backing, layerDepth: nil), comparison: backing)
    }
}

/// The source of an overlay conversion (see `OverlayPlan`): its extents say what the converter reads, its reads
/// are the source's.
final class OverlaySource: BlockDevice {
    let source: any BlockDevice
    let backing: any BlockDevice
    let layerDepth: Int?

    init(source: any BlockDevice, backing: any BlockDevice, layerDepth: Int?) {
        self.source = source
        self.backing = backing
        self.layerDepth = layerDepth
    }

    var virtualSize: UInt64 { source.virtualSize }
    var info: ImageInfo { source.info }

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let extent = try source.extent(at: offset, maxLength: maxLength)
        // Absent: no layer holds it, it reads as zeros here and in the backing file (which is no longer).
        if extent.status == .absent { return extent }
        if let layerDepth {
            let status: Extent.Status = extent.depth >= layerDepth ? .absent : .data
            return Extent(offset: offset, length: extent.length, status: status, depth: extent.depth)
        }
        if extent.status == .data || offset >= backing.virtualSize {
            return Extent(offset: offset, length: extent.length, status: extent.status == .data ? .data : .absent)
        }
        // Zeros in the source: stored (as zero clusters, where the backing file's bytes are not zeros) only where
        // the backing file holds data.
        let below = try backing.extent(at: offset, maxLength: min(extent.length, backing.virtualSize - offset))
        return Extent(offset: offset, length: below.length, status: below.status == .data ? .data : .absent)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try source.read(into: buffer, at: offset)
    }

    func prefetch(at offset: UInt64, length: UInt64) { source.prefetch(at: offset, length: length) }
}

/// The QCOW2 writer of an overlay: zero clusters above the backing file are written as zero clusters (an
/// unallocated cluster would show the backing file), and, when comparing, clusters equal to the backing file's
/// are left unallocated.
final class OverlayWriter: ImageWriter {
    private let inner: QCOW2Writer
    private let comparison: (any BlockDevice)?
    private var backingBytes: UnsafeMutableRawBufferPointer?

    var clusterSize: Int { inner.clusterSize }
    var compression: CompressionType? { inner.compression }

    init(wrapping inner: QCOW2Writer, comparison: (any BlockDevice)?) {
        self.inner = inner
        self.comparison = comparison
    }

    deinit { backingBytes?.deallocate() }

    func write(_ segment: SegmentBuffer) throws {
        let cs = UInt64(clusterSize)
        let firstCluster = segment.guestOffset / cs
        let backing = try comparison.map { try backingData(for: segment, from: $0) }
        for index in segment.clusters.indices {
            if let backing {
                let start = index * clusterSize
                let theirs = UnsafeRawBufferPointer(rebasing: backing[start..<(start + clusterSize)])
                if GuestComparison.firstDifference(theirs, segment.clusterBytes(index)) == nil {
                    // Equal to the backing file: left to it (`.zero` is what the writer leaves unallocated).
                    segment.clusters[index] = .zero
                    continue
                }
            }
            if segment.clusters[index] == .zero { inner.setZero(guestCluster: firstCluster + UInt64(index)) }
        }
        try inner.write(segment)
    }

    /// The backing file's bytes for `segment`'s range (zeros past its end), in a buffer reused across segments.
    private func backingData(for segment: SegmentBuffer, from backing: any BlockDevice) throws -> UnsafeRawBufferPointer {
        let buffer: UnsafeMutableRawBufferPointer
        if let existing = backingBytes, existing.count >= segment.length {
            buffer = existing
        } else {
            backingBytes?.deallocate()
            buffer = .allocate(byteCount: max(segment.length, segment.data.count), alignment: 4096)
            backingBytes = buffer
        }
        let range = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<segment.length])
        let readable = segment.guestOffset < backing.virtualSize
            ? Int(min(UInt64(segment.length), backing.virtualSize - segment.guestOffset)) : 0
        if readable > 0 { try backing.read(into: UnsafeMutableRawBufferPointer(rebasing: range[0..<readable]), at: segment.guestOffset) }
        if readable < segment.length {
            UnsafeMutableRawBufferPointer(rebasing: range[readable...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        return UnsafeRawBufferPointer(range)
    }

    func finish() throws { try inner.finish() }
}
