import CLibCrypto

/// SHA-256 of a device's whole guest content (every virtual byte; zero and absent ranges hashed as zeros
/// without being read).
public enum GuestDigest {
    /// Computes the digest as lower-case hex, calling `progress` with the guest bytes hashed so far.
    public static func sha256(of device: any BlockDevice,
                              progress: ((UInt64) -> Void)? = nil) throws -> String {
        let hasher = try SHA256Hasher()
        let chunkSize = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        try device.forEachExtent(to: device.virtualSize) { extent in
            var offset = extent.offset
            while offset < extent.end {
                let count = Int(min(UInt64(chunkSize), extent.end - offset))
                if extent.status == .data {
                    let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
                    try device.read(into: slice, at: offset)
                    try hasher.update(UnsafeRawBufferPointer(slice))
                } else {
                    try hasher.update(UnsafeRawBufferPointer(rebasing: zeros[0..<count]))
                }
                offset += UInt64(count)
                progress?(offset)
            }
        }
        return try hasher.finalize().map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

/// SHA-256 through libcrypto's EVP interface. One instance hashes one message.
final class SHA256Hasher {
    private let context: OpaquePointer

    /// A hasher ready for the first bytes.
    init() throws {
        guard let context = EVP_MD_CTX_new() else { throw KDCTError(.io, "EVP_MD_CTX_new failed") }
        self.context = context
        guard EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1 else { throw KDCTError(.io, "EVP_DigestInit_ex failed") }
    }

    deinit { EVP_MD_CTX_free(context) }

    /// Adds `bytes` to the message.
    func update(_ bytes: UnsafeRawBufferPointer) throws {
        guard bytes.count > 0 else { return }
        guard EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1 else {
            throw KDCTError(.io, "EVP_DigestUpdate failed")
        }
    }

    /// The 32-byte digest of the message.
    func finalize() throws -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        guard EVP_DigestFinal_ex(context, &digest, &length) == 1 else { throw KDCTError(.io, "EVP_DigestFinal_ex failed") }
        return Array(digest.prefix(Int(length)))
    }
}
