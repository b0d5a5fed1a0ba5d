import CKDCTShims

/// Progress of a conversion, reported after each committed segment.
public struct ConvertProgress: Sendable {
    /// Guest bytes processed so far (data and skipped zero ranges), in guest order.
    public var processedBytes: UInt64
    /// The guest size.
    public var totalBytes: UInt64
    /// Guest bytes that held data and were read.
    public var dataBytesRead: UInt64
    /// Fraction done, 0...1.
    public var fraction: Double { totalBytes == 0 ? 1 : Double(processedBytes) / Double(totalBytes) }

    /// A progress report.
    package init(processedBytes: UInt64, totalBytes: UInt64, dataBytesRead: UInt64) {
        self.processedBytes = processedBytes
        self.totalBytes = totalBytes
        self.dataBytesRead = dataBytesRead
    }
}

/// What a conversion did.
public struct ConvertResult: Sendable {
    /// The guest size.
    public var virtualSize: UInt64
    /// Guest bytes read from the source (clusters with data).
    public var dataBytesRead: UInt64
    /// Clusters stored as data, compressed, and skipped as zero.
    public var dataClusters: Int
    /// Clusters stored compressed.
    public var compressedClusters: Int
    /// Clusters found to be zero and not stored.
    public var zeroClusters: Int
}

/// Options of the conversion pipeline itself (the output format's options go to its writer).
public struct PipelineOptions: Sendable {
    /// Worker threads that read, zero-detect and compress; default: the number of CPUs.
    public var workers: Int = onlineProcessorCount()
    /// Guest bytes per segment (rounded to whole clusters).
    public var segmentSize: UInt64 = 4 << 20
    /// Called from the committing thread after each segment.
    public var progress: (@Sendable (ConvertProgress) -> Void)?
    /// Polled between segments; returning true aborts with `cancelled`.
    public var isCancelled: (@Sendable () -> Bool)?

    /// Default options.
    public init() {}
}

/// The conversion pipeline: one extent walk cuts the guest into cluster-aligned segments; N workers read,
/// zero-detect (per cluster, word-wise) and compress segments in parallel; one committer hands them to the writer
/// strictly in guest order, so the output is byte-identical for any worker count. At most `2N+1` segments are in
/// flight, which bounds memory.
public enum ConversionPipeline {
    private final class State: @unchecked Sendable {
        let lock = ConditionLock()
        var planner: SegmentPlanner
        var planned = 0
        var plannerDone = false
        var committed = 0
        var ready: [Int: SegmentBuffer] = [:]
        var free: [SegmentBuffer] = []
        var error: (any Error)?
        init(planner: SegmentPlanner) { self.planner = planner }
    }

    /// Runs `source` through `writer`. The caller commits or aborts the writer's target.
    @discardableResult
    public static func run(source: any BlockDevice, writer: any ImageWriter,
                           options: PipelineOptions = PipelineOptions()) throws -> ConvertResult {
        let clusterSize = writer.clusterSize
        let workers = max(1, options.workers)
        let window = workers * 2 + 1
        let planner = SegmentPlanner(device: source, alignment: UInt64(clusterSize), segmentSize: options.segmentSize)
        let segmentCapacity = Int(planner.segmentSize)
        let state = State(planner: planner)
        let compression = writer.compression
        for _ in 0..<window {
            state.free.append(SegmentBuffer(capacity: segmentCapacity, clusterSize: clusterSize,
                                            compressing: compression != nil))
        }

        var threads: [JoinableThread] = []
        var startError: (any Error)?
        for _ in 0..<workers {
            do {
                let compressor = try compression.map { try makeClusterCompressor($0) }
                threads.append(try JoinableThread {
                    workerLoop(state: state, source: source, compressor: compressor)
                })
            } catch {
                startError = error
                break
            }
        }
        if let startError {
            state.lock.withLock { state.error = state.error ?? startError; state.lock.broadcast() }
        }

        var result = ConvertResult(virtualSize: source.virtualSize, dataBytesRead: 0, dataClusters: 0,
                                   compressedClusters: 0, zeroClusters: 0)
        var commitError: (any Error)?
        // Commit in guest order.
        while true {
            state.lock.lock()
            while state.error == nil && state.ready[state.committed] == nil
                    && !(state.plannerDone && state.committed == state.planned) {
                state.lock.wait()
            }
            guard state.error == nil, let segment = state.ready.removeValue(forKey: state.committed) else {
                state.lock.unlock()
                break
            }
            state.lock.unlock()
            do {
                if options.isCancelled?() == true { throw KDCTError(.cancelled, "conversion cancelled") }
                try writer.write(segment)
                for encoding in segment.clusters {
                    switch encoding {
                    case .zero: result.zeroClusters += 1
                    case .data: result.dataClusters += 1
                    case .compressed: result.compressedClusters += 1
                    }
                }
                result.dataBytesRead += UInt64(segment.length)
                let processed = min(source.virtualSize, segment.guestOffset + UInt64(segment.length))
                options.progress?(ConvertProgress(processedBytes: processed, totalBytes: source.virtualSize,
                                                  dataBytesRead: result.dataBytesRead))
            } catch {
                commitError = error
            }
            state.lock.withLock {
                state.committed += 1
                state.free.append(segment)
                if let commitError, state.error == nil { state.error = commitError }
                state.lock.broadcast()
            }
            if commitError != nil { break }
        }
        for thread in threads { thread.join() }
        if let error = state.error { throw error }
        try writer.finish()
        options.progress?(ConvertProgress(processedBytes: source.virtualSize, totalBytes: source.virtualSize,
                                          dataBytesRead: result.dataBytesRead))
        return result
    }

