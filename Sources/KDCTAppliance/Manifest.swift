import Crypto
import KDCTFormats

/// An OVF manifest (`.mf`, DSP0243 5.1): one line per file, `SHA1(name)= hex`, `SHA256(name)= hex` or
/// `SHA512(name)= hex` (spaces around the parentheses and `=` tolerated, as govmomi and ovftool differ).
public struct Manifest: Sendable, Equatable {
    /// A digest algorithm a manifest may use.
    public enum Algorithm: String, Sendable, Equatable, CaseIterable {
        /// SHA-1 (ovftool's default before 4.x, VirtualBox OVF 1.0).
        case sha1 = "SHA1"
        /// SHA-256.
        case sha256 = "SHA256"
        /// SHA-512.
        case sha512 = "SHA512"

        /// Hex digits of a digest.
        public var hexLength: Int {
            switch self {
            case .sha1: return 40
            case .sha256: return 64
            case .sha512: return 128
            }
        }
    }

    /// One line of the manifest.
    public struct Entry: Sendable, Equatable {
        /// The digest algorithm.
        public var algorithm: Algorithm
        /// The file name (an OVA member name or a path relative to the descriptor).
        public var name: String
        /// The expected digest, lower-case hex.
        public var digest: String
    }

    /// The entries in file order.
    public var entries: [Entry]

    /// Decodes the manifest `bytes` (read from `file`). Throws `corrupt` on a line that is not a digest line,
    /// an unknown algorithm, a digest of the wrong length, or a file named twice.
    static func parse(_ bytes: [UInt8], file: String? = nil) throws -> Manifest {
        var entries: [Entry] = []
        let text = String(decoding: bytes, as: UTF8.self)
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" }).enumerated() {
            let line = String(rawLine).trimmingWhitespace
            if line.isEmpty { continue }
            func fail(_ why: String) -> KDCTError {
                KDCTError(.corrupt, "manifest line \(index + 1) \"\(line.prefix(120))\": \(why)", file: file,
                          field: "manifest line \(index + 1)")
            }
            guard let equals = line.lastIndex(of: "=") else { throw fail("no \"= digest\"") }
            let digest = line[line.index(after: equals)...].trimmingWhitespace.lowercased()
            let left = line[..<equals].trimmingWhitespace
            guard let open = left.firstIndex(of: "("), left.hasSuffix(")") else {
                throw fail("expected ALGORITHM(name)= digest")
            }
            let algorithmName = left[..<open].trimmingWhitespace.uppercased()
            guard let algorithm = Algorithm(rawValue: algorithmName) else {
                throw fail("unknown digest algorithm \"\(algorithmName)\" (SHA1, SHA256 and SHA512 are supported)")
            }
            let name = String(left[left.index(after: open)..<left.index(before: left.endIndex)])
            guard !name.isEmpty else { throw fail("empty file name") }
            guard digest.count == algorithm.hexLength, digest.allSatisfy(\.isHexDigit) else {
                throw fail("\(algorithm.rawValue) digest must be \(algorithm.hexLength) hex digits")
            }
            guard !entries.contains(where: { $0.name == name }) else { throw fail("\(name) is listed twice") }
            entries.append(Entry(algorithm: algorithm, name: name, digest: digest))
        }
        guard !entries.isEmpty else {
            throw KDCTError(.corrupt, "the manifest lists no file", file: file, field: "manifest")
        }
        return Manifest(entries: entries)
    }

    /// The entry for `name` (a leading `./` ignored), or nil.
    public func entry(for name: String) -> Entry? {
        var wanted = name
        while wanted.hasPrefix("./") { wanted.removeFirst(2) }
        return entries.first { entry in
            var listed = entry.name
            while listed.hasPrefix("./") { listed.removeFirst(2) }
            return listed == wanted
        }
    }

    /// The digest of the whole content of `file` (every byte, in order), lower-case hex. `progress` gets the
    /// bytes hashed so far; `isCancelled` is polled between 4 MiB chunks (true: `cancelled`).
    static func digest(of file: ReadOnlyFile, algorithm: Algorithm, progress: ((UInt64) -> Void)? = nil,
                              isCancelled: (() -> Bool)? = nil) throws -> String {
        switch algorithm {
        case .sha1:
            var hasher = Insecure.SHA1()
            try feed(file, progress: progress, isCancelled: isCancelled) { hasher.update(bufferPointer: $0) }
            return hex(hasher.finalize())
        case .sha256:
            var hasher = SHA256()
            try feed(file, progress: progress, isCancelled: isCancelled) { hasher.update(bufferPointer: $0) }
            return hex(hasher.finalize())
        case .sha512:
            var hasher = SHA512()
            try feed(file, progress: progress, isCancelled: isCancelled) { hasher.update(bufferPointer: $0) }
            return hex(hasher.finalize())
        }
    }

    /// Checks `file` against `entry`; throws `checksum` naming both digests on a mismatch.
    static func verify(_ file: ReadOnlyFile, against entry: Entry, manifestPath: String? = nil,
                              progress: ((UInt64) -> Void)? = nil, isCancelled: (() -> Bool)? = nil) throws {
        let actual = try digest(of: file, algorithm: entry.algorithm, progress: progress, isCancelled: isCancelled)
        if actual != entry.digest {
            throw KDCTError(.checksum,
                            "\(entry.algorithm.rawValue) of \(entry.name) is \(actual) but the manifest says \(entry.digest); refused",
                            file: manifestPath ?? file.path, field: "manifest entry \(entry.name)")
        }
    }

    private static func feed(_ file: ReadOnlyFile, progress: ((UInt64) -> Void)?, isCancelled: (() -> Bool)?,
                             _ update: (UnsafeRawBufferPointer) -> Void) throws {
        let chunkSize = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < file.size {
            if isCancelled?() == true { throw KDCTError(.cancelled, "manifest check cancelled", file: file.path) }
            let count = Int(min(UInt64(chunkSize), file.size - offset))
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            try file.read(into: slice, at: offset, what: "data")
            update(UnsafeRawBufferPointer(slice))
            offset += UInt64(count)
            progress?(offset)
        }
    }

    private static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { byte in byte < 0x10 ? "0" + String(byte, radix: 16) : String(byte, radix: 16) }.joined()
    }
}
