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
    /// Segments the read-ahead stage keeps requested from the source ahead of the workers
    /// (`posix_fadvise(WILLNEED)` on the host ranges, in guest order), so the disk has that many reads in flight
    /// whatever the worker count: 0 turns it off, at most `PipelineOptions.maxReadAhead`. The default,
    /// `PipelineOptions.defaultReadAhead`, was chosen by measurement (Benchmarks/RESULTS.md, "Cold cache").
    /// Output is byte-identical for every value.
    public var readAhead: Int = PipelineOptions.defaultReadAhead
    /// Called from the committing thread after each segment.
    public var progress: (@Sendable (ConvertProgress) -> Void)?
    /// Polled between segments; returning true aborts with `cancelled`.
    public var isCancelled: (@Sendable () -> Bool)?

    /// Default options.
    public init() {}

    /// The default read-ahead depth, in segments (16 segments of 4 MiB: 64 MiB requested ahead).
    public static let defaultReadAhead = 16
    /// The largest read-ahead depth accepted.
    public static let maxReadAhead = ReadAheadStage.maxDepth
}

/// The conversion pipeline: one extent walk cuts the guest into cluster-aligned segments; N workers read,
/// zero-detect (per cluster, word-wise) and compress segments in parallel; one committer hands them to the writer
/// strictly in guest order, so the output is byte-identical for any worker count. At most `2N+1` segments are in
/// flight, which bounds memory.
public enum ConversionPipeline {
    /// What the pipeline's threads share. Segment `i` is planned by a worker (under the lock, so the extent walk
    /// stays sequential), encoded outside the lock, parked in `ready[i]`, and written by the committer when
    /// `committed == i`; its buffer then returns to `free`.
    private struct Schedule: Sendable {
        var planner: SegmentPlanner
        /// Segments handed to workers so far.
        var planned = 0
        /// The planner has no more segments.
        var plannerDone = false
        /// Segments written so far, in guest order.
        var committed = 0
        /// Encoded segments waiting for their turn, by index.
        var ready: [Int: SegmentBuffer] = [:]
        /// Buffers no segment uses; a worker waits for one before it plans the next segment.
        var free: [SegmentBuffer]
        /// The first failure; every thread stops when it is set.
        var error: (any Error)?

        /// The committer's next segment is ready, or nothing more will come.
        var commitCanProceed: Bool { error != nil || ready[committed] != nil || (plannerDone && committed == planned) }
        /// A worker can plan the next segment, or should stop.
        var workerCanProceed: Bool { error != nil || plannerDone || !free.isEmpty }
    }

    /// One segment a worker has to read and encode.
    private struct Job {
        var index: Int
        var offset: UInt64
        var length: Int
        var segment: SegmentBuffer
    }

    /// Runs `source` through `writer`. The caller commits or aborts the writer's target.
    @discardableResult
    public static func run(source: any BlockDevice, writer: any ImageWriter,
                           options: PipelineOptions = PipelineOptions()) throws -> ConvertResult {
        let clusterSize = writer.clusterSize
        let workers = max(1, options.workers)
        try ReadAheadStage.validate(depth: options.readAhead, field: "readAhead")
        let planner = SegmentPlanner(device: source, alignment: UInt64(clusterSize), segmentSize: options.segmentSize)
        // The read-ahead walks its own copy of the planner: the same segments in the same order, a window ahead.
        var readAheadPlanner = planner
        let readAhead = options.readAhead == 0 ? nil : try ReadAheadStage(
            device: source, budget: UInt64(options.readAhead) * planner.segmentSize, ranges: { try readAheadPlanner.next() })
        defer { readAhead?.stop() }
        let cursor = readAhead?.cursor
        let compression = writer.compression
        let buffers = (0..<(workers * 2 + 1)).map { _ in
            SegmentBuffer(capacity: Int(planner.segmentSize), clusterSize: clusterSize, compressing: compression != nil)
        }
        let schedule = ConditionMutex(Schedule(planner: planner, free: buffers))

        var threads: [JoinableThread] = []
        do {
            for _ in 0..<workers {
                let compressor = try compression.map { try makeClusterCompressor($0) }
                threads.append(try JoinableThread {
                    workerLoop(schedule: schedule, source: source, compressor: compressor, readAhead: cursor)
                })
            }
        } catch {
            schedule.withLock { $0.error = $0.error ?? error }
        }

        var result = ConvertResult(virtualSize: source.virtualSize, dataBytesRead: 0, dataClusters: 0,
                                   compressedClusters: 0, zeroClusters: 0)
        // Commit in guest order.
        while let segment = schedule.withLock(when: \.commitCanProceed, { schedule -> SegmentBuffer? in
            schedule.error == nil ? schedule.ready.removeValue(forKey: schedule.committed) : nil
        }) {
            var failure: (any Error)?
            do {
                try commit(segment, to: writer, source: source, options: options, result: &result)
            } catch {
                failure = error
            }
            schedule.withLock { schedule in
                schedule.committed += 1
                schedule.free.append(segment)
                if let failure, schedule.error == nil { schedule.error = failure }
            }
            if failure != nil { break }
        }
        for thread in threads { thread.join() }
        readAhead?.stop()
        if let error = schedule.withLock({ $0.error }) { throw error }
        try writer.finish()
        options.progress?(ConvertProgress(processedBytes: source.virtualSize, totalBytes: source.virtualSize,
                                          dataBytesRead: result.dataBytesRead))
        return result
    }

    /// Writes one segment, counts its clusters and reports progress (on the committing thread).
    private static func commit(_ segment: SegmentBuffer, to writer: any ImageWriter, source: any BlockDevice,
                               options: PipelineOptions, result: inout ConvertResult) throws {
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
    }

    private static func workerLoop(schedule: ConditionMutex<Schedule>, source: any BlockDevice,
                                   compressor: (any ClusterCompressor)?, readAhead: ReadAheadStage.Cursor?) {
        // A free buffer means fewer than `2N+1` segments are in flight.
        while let job = schedule.withLock(when: \.workerCanProceed, { schedule -> Job? in
            guard schedule.error == nil, !schedule.plannerDone else { return nil }
            do {
                guard let range = try schedule.planner.next() else {
                    schedule.plannerDone = true
                    return nil
                }
                schedule.planned += 1
                return Job(index: schedule.planned - 1, offset: range.offset, length: Int(range.length),
                           segment: schedule.free.removeLast())
            } catch {
                schedule.error = error
                return nil
            }
        }) {
            readAhead?.advance(by: UInt64(job.length))
            do {
                try encode(segment: job.segment, offset: job.offset, length: job.length, source: source,
                           compressor: compressor)
                schedule.withLock { $0.ready[job.index] = job.segment }
            } catch {
                schedule.withLock { schedule in
                    if schedule.error == nil { schedule.error = error }
                    schedule.free.append(job.segment)
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