    private static func workerLoop(state: State, source: any BlockDevice, compressor: (any ClusterCompressor)?) {
        while true {
            state.lock.lock()
            // A free buffer means fewer than `window` segments are in flight.
            while state.error == nil && !state.plannerDone && state.free.isEmpty {
                state.lock.wait()
            }
            if state.error != nil || state.plannerDone {
                state.lock.unlock()
                return
            }
            let next: (offset: UInt64, length: UInt64)?
            do {
                next = try state.planner.next()
            } catch {
                state.error = error
                state.lock.broadcast()
                state.lock.unlock()
                return
            }
            guard let range = next else {
                state.plannerDone = true
                state.lock.broadcast()
                state.lock.unlock()
                return
            }
            let index = state.planned
            state.planned += 1
            let segment = state.free.removeLast()
            state.lock.unlock()

            do {
                try encode(segment: segment, offset: range.offset, length: Int(range.length), source: source,
                           compressor: compressor)
                state.lock.withLock {
                    state.ready[index] = segment
                    state.lock.broadcast()
                }
            } catch {
                state.lock.withLock {
                    if state.error == nil { state.error = error }
                    state.free.append(segment)
                    state.lock.broadcast()
                }
                return
            }
        }
    }

    /// Reads a segment and classifies each cluster: zero, data, or compressed (when it shrinks).
    static func encode(segment: SegmentBuffer, offset: UInt64, length: Int, source: any BlockDevice,
                       compressor: (any ClusterCompressor)?) throws {
        segment.guestOffset = offset
        segment.length = length
        let readable = Int(min(UInt64(length), source.virtualSize - offset))
        try source.read(into: UnsafeMutableRawBufferPointer(rebasing: segment.data[0..<readable]), at: offset)
        if readable < length {
            UnsafeMutableRawBufferPointer(rebasing: segment.data[readable..<length]).initializeMemory(as: UInt8.self, repeating: 0)
        }
        let clusterSize = segment.clusterSize
        let count = length / clusterSize
        var clusters = [ClusterEncoding](repeating: .zero, count: count)
        var compressedUsed = 0
        for index in 0..<count {
            let bytes = segment.clusterBytes(index)
            if kdct_is_zero(bytes.baseAddress, clusterSize) != 0 { continue }
            guard let compressor, let output = segment.compressed else {
                clusters[index] = .data
                continue
            }
            // Only a result smaller than the cluster is kept; otherwise the cluster is stored as is.
            let room = UnsafeMutableRawBufferPointer(rebasing: output[compressedUsed..<(compressedUsed + clusterSize - 1)])
            if let size = try compressor.compress(bytes, into: room), size < clusterSize {
                clusters[index] = .compressed(offset: compressedUsed, length: size)
                compressedUsed += size
            } else {
                clusters[index] = .data
            }
        }
        segment.clusters = clusters
    }
}
