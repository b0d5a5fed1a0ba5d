#if canImport(Glibc)
import Glibc
#endif

/// The outcome of comparing two guests.
public enum CompareResult: Sendable, Equatable {
    /// Same content (a size difference is allowed when the larger guest's extra range is all zeros).
    case identical
    /// Content differs, first at this guest offset.
    case differ(at: UInt64)
}

/// Compares the guest content of two devices the way `qemu-img compare` does without `-s`: the common range byte
/// for byte, and the longer guest's tail must read as zeros. Ranges neither side stores are skipped unread.
public enum GuestComparison {
    /// Compares `a` and `b`.
    public static func compare(_ a: any BlockDevice, _ b: any BlockDevice) throws -> CompareResult {
        let chunkSize = 4 << 20
        let bufferA = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        let bufferB = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { bufferA.deallocate(); bufferB.deallocate() }
        let common = min(a.virtualSize, b.virtualSize)
        var offset: UInt64 = 0
        while offset < common {
            let extentA = try a.extent(at: offset, maxLength: common - offset)
            let extentB = try b.extent(at: offset, maxLength: common - offset)
            let end = min(extentA.end, extentB.end, offset + UInt64(chunkSize))
            let count = Int(end - offset)
            // Absent ranges of the outermost device read as zeros, like zero ranges.
            if extentA.status == .data || extentB.status == .data {
                let sliceA = UnsafeMutableRawBufferPointer(rebasing: bufferA[0..<count])
                let sliceB = UnsafeMutableRawBufferPointer(rebasing: bufferB[0..<count])
                try a.read(into: sliceA, at: offset)
                try b.read(into: sliceB, at: offset)
                if let index = firstDifference(UnsafeRawBufferPointer(sliceA), UnsafeRawBufferPointer(sliceB)) {
                    return .differ(at: offset + UInt64(index))
                }
            }
            offset = end
        }
        let longer = a.virtualSize > b.virtualSize ? a : b
        offset = common
        while offset < longer.virtualSize {
            let extent = try longer.extent(at: offset, maxLength: longer.virtualSize - offset)
            let end = min(extent.end, offset + UInt64(chunkSize))
            if extent.status == .data {
                let slice = UnsafeMutableRawBufferPointer(rebasing: bufferA[0..<Int(end - offset)])
                try longer.read(into: slice, at: offset)
                if let index = slice.firstIndex(where: { $0 != 0 }) { return .differ(at: offset + UInt64(index)) }
            }
            offset = end
        }
        return .identical
    }

    static func firstDifference(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int? {
        guard let baseA = a.baseAddress, let baseB = b.baseAddress, memcmp(baseA, baseB, a.count) != 0 else { return nil }
        // Narrow down by blocks with memcmp, then bytes within the differing block.
        var start = 0
        let block = 4096
        while start < a.count {
            let length = min(block, a.count - start)
            if memcmp(baseA + start, baseB + start, length) != 0 {
                for i in start..<(start + length) where a[i] != b[i] { return i }
            }
            start += length
        }
        return nil
    }
}
