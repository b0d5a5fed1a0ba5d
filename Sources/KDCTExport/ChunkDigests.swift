import Crypto
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// A byte range of a file.
public struct ByteRange: Sendable, Equatable, Hashable {
    /// First byte.
    public var start: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// One past the last byte.
    public var end: UInt64 { start + length }

    /// A range.
    public init(start: UInt64, length: UInt64) {
        self.start = start
        self.length = length
    }
}

/// How a file is cut into chunks whose SHA-256 digests are compared with the host's: verification reports its
/// progress chunk by chunk, and `--resume` keeps every chunk that already matches and resends only the others
/// (whatever order parallel streams wrote them in). Chunks are 64 MiB, or larger for files over 128 GiB so a
/// file never has more than 2048 of them.
enum ChunkLayout {
    /// The chunk size for a file of `size` bytes.
    static func chunkSize(forFileSize size: UInt64) -> UInt64 {
        let base: UInt64 = 64 << 20
        let perChunk = (size + 2047) / 2048
        return max(base, (perChunk + base - 1) / base * base)
    }

    /// `[start, end)` cut into chunks of `chunkSize` bytes counted from `start` (the last one shorter).
    static func chunks(from start: UInt64, to end: UInt64, chunkSize: UInt64) -> [ByteRange] {
        var ranges: [ByteRange] = []
        var position = start
        while position < end {
            let length = min(chunkSize, end - position)
            ranges.append(ByteRange(start: position, length: length))
            position += length
        }
        return ranges
    }

    /// The chunks of a whole file of `size` bytes.
    static func chunks(ofFileSize size: UInt64) -> [ByteRange] {
        chunks(from: 0, to: size, chunkSize: chunkSize(forFileSize: size))
    }
}

/// SHA-256 of local file ranges, read sequentially; holes (`SEEK_HOLE`) are hashed as zeros without being read.
struct LocalDigester {
    let file: ReadOnlyFile
    var cancellation: CancellationToken?

    /// The digest of each range (ranges in increasing order, not overlapping) and, with `wholeFile`, the
    /// SHA-256 of the whole file (ranges must then cover it). `progress` gets the bytes hashed so far.
    func digests(of ranges: [ByteRange], wholeFile: Bool,
                 progress: ((UInt64) -> Void)? = nil) throws -> (ranges: [String], whole: String?) {
        var whole = wholeFile ? SHA256() : nil
        var results: [String] = []
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        for range in ranges {
            var hasher = SHA256()
            var position = range.start
            while position < range.end {
                try cancellation?.check()
                let dataStart = min(try file.nextData(from: position) ?? range.end, range.end)
                if dataStart > position {
                    WrittenContentDigest.hashZeros(&hasher, count: dataStart - position)
                    if whole != nil { WrittenContentDigest.hashZeros(&whole!, count: dataStart - position) }
                    done += dataStart - position
                    position = dataStart
                    continue
                }
                let dataEnd = min(max(try file.nextHole(from: position), position + 1), range.end)
                let count = Int(min(UInt64(chunk), dataEnd - position))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                try file.read(into: slice, at: position, what: "local data")
                hasher.update(bufferPointer: UnsafeRawBufferPointer(slice))
                whole?.update(bufferPointer: UnsafeRawBufferPointer(slice))
                position += UInt64(count)
                done += UInt64(count)
                progress?(done)
            }
            results.append(TextEncoding.hex(hasher.finalize()))
            progress?(done)
        }
        return (results, whole.map { TextEncoding.hex($0.finalize()) })
    }
}

/// Local digests computed on a thread of their own while the caller sends or waits for the host. Released
/// without being asked for its result (a failure), it stops at the next 4 MiB instead of hashing the rest of the
/// file first.
final class LocalHashing: Sendable {
    private let stop: CancellationToken
    private let work: BackgroundWork<(ranges: [String], whole: String?)>

    /// Starts hashing `ranges` of `file` (and the whole file with `wholeFile`); `progress` gets the bytes done.
    init(file: ReadOnlyFile, ranges: [ByteRange], wholeFile: Bool, cancellation: CancellationToken?,
         progress: (@Sendable (UInt64) -> Void)? = nil) throws {
        let stop = CancellationToken(parent: cancellation)
        self.stop = stop
        work = try BackgroundWork {
            try LocalDigester(file: file, cancellation: stop).digests(of: ranges, wholeFile: wholeFile, progress: progress)
        }
    }

    deinit { stop.cancel() }

    /// Waits for the digests.
    func result() throws -> (ranges: [String], whole: String?) { try work.join() }
}
