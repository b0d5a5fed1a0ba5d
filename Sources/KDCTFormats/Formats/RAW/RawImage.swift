/// A raw disk: guest byte N is file byte N. Holes (found with SEEK_DATA/SEEK_HOLE) are zero extents, so a
/// sparse raw file is walked in metadata time.
final class RawImage: MappedDevice {
    /// The image file.
    let file: ReadOnlyFile
    let hostFileNames: HostFileNames

    /// Wraps an open file as a raw disk.
    init(file: ReadOnlyFile) {
        self.file = file
        hostFileNames = HostFileNames(file)
    }

    /// Registry entry point.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        RawImage(file: file)
    }

    var virtualSize: UInt64 { file.size }

    var info: ImageInfo {
        ImageInfo(format: .raw, filename: file.path, virtualSize: file.size, actualSize: file.allocatedSize)
    }

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try FlatFile.mapping(file, start: 0, at: offset, upTo: end)
    }
}
