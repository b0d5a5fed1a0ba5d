import Crypto
import KDCTFormats

/// The SHA-256 of one byte range of a file.
public struct RangeDigest: Sendable, Equatable {
    /// First byte.
    public var start: UInt64
    /// Length in bytes.
    public var length: UInt64
    /// Lower-case hex SHA-256.
    public var sha256: String
    /// One past the last byte.
    public var end: UInt64 { start + length }
}

/// 1 MiB of zeros, hashed for ranges that are never written (holes).
private let zeroBlock = [UInt8](repeating: 0, count: 1 << 20)

/// SHA-256 of what a writer put into a file, computed as the bytes go by, so the remote copy can be verified
/// without reading anything back locally (there is no local copy in a direct conversion). The file is digested
/// in chunks of `chunkSize` bytes (counted from the first write), one range each, so the host's hashing
/// reports its progress chunk by chunk.
///
/// Writes must move forward: the digest covers `[start, end)` where `start` is the first write's offset (or 0)
/// and gaps read as zeros. Our writers' one exception is the QCOW2 header, written last at offset 0 into the
/// cluster it reserved first: writes wholly before `start` are kept in memory (up to `patchLimit` bytes) and
/// digested as a separate leading range. Anything else is refused rather than silently mis-hashed.
final class WrittenContentDigest {
    /// How many bytes written before `start` may be held in memory.
    static let patchLimit = 32 << 20

    private let hashFromZero: Bool
    private let chunkSize: UInt64
    private var start: UInt64?
    private var hashed: UInt64 = 0
    private var hasher = SHA256()
    /// Where the chunk being hashed began.
    private var chunkStart: UInt64 = 0
    private var chunks: [RangeDigest] = []
    private var patches: [(offset: UInt64, bytes: [UInt8])] = []
    private var patchBytes = 0
    private var declaredLength: UInt64?
    private let name: String

    /// A digest of the file `name` (for messages). `hashFromZero` makes the digest start at offset 0 whatever
    /// the first write's offset.
    init(name: String, hashFromZero: Bool, chunkSize: UInt64 = 64 << 20) {
        self.name = name
        self.hashFromZero = hashFromZero
        self.chunkSize = max(chunkSize, 1)
    }

    /// How far the main range is digested.
    var digestedEnd: UInt64 { hashed }

    /// Accounts for `bytes` written at `offset`.
    func record(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        guard !bytes.isEmpty else { return }
        let end = offset + UInt64(bytes.count)
        if start == nil {
            start = hashFromZero ? 0 : offset
            hashed = start ?? 0
            chunkStart = hashed
        }
        let first = start ?? 0
        if offset >= hashed {
            feedZeros(offset - hashed)
            feed(bytes)
        } else if end <= first {
            guard patchBytes + bytes.count <= Self.patchLimit,
                  !patches.contains(where: { $0.offset < end && offset < $0.offset + UInt64($0.bytes.count) }) else {
                throw KDCTError(.unsupported,
                                "remote output: a write of \(bytes.count) bytes at offset \(offset) goes back before the data already written and cannot be verified on the fly",
                                file: name)
            }
            patches.append((offset, Array(bytes)))
            patchBytes += bytes.count
        } else {
            throw KDCTError(.unsupported,
                            "remote output: a write at offset \(offset) overlaps data already written up to \(hashed); remote targets need forward writes",
                            file: name)
        }
    }

    /// Hashes `bytes` at `hashed`, closing chunks at their boundaries.
    private func feed(_ bytes: UnsafeRawBufferPointer) {
        var index = 0
        while index < bytes.count {
            let room = Int(min(UInt64(bytes.count - index), chunkStart + chunkSize - hashed))
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[index..<(index + room)]))
            index += room
            advance(by: UInt64(room))
        }
    }

    /// Hashes `count` zeros at `hashed`.
    private func feedZeros(_ count: UInt64) {
        var left = count
        while left > 0 {
            let room = min(left, chunkStart + chunkSize - hashed)
            Self.hashZeros(&hasher, count: room)
            left -= room
            advance(by: room)
        }
    }

    private func advance(by count: UInt64) {
        hashed += count
        if hashed == chunkStart + chunkSize {
            chunks.append(RangeDigest(start: chunkStart, length: chunkSize, sha256: TextEncoding.hex(hasher.finalize())))
            hasher = SHA256()
            chunkStart = hashed
        }
    }

    /// Accounts for the file's length being set to `length`.
    func setLength(_ length: UInt64) throws {
        guard length >= hashed else {
            throw KDCTError(.unsupported, "remote output: truncating to \(length) below data written up to \(hashed) is not supported",
                            file: name)
        }
        declaredLength = length
    }

    /// The file length implied so far.
    var length: UInt64 { max(declaredLength ?? 0, hashed) }

    /// The digests of the file's ranges, in order, covering `[0, length)`: the bytes before the first write
    /// (when they were patched in later), then the chunks. Call once, at the end.
    func finish() -> [RangeDigest] {
        let total = length
        if start == nil {
            start = hashFromZero || total == 0 ? 0 : total
            hashed = start ?? 0
            chunkStart = hashed
        }
        let first = start ?? 0
        feedZeros(total - hashed)
        if hashed > chunkStart {
            chunks.append(RangeDigest(start: chunkStart, length: hashed - chunkStart, sha256: TextEncoding.hex(hasher.finalize())))
            chunkStart = hashed
            hasher = SHA256()
        }
        guard first > 0 else { return chunks }
        var prefix = SHA256()
        var position: UInt64 = 0
        for patch in patches.sorted(by: { $0.offset < $1.offset }) {
            Self.hashZeros(&prefix, count: patch.offset - position)
            prefix.update(data: patch.bytes)
            position = patch.offset + UInt64(patch.bytes.count)
        }
        Self.hashZeros(&prefix, count: first - position)
        return [RangeDigest(start: 0, length: first, sha256: TextEncoding.hex(prefix.finalize()))] + chunks
    }

    /// Feeds `count` zero bytes to `hasher`.
    static func hashZeros(_ hasher: inout SHA256, count: UInt64) {
        var left = count
        zeroBlock.withUnsafeBytes { zeros in
            while left > 0 {
                let n = Int(min(left, UInt64(zeros.count)))
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: zeros[0..<n]))
                left -= UInt64(n)
            }
        }
    }
}
