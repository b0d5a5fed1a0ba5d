extension GuestComparison {
    /// The first guest offset, below the smaller virtual size, where the two devices map the guest differently:
    /// data, zero or absent, stored compressed or not (the allocation `qemu-img compare -s` compares besides the
    /// content); nil when the maps agree. Metadata only: no guest data is read.
    public static func firstAllocationDifference(_ a: any BlockDevice, _ b: any BlockDevice) throws -> UInt64? {
        let end = min(a.virtualSize, b.virtualSize)
        var offset: UInt64 = 0
        while offset < end {
            let extentA = try a.extent(at: offset, maxLength: end - offset)
            let extentB = try b.extent(at: offset, maxLength: end - offset)
            guard extentA.length > 0, extentB.length > 0 else {
                throw KDCTError(.corrupt, "a reader returned an empty extent at offset \(offset)")
            }
            if extentA.status != extentB.status || (extentA.status == .data && extentA.compressed != extentB.compressed) {
                return offset
            }
            offset += min(extentA.length, extentB.length)
        }
        return nil
    }
}
