/// A raw disk: guest byte N is file byte N. Holes (found with SEEK_DATA/SEEK_HOLE) are zero extents, so a
/// sparse raw file is walked in metadata time.
public final class RawImage: BlockDevice {
    /// The image file.
    public let file: ReadOnlyFile

    /// Wraps an open file as a raw disk.
    public init(file: ReadOnlyFile) { self.file = file }

    /// Registry entry point.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        RawImage(file: file)
    }

    public var virtualSize: UInt64 { file.size }

    public var info: ImageInfo {
        ImageInfo(format: .raw, filename: file.path, virtualSize: file.size, actualSize: file.allocatedSize)
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let limit = min(file.size, offset + maxLength)
        guard let data = try file.nextData(from: offset), data < limit else {
            return Extent(offset: offset, length: limit - offset, status: .zero)
        }
        if data > offset {
            return Extent(offset: offset, length: data - offset, status: .zero)
        }
        let hole = try file.nextHole(from: offset)
        let end = max(min(hole, limit), offset + 1)
        return Extent(offset: offset, length: end - offset, status: .data, hostOffset: offset)
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        let got = try file.readAvailable(into: buffer, at: offset)
        if got < buffer.count {
            // The file shrank since it was opened; what is gone reads as zeros, as for any hole.
            UnsafeMutableRawBufferPointer(rebasing: buffer[got...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }
}
