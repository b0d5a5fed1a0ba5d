/// A new virtual size, as qemu-img resize takes it: absolute, or relative to the current size.
public enum SizeChange: Sendable, Equatable {
    /// Exactly this many bytes.
    case to(UInt64)
    /// The current size plus this many bytes (`+SIZE`).
    case grow(by: UInt64)
    /// The current size minus this many bytes (`-SIZE`).
    case shrink(by: UInt64)
}

/// How `ImageResizer` resizes.
public struct ResizeOptions: Sendable {
    /// The declared format (the content must agree); probed when nil.
    public var format: ImageFormat?
    /// Allow a smaller size (`--shrink`): data past the new end is dropped.
    public var shrink = false
    /// How the new range is allocated (`--preallocation`): `metadata` (QCOW2 only), `falloc`, `full`.
    public var preallocation: MeasureOptions.Preallocation = .off
    /// Limits for reading the image's tables, and the reference policy for its backing file.
    public var openOptions = OpenOptions()

    /// Defaults: grow only, no preallocation.
    public init() {}
}

/// What a resize did.
public struct ResizeResult: Sendable, Equatable {
    /// The image's format.
    public var format: ImageFormat
    /// The virtual size before.
    public var oldSize: UInt64
    /// The virtual size after.
    public var newSize: UInt64
}

/// Resizes RAW and QCOW2 images in place (`kdct-native resize`), as `qemu-img resize` does, with its rules and
/// messages: a smaller size needs `shrink`; sizes must be positive; a QCOW2 size a multiple of 512.
///
/// Resizing changes the user's file by nature, so it is made crash-safe: a RAW file changes length with one
/// `ftruncate` (preallocation then reserves or zeroes only the new range); a QCOW2 image gets its new metadata
/// written and flushed before the header switches to it in one sector write (`QCOW2Resize`), so an interruption
/// leaves the old image or the new one, at worst with leaked clusters. Not atomic: a preallocation interrupted part
/// way (the size has changed, part of the new range is not reserved), and the file's length after an interrupted
/// QCOW2 resize (it may keep appended clusters, as leaks). An image another process holds (a running VM) is
/// refused, and the image is claimed against qemu while it changes. A RAW block device cannot grow; QCOW2 on a
/// block device grows within the device.
public enum ImageResizer {
    /// Resizes the image at `path` by `change`.
    @discardableResult
    public static func resize(_ path: String, by change: SizeChange, options: ResizeOptions = ResizeOptions()) throws -> ResizeResult {
        try ImageOpener.refuseTemporaryOutput(path)
        let destination = try DestinationPath.inspect(path)
        guard destination.exists else { throw KDCTError(.notFound, "no such file", file: path) }
        let reader = try ReadOnlyFile(path: destination.resolved)
        var openOptions = options.openOptions
        openOptions.format = options.format
        let format = try ImageOpener.detectFormat(reader, options: openOptions)
        guard format == .raw || format == .qcow2 else {
            throw KDCTError(.unsupported, "resize changes raw and qcow2 images; this image is \(format.qemuName) (convert it first)",
                            file: path, field: "format")
        }
        let isDevice = if case .blockDevice = destination.kind { true } else { false }
        let file = try attributing(to: path) { try WritableFile(openingExisting: destination.resolved) }
        try claimImage(descriptor: file.descriptor, path: path)
        let capacity = isDevice ? try file.blockDeviceSize() : nil
        let image = format == .qcow2 ? try QCOW2Image(file: reader, limits: openOptions.limits) : nil
        let oldSize = image?.virtualSize ?? capacity ?? reader.size
        let newSize = try target(of: change, from: oldSize, path: path)
        if newSize < oldSize {
            guard options.shrink else {
                throw KDCTError(.invalidArgument,
                                "the new size (\(newSize) bytes) is smaller than the image (\(oldSize) bytes): use the --shrink option to perform a shrink operation; shrinking deletes all data beyond the new end",
                                file: path, field: "shrink")
            }
            if options.preallocation != .off {
                throw KDCTError(.invalidArgument, "preallocation can only be used for growing images",
                                file: path, field: "preallocation")
            }
        }
        let result = ResizeResult(format: format, oldSize: oldSize, newSize: newSize)
        do {
            if let image {
                try resizeQCOW2(image, file: file, path: path, capacity: capacity, from: oldSize, to: newSize,
                                options: options)
            } else {
                try resizeRaw(file, path: path, capacity: capacity, from: oldSize, to: newSize,
                              preallocation: options.preallocation)
            }
        } catch let error as KDCTError {
            throw error.inFile(path)
        }
        try attributing(to: path) { try file.close() }
        return result
    }

