import Crypto

/// SHA-256 of a device's whole guest content (every virtual byte; zero and absent ranges hashed as zeros
/// without being read).
public enum GuestDigest {
    /// Computes the digest, calling `progress` with bytes hashed so far.
    public static func sha256(of device: any BlockDevice,
                              progress: ((UInt64) -> Void)? = nil) throws -> String {
        var hasher = SHA256()
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
                    hasher.update(bufferPointer: UnsafeRawBufferPointer(slice))
                } else {
                    hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: zeros[0..<count]))
                }
                offset += UInt64(count)
                progress?(offset)
            }
        }
        return hasher.finalize().map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}
