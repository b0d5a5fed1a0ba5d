/// One opened extent of a VMDK disk, mapped in extent-relative bytes `[0, byteCount)`.
///
/// Implementations are immutable after open (a sparse extent's table cache is internally locked), so the disk is
/// read by many threads at once.
protocol VMDKExtentReader: Sendable {
    /// Guest bytes this extent covers (the descriptor's sector count x 512).
    var byteCount: UInt64 { get }
    /// The file the extent reads, if it has one.
    var file: ReadOnlyFile? { get }
    /// The run at extent-relative `offset` (before `end`, extent-relative too); see `MappedDevice.mapping(at:upTo:)`.
    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun
}

/// A `ZERO` extent, or a `NOACCESS` one: no file, reads as zeros.
struct VMDKZeroExtent: VMDKExtentReader {
    let byteCount: UInt64
    var file: ReadOnlyFile? { nil }

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun { .zero(end - offset) }
}

/// A `FLAT` or `VMFS` extent: guest bytes are file bytes from `startOffset`. Holes in the file (SEEK_HOLE) are zero
/// runs, so a sparse `-flat.vmdk` is walked in metadata time.
struct VMDKFlatExtent: VMDKExtentReader {
    let flatFile: ReadOnlyFile
    /// Byte offset of the extent's first guest byte in the file.
    let startOffset: UInt64
    let byteCount: UInt64
    var file: ReadOnlyFile? { flatFile }

    /// Checks that the file holds the whole extent (a short flat file would otherwise read as zeros).
    init(file: ReadOnlyFile, startOffset: UInt64, byteCount: UInt64, lineNumber: Int, descriptorPath: String) throws {
        let (end, overflow) = startOffset.addingReportingOverflow(byteCount)
        if overflow || end > file.size {
            throw KDCTError(.truncated,
                            "flat extent \(FilePaths.lastComponent(of: file.path)) (line \(lineNumber)) needs \(overflow ? "more than 2^64" : String(end)) bytes but the file has \(file.size)",
                            file: descriptorPath, field: "extent line \(lineNumber)")
        }
        flatFile = file
        self.startOffset = startOffset
        self.byteCount = byteCount
    }

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try FlatFile.mapping(flatFile, start: startOffset, at: offset, upTo: end)
    }
}

/// An extent named by a descriptor opened only to describe it (`info`): it cannot be read.
struct VMDKUnopenedExtent: VMDKExtentReader {
    let byteCount: UInt64
    let name: String
    var file: ReadOnlyFile? { nil }

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        throw KDCTError(.invalidArgument, "extent \"\(name)\" was not opened (references are only reported)", field: "extent")
    }
}
