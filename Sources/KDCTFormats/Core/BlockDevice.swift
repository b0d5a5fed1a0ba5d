/// A guest disk as a readable, mappable range of bytes: the one protocol every reader, chain and archive member
/// meets at (see docs/ARCHITECTURE.md, and FORMATS.md, "Mapping").
///
/// Implementations decode their metadata at open and keep it immutable, so one instance serves many threads
/// without locks on the data path; table caches, if any, are bounded and internally synchronised.
public protocol BlockDevice: Sendable {
    /// Guest-visible size in bytes.
    var virtualSize: UInt64 { get }
    /// What the image says about itself.
    var info: ImageInfo { get }
    /// The run that starts at `offset`, in which every byte has one status, file and depth. Metadata only: never
    /// reads guest data. Neighbouring clusters that continue each other are merged.
    ///
    /// `offset` must be below `virtualSize` and `maxLength` above 0, else the call throws `invalidArgument`.
    /// `maxLength` is clamped to the end of the disk, so `.max` asks for the run "to the end". The result starts at
    /// `offset` and is between 1 and `min(maxLength, virtualSize - offset)` bytes long.
    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent
    /// Fills `buffer` with guest bytes at `offset`. The range must lie within the disk (an empty buffer at
    /// `virtualSize` is allowed), else the call throws `invalidArgument`. Ranges not present read as zeros (or from
    /// the parent, in a chain).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Hints that guest bytes `[offset, offset + length)` are about to be read: starts reading the host ranges
    /// holding them (data, compressed units, in whichever layer of a chain) into the page cache without waiting,
    /// so a later `read` finds them there. Reads metadata (tables) as `extent` does, but never guest data into
    /// memory. A hint only: it never fails (errors surface in the `read` that follows), and it is clipped to the
    /// disk and to each host file, so nothing outside them is read. The default does nothing.
    func prefetch(at offset: UInt64, length: UInt64)
}

extension BlockDevice {
    /// Does nothing: a device with no host files to read ahead.
    public func prefetch(at offset: UInt64, length: UInt64) {}

    /// Throws `invalidArgument` unless `[offset, offset + length)` lies within the guest.
    public func checkRange(_ offset: UInt64, _ length: Int) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(length))
        if overflow || end > virtualSize {
            throw KDCTError(.invalidArgument,
                            "read of \(length) bytes at guest offset \(offset) goes past the virtual size \(virtualSize)",
                            file: info.filename)
        }
    }

    /// Every extent of the guest in order, merged where neighbours share a status.
    public func allExtents() throws -> [Extent] {
        var result: [Extent] = []
        try forEachExtent(from: 0, to: virtualSize) { result.append($0) }
        return result
    }

    /// Calls `body` for each extent covering `[start, end)`, merging neighbours that `canMerge`.
    public func forEachExtent(from start: UInt64 = 0, to end: UInt64, _ body: (Extent) throws -> Void) throws {
        var offset = start
        var pending: Extent?
        while offset < end {
            let extent = try self.extent(at: offset, maxLength: end - offset)
            guard extent.length > 0, extent.offset == offset, extent.length <= end - offset else {
                throw KDCTError(.corrupt, "reader returned an invalid extent \(extent) for offset \(offset)",
                                file: info.filename)
            }
            if var current = pending, current.canMerge(with: extent) {
                current.length += extent.length
                pending = current
            } else {
                if let current = pending { try body(current) }
                pending = extent
            }
            offset = extent.end
        }
        if let current = pending { try body(current) }
    }

    /// Reads `count` guest bytes at `offset` into a new array.
    public func readBytes(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }
}
