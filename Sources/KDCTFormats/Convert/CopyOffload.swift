/// `convert -C` (copy offloading): guest clusters that the source stores uncompressed, contiguously, in a file
/// are copied by the kernel from that file to the output (`copy_file_range`: a reflink on btrfs/XFS, a server-side
/// copy on NFS 4.2, an in-kernel copy elsewhere), without being read into memory or zero-detected, as qemu-img's
/// `-C` does. Everything else (compressed data, ranges a format transforms, clusters a data run covers only in
/// part) goes through the normal read path. Runs in guest order on one thread: the kernel does the copying.
///
/// Which file holds an extent is known for single-file formats (RAW, QCOW2 without an external data file, QED,
/// VDI, VHD, VHDX, QCOW): the extent's layer file. VMDK extents live in other files, so VMDK data is read.
enum CopyOffloadConversion {
    /// Formats whose extents' host offsets are offsets in the layer's own file.
    static let singleFileFormats: Set<ImageFormat> = [.raw, .qcow2, .qed, .vdi, .vhd, .vhdx, .qcow]
    /// Bytes copied per kernel call between cancellation checks.
    static let copyStep: UInt64 = 64 << 20

    /// Converts `source` through `writer`; the caller commits or aborts the writer's target.
    static func run(source: any BlockDevice, writer: any RangeCopyingWriter, options: PipelineOptions) throws -> ConvertResult {
        var run = Run(source: source, writer: writer, options: options)
        try source.forEachExtent(to: source.virtualSize) { extent in
            guard extent.status == .data else { return }
            try run.add(extent)
        }
        try run.flushReads()
        try writer.finish()
        options.progress?(ConvertProgress(processedBytes: source.virtualSize, totalBytes: source.virtualSize,
                                          dataBytesRead: run.result.dataBytesRead))
        return run.result
    }

    /// The walk's state: the next cluster not yet handled, and the clusters waiting to be read.
    private struct Run {
        let source: any BlockDevice
        let writer: any RangeCopyingWriter
        let options: PipelineOptions
        let cluster: UInt64
        let clusterCount: UInt64
        /// The first cluster not yet copied or queued for reading.
        var next: UInt64 = 0
        /// Clusters `[start, end)` queued for the read path.
        var pendingRead: (start: UInt64, end: UInt64)?
        var hostFiles: [Int: ReadOnlyFile?] = [:]
        var result: ConvertResult
        let segment: SegmentBuffer

        init(source: any BlockDevice, writer: any RangeCopyingWriter, options: PipelineOptions) {
            self.source = source
            self.writer = writer
            self.options = options
            cluster = UInt64(writer.clusterSize)
            clusterCount = (source.virtualSize + cluster - 1) / cluster
            result = ConvertResult(virtualSize: source.virtualSize, dataBytesRead: 0, dataClusters: 0,
                                   compressedClusters: 0, zeroClusters: 0)
            let segmentClusters = max(1, Int(options.segmentSize / cluster))
            segment = SegmentBuffer(capacity: segmentClusters * writer.clusterSize, clusterSize: writer.clusterSize,
                                    compressing: false)
        }

        mutating func add(_ extent: Extent) throws {
            let first = max(extent.offset / cluster, next)
            let last = (extent.end - 1) / cluster + 1
            guard first < last else { return }
            guard let host = extent.hostOffset, !extent.compressed, let file = try hostFile(depth: extent.depth) else {
                return try queueRead(first, last)
            }
            // Clusters wholly inside the extent (the disk's last cluster may stop short at the end).
            let wholeStart = max((extent.offset + cluster - 1) / cluster, first)
            let wholeEnd = extent.end == source.virtualSize ? last : extent.end / cluster
            guard wholeStart < wholeEnd else { return try queueRead(first, last) }
            try queueRead(first, wholeStart)
            try flushReads()
            var start = wholeStart * cluster
            let end = min(wholeEnd * cluster, source.virtualSize)
            while start < end {
                try checkCancelled()
                let length = min(copyStep, end - start)
                try writer.copy(from: file, at: host + (start - extent.offset), guestOffset: start, length: length)
                start += length
                result.dataClusters += Int((length + cluster - 1) / cluster)
                report(start)
            }
            next = wholeEnd
            try queueRead(wholeEnd, last)
        }

        /// Queues clusters `[start, end)` (those before `next` are already handled) for the read path.
        mutating func queueRead(_ start: UInt64, _ end: UInt64) throws {
            let start = max(start, next)
            guard start < end else { return }
            if let pending = pendingRead, pending.end == start {
                pendingRead = (pending.start, end)
            } else {
                // Not contiguous: the earlier queue is read first (guest order).
                try flushReads()
                pendingRead = (start, end)
            }
            next = end
        }

        /// Reads, zero-detects and writes the queued clusters, a segment at a time.
        mutating func flushReads() throws {
            guard let pending = pendingRead else { return }
            pendingRead = nil
            var start = pending.start
            let segmentClusters = UInt64(segment.data.count) / cluster
            while start < pending.end {
                try checkCancelled()
                let count = min(segmentClusters, pending.end - start)
                try ConversionPipeline.encode(segment: segment, offset: start * cluster, length: Int(count * cluster),
                                              source: source, compressor: nil)
                try writer.write(segment)
                for encoding in segment.clusters {
                    if encoding == .zero { result.zeroClusters += 1 } else { result.dataClusters += 1 }
                }
                result.dataBytesRead += UInt64(segment.length)
                start += count
                report(min(start * cluster, source.virtualSize))
            }
        }

        /// The file holding extents of layer `depth`, when its extents' host offsets are offsets in it.
        mutating func hostFile(depth: Int) throws -> ReadOnlyFile? {
            if let known = hostFiles[depth] { return known }
            let info = depth == 0 ? source.info : (depth <= source.info.backingChain.count ? source.info.backingChain[depth - 1] : nil)
            var file: ReadOnlyFile?
            if let info, CopyOffloadConversion.singleFileFormats.contains(info.format),
               info.formatSpecific["data-file"] == nil, FilePaths.isRegularFile(info.filename) {
                file = try ReadOnlyFile(path: info.filename)
            }
            hostFiles[depth] = file
            return file
        }

        func checkCancelled() throws {
            if options.isCancelled?() == true { throw KDCTError(.cancelled, "conversion cancelled") }
        }

        func report(_ processed: UInt64) {
            options.progress?(ConvertProgress(processedBytes: processed, totalBytes: source.virtualSize,
                                              dataBytesRead: result.dataBytesRead))
        }
    }
}
