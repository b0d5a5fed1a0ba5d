/// `convert -S SIZE`: a run of zeros shorter than `minimumRun` bytes is stored as data (written zeros, allocated
/// clusters) instead of being left unallocated; `-S 0` stores every byte (a fully allocated output).
///
/// A zero run is a maximal run of the writer's zero clusters: zero clusters inside segments and the ranges
/// between segments that the converter never read (they hold no data). A run is only known once the next data
/// cluster (or the end of the disk) is reached, so the zero clusters ending a segment are held back (the segment
/// is handed on without them) and stored, together with the gap after them, before the next segment when the run
/// turns out short. The inner writer therefore still sees strictly increasing guest offsets.
final class MinimumSparseRunWriter: RangeCopyingWriter {
    private let inner: any RangeCopyingWriter
    private let minimumRun: UInt64
    private let end: UInt64
    /// Every guest byte before `cursor` has been handed to the inner writer (as data or as a skipped zero run);
    /// `[cursor, position)` is a zero run whose length is not yet known.
    private var cursor: UInt64 = 0
    /// Zero-filled clusters, marked as data, used to store short runs.
    private let zeros: SegmentBuffer

    var clusterSize: Int { inner.clusterSize }
    var compression: CompressionType? { inner.compression }

    /// Wraps `inner` for a guest of `virtualSize` bytes.
    init(wrapping inner: any RangeCopyingWriter, minimumRun: UInt64, virtualSize: UInt64) {
        self.inner = inner
        self.minimumRun = minimumRun
        let cluster = UInt64(inner.clusterSize)
        end = (virtualSize + cluster - 1) / cluster * cluster
        let capacity = max(inner.clusterSize, (4 << 20) / inner.clusterSize * inner.clusterSize)
        zeros = SegmentBuffer(capacity: capacity, clusterSize: inner.clusterSize, compressing: inner.compression != nil)
        zeros.data.initializeMemory(as: UInt8.self, repeating: 0)
    }

    /// True when a zero run of `length` bytes is stored as data: shorter than the minimum, or any run for 0.
    private func isStored(_ length: UInt64) -> Bool { length > 0 && (minimumRun == 0 || length < minimumRun) }

    /// Decides the zero run `[cursor, runEnd)`: stored as zeros when shorter than the minimum.
    private func closeRun(at runEnd: UInt64) throws {
        if runEnd > cursor && isStored(runEnd - cursor) { try storeZeros(from: cursor, to: runEnd) }
        cursor = max(cursor, runEnd)
    }

    private func storeZeros(from start: UInt64, to stop: UInt64) throws {
        var offset = start
        let cluster = UInt64(clusterSize)
        while offset < stop {
            let length = min(UInt64(zeros.data.count), stop - offset)
            zeros.guestOffset = offset
            zeros.length = Int(length)
            zeros.clusters = [ClusterEncoding](repeating: .data, count: Int((length + cluster - 1) / cluster))
            try inner.write(zeros)
            offset += length
        }
    }

    func write(_ segment: SegmentBuffer) throws {
        let cluster = UInt64(clusterSize)
        let original = (length: segment.length, clusters: segment.clusters)
        defer {
            segment.length = original.length
            segment.clusters = original.clusters
        }
        guard let firstData = segment.clusters.firstIndex(where: { $0 != .zero }) else { return }
        // The run that was open (through the gap) ends at the segment's first data cluster.
        let firstDataOffset = segment.guestOffset + UInt64(firstData) * cluster
        if isStored(firstDataOffset - cursor) {
            try storeZeros(from: cursor, to: segment.guestOffset)
            for index in 0..<firstData { segment.clusters[index] = .data }
        }
        // Runs between data clusters of this segment.
        var index = firstData + 1
        var lastData = firstData
        while index < segment.clusters.count {
            if segment.clusters[index] != .zero {
                let run = index - lastData - 1
                if isStored(UInt64(run) * cluster) {
                    for zero in (lastData + 1)..<index { segment.clusters[zero] = .data }
                }
                lastData = index
            }
            index += 1
        }
        // The zeros after the last data cluster stay open: hand on the segment without them.
        let kept = lastData + 1
        segment.clusters = Array(segment.clusters[0..<kept])
        segment.length = kept * clusterSize
        try inner.write(segment)
        cursor = segment.guestOffset + UInt64(kept) * cluster
    }

    func copy(from source: ReadOnlyFile, at sourceOffset: UInt64, guestOffset: UInt64, length: UInt64) throws {
        try closeRun(at: guestOffset)
        try inner.copy(from: source, at: sourceOffset, guestOffset: guestOffset, length: length)
        let cluster = UInt64(clusterSize)
        cursor = (guestOffset + length + cluster - 1) / cluster * cluster
    }

    func finish() throws {
        try closeRun(at: end)
        try inner.finish()
    }
}
