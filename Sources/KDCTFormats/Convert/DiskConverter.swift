/// Options of a whole conversion: output format and its options, overwrite rule, pipeline settings.
public struct ConvertOptions: Sendable {
    /// RAW or QCOW2.
    public var outputFormat: ImageFormat = .raw
    /// QCOW2 output options: cluster size, compression and its codec.
    public var qcow2 = QCOW2Writer.Options()
    /// RAW output preallocation.
    public var rawPreallocation: RawPreallocation = .off
    /// Replace an existing destination.
    public var overwrite = false
    /// Workers, segment size, progress and cancellation.
    public var pipeline = PipelineOptions()
    /// Writing into an existing image or device, zeroing, flushing, sparseness, copy offloading, space check.
    public var destination = DestinationOptions()

    /// Default options: RAW output.
    public init(outputFormat: ImageFormat = .raw) { self.outputFormat = outputFormat }
}

/// Converts a `BlockDevice` into a RAW or QCOW2 image on an `OutputTarget`.
public enum DiskConverter {
    /// Makes the writer for `options.outputFormat` on `target`.
    static func makeWriter(target: any OutputTarget, virtualSize: UInt64,
                                  options: ConvertOptions) throws -> any ImageWriter {
        let virtualSize = options.destination.outputVirtualSize ?? virtualSize
        let writer = try makeFormatWriter(target: target, virtualSize: virtualSize, options: options)
        // `-S`: only a minimum other than the writer's own granule changes anything.
        if let minimum = options.destination.minimumSparseRun, minimum == 0 || minimum > UInt64(writer.clusterSize) {
            return MinimumSparseRunWriter(wrapping: writer, minimumRun: minimum, virtualSize: virtualSize)
        }
        return writer
    }

    private static func makeFormatWriter(target: any OutputTarget, virtualSize: UInt64,
                                         options: ConvertOptions) throws -> any RangeCopyingWriter {
        switch options.outputFormat {
        case .raw:
            if options.qcow2.compress {
                throw KDCTError(.invalidArgument, "compressed clusters need a qcow2 output", field: "qcow2.compress")
            }
            return try RawWriter(target: target, virtualSize: virtualSize, preallocation: options.rawPreallocation)
        case .qcow2:
            return try QCOW2Writer(target: target, virtualSize: virtualSize, options: options.qcow2)
        default:
            throw KDCTError(.unsupported, "cannot write \(options.outputFormat) images; output formats are raw and qcow2",
                            field: "outputFormat")
        }
    }

    /// Converts `source` onto `target`, committing it on success and aborting it (nothing under the final name)
    /// on any error.
    @discardableResult
    public static func convert(_ source: any BlockDevice, to target: any OutputTarget,
                               options: ConvertOptions) throws -> ConvertResult {
        do {
            let writer = try makeWriter(target: target, virtualSize: source.virtualSize, options: options)
            let result: ConvertResult
            if options.destination.copyOffload, let copying = writer as? any RangeCopyingWriter, writer.compression == nil {
                result = try CopyOffloadConversion.run(source: source, writer: copying, options: options.pipeline)
            } else {
                result = try ConversionPipeline.run(source: source, writer: writer, options: options.pipeline)
            }
            // A cancellation that arrived after the last segment still leaves nothing under the final name.
            if options.pipeline.isCancelled?() == true { throw KDCTError(.cancelled, "conversion cancelled") }
            try target.commit()
            return result
        } catch {
            target.abort()
            throw error
        }
    }

    /// Converts `source` to the local file `destination` (written under a temporary name, renamed when complete).
    @discardableResult
    public static func convert(_ source: any BlockDevice, toFile destination: String,
                               options: ConvertOptions) throws -> ConvertResult {
        if let canonicalDestination = FilePaths.canonical(destination) {
            var info: ImageInfo? = source.info
            while let current = info {
                if FilePaths.canonical(current.filename) == canonicalDestination {
                    throw KDCTError(.invalidArgument, "destination is the source image \(current.filename); inputs are never written",
                                    file: destination)
                }
                info = current.backingChain.first
            }
        }
        let prepared = try OutputDestination.open(destination, for: source, options: options)
        return try convert(source, to: prepared.target, options: prepared.options)
    }
}
