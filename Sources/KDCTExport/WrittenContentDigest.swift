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
}

/// 1 MiB of zeros, hashed for ranges that are never written (holes).
private let zeroBlock = [UInt8](repeating: 0, count: 1 << 20)

/// SHA-256 of what a writer put into a file, computed as the bytes go by, so the remote copy can be verified
/// without reading anything back locally (there is no local copy in a direct conversion).
///
/// Writes must move forward: the digest covers `[start, end)` where `start` is the first write's offset (or 0)
/// and gaps read as zeros. Our writers' one exception is the QCOW2 header, written last at offset 0 into the
/// cluster it reserved first: writes wholly before `start` are kept in memory (up to `patchLimit` bytes) and
/// digested as a separate leading range. Anything else is refused rather than silently mis-hashed.
final class WrittenContentDigest {
    /// How many bytes written before `start` may be held in memory.
    static let patchLimit = 32 << 20

    private let hashFromZero: Bool
    private var start: UInt64?
    private var hashed: UInt64 = 0
    private var hasher = SHA256()
    private var patches: [(offset: UInt64, bytes: [UInt8])] = []
    private var patchBytes = 0
    private var declaredLength: UInt64?
    private let name: String

    /// A digest of the file `name` (for messages). `hashFromZero` makes the digest start at offset 0 whatever
    /// the first write's offset (one range covering the whole file, as `sha256sum` would compute it).
    init(name: String, hashFromZero: Bool) {
        self.name = name
        self.hashFromZero = hashFromZero
    }

    /// Starts from an already-digested prefix `[0, length)` (a resumed upload).
    func resume(afterPrefixOf length: UInt64, hasher prefixHasher: SHA256) {
        start = 0
        hashed = length
        hasher = prefixHasher
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
        }
        let first = start ?? 0
        if offset >= hashed {
            Self.hashZeros(&hasher, count: offset - hashed)
            hasher.update(bufferPointer: bytes)
            hashed = end
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

    /// The digests of the file's ranges, in order, covering `[0, length)`.
    func finish() -> [RangeDigest] {
        let total = length
        guard let first = start else {
            var zeros = SHA256()
            Self.hashZeros(&zeros, count: total)
            return [RangeDigest(start: 0, length: total, sha256: TextEncoding.hex(zeros.finalize()))]
        }
        var main = hasher
        Self.hashZeros(&main, count: total - hashed)
        var result: [RangeDigest] = []
        if first > 0 {
            var prefix = SHA256()
            var position: UInt64 = 0
            for patch in patches.sorted(by: { $0.offset < $1.offset }) {
                Self.hashZeros(&prefix, count: patch.offset - position)
                prefix.update(data: patch.bytes)
                position = patch.offset + UInt64(patch.bytes.count)
            }
            Self.hashZeros(&prefix, count: first - position)
            result.append(RangeDigest(start: 0, length: first, sha256: TextEncoding.hex(prefix.finalize())))
        }
        result.append(RangeDigest(start: first, length: total - first, sha256: TextEncoding.hex(main.finalize())))
        return result
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
