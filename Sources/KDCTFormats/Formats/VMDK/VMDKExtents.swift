/// One opened extent of a VMDK disk, addressed in extent-relative bytes `[0, byteCount)`.
///
/// Implementations are immutable after open (a sparse extent's table cache is internally locked), so the disk is
/// read by many threads at once.
protocol VMDKExtentReader: Sendable {
    /// Guest bytes this extent covers (the descriptor's sector count x 512).
    var byteCount: UInt64 { get }
    /// The run at extent-relative `offset`, at most `maxLength` long (offsets in the result are extent-relative).
    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent
    /// Reads extent-relative bytes; the range lies inside the extent.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
}

/// A `ZERO` extent, or a `NOACCESS` one: no file, reads as zeros.
struct VMDKZeroExtent: VMDKExtentReader {
    let byteCount: UInt64

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        Extent(offset: offset, length: min(maxLength, byteCount - offset), status: .zero)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }
}

/// A `FLAT` or `VMFS` extent: guest bytes are file bytes from `startOffset`. Holes in the file (SEEK_HOLE) are zero
/// extents, so a sparse `-flat.vmdk` is walked in metadata time.
struct VMDKFlatExtent: VMDKExtentReader {
    let file: ReadOnlyFile
    /// Byte offset of the extent's first guest byte in the file.
    let startOffset: UInt64
    let byteCount: UInt64
    /// Report host offsets in extents (only when the disk has a single file, so the offset is unambiguous).
    let reportsHostOffsets: Bool

    /// Checks that the file holds the whole extent (a short flat file would otherwise read as zeros).
    init(file: ReadOnlyFile, startOffset: UInt64, byteCount: UInt64, reportsHostOffsets: Bool, lineNumber: Int,
         descriptorPath: String) throws {
        let (end, overflow) = startOffset.addingReportingOverflow(byteCount)
        if overflow || end > file.size {
            throw KDCTError(.truncated,
                            "flat extent \(FilePaths.lastComponent(of: file.path)) (line \(lineNumber)) needs \(overflow ? "more than 2^64" : String(end)) bytes but the file has \(file.size)",
                            file: descriptorPath, field: "extent line \(lineNumber)")
        }
        self.file = file
        self.startOffset = startOffset
        self.byteCount = byteCount
        self.reportsHostOffsets = reportsHostOffsets
    }

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let length = min(maxLength, byteCount - offset)
        let start = startOffset + offset
        let limit = start + length
        guard let data = try file.nextData(from: start), data < limit else {
            return Extent(offset: offset, length: length, status: .zero)
        }
        if data > start { return Extent(offset: offset, length: data - start, status: .zero) }
        let hole = try file.nextHole(from: start)
        let end = max(min(hole, limit), start + 1)
        return Extent(offset: offset, length: end - start, status: .data, hostOffset: reportsHostOffsets ? start : nil)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try file.read(into: buffer, at: startOffset + offset, what: "flat extent data")
    }
}

/// An extent named by a descriptor opened only to describe it (`info`): it cannot be read.
struct VMDKUnopenedExtent: VMDKExtentReader {
    let byteCount: UInt64
    let name: String

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        throw KDCTError(.invalidArgument, "extent \"\(name)\" was not opened (references are only reported)", field: "extent")
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        throw KDCTError(.invalidArgument, "extent \"\(name)\" was not opened (references are only reported)", field: "extent")
    }
}
