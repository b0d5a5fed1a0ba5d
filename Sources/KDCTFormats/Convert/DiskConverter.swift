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

    /// Default options: RAW output.
    public init(outputFormat: ImageFormat = .raw) { self.outputFormat = outputFormat }
}

/// Converts a `BlockDevice` into a RAW or QCOW2 image on an `OutputTarget`.
public enum DiskConverter {
    /// Makes the writer for `options.outputFormat` on `target`.
    static func makeWriter(target: any OutputTarget, virtualSize: UInt64,
                                  options: ConvertOptions) throws -> any ImageWriter {
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
            let result = try ConversionPipeline.run(source: source, writer: writer, options: options.pipeline)
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
        let target = try LocalFileTarget(destination: destination, overwrite: options.overwrite)
        return try convert(source, to: target, options: options)
    }
}