    /// The size `change` asks for, from `current`: positive, as qemu-img requires.
    static func target(of change: SizeChange, from current: UInt64, path: String) throws -> UInt64 {
        let size: UInt64
        switch change {
        case let .to(bytes): size = bytes
        case let .grow(by: bytes):
            let (sum, overflow) = current.addingReportingOverflow(bytes)
            guard !overflow else { throw KDCTError.limit("new size", value: .max, limit: ImageLimits().maxVirtualSize, file: path) }
            size = sum
        case let .shrink(by: bytes):
            size = bytes >= current ? 0 : current - bytes
        }
        guard size > 0 else {
            throw KDCTError(.invalidArgument, "the new image size must be positive", file: path, field: "size")
        }
        try ImageLimits.check("new size", size, max: ImageLimits().maxVirtualSize, file: path)
        return size
    }

    private static func resizeRaw(_ file: WritableFile, path: String, capacity: UInt64?, from oldSize: UInt64,
                                  to newSize: UInt64, preallocation: MeasureOptions.Preallocation) throws {
        if preallocation == .metadata {
            throw KDCTError(.invalidArgument, "a raw image has no metadata to preallocate (preallocation=metadata)",
                            field: "preallocation")
        }
        if capacity != nil {
            // A device's size is the device's: it cannot grow, and a smaller guest needs no change.
            guard newSize <= oldSize else {
                throw KDCTError(.invalidArgument, "a block device cannot grow (resize the volume instead)", field: "size")
            }
            guard preallocation == .off else {
                throw KDCTError(.invalidArgument, "preallocation applies to files; a device is written in place",
                                field: "preallocation")
            }
            return
        }
        try file.truncate(to: newSize)
        if newSize > oldSize {
            switch preallocation {
            case .falloc: try file.allocate(offset: oldSize, length: newSize - oldSize)
            case .full:
                try ZeroBuffer.shared.forEachChunk(of: newSize - oldSize) { chunk, done in try file.write(chunk, at: oldSize + done) }
            case .off, .metadata: break
            }
        }
        try file.sync()
    }

    private static func resizeQCOW2(_ image: QCOW2Image, file: WritableFile, path: String, capacity: UInt64?,
                                    from oldSize: UInt64, to newSize: UInt64, options: ResizeOptions) throws {
        guard newSize % 512 == 0 else {
            throw KDCTError(.invalidArgument, "the new size (\(newSize) bytes) must be a multiple of 512 for qcow2",
                            field: "size")
        }
        guard newSize != oldSize else { return }
        var resize = try QCOW2Resize(path: path, writable: file, image: image, capacity: capacity,
                                     limits: options.openOptions.limits)
        if newSize < oldSize { return try resize.shrink(to: newSize) }
        var backingSize: UInt64?
        if let backing = image.backingFileName {
            backingSize = try ImageOpener.openBacking(backing, format: image.header.backingFormat.flatMap { ImageFormat(name: $0) },
                                                      forImage: path, options: options.openOptions).device.virtualSize
        }
        try resize.grow(to: newSize, preallocation: options.preallocation, backingSize: backingSize)
    }
}
