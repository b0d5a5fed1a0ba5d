/// Where one QCOW2 cluster (or subcluster) of the guest lives, decoded from its L2 entry.
public enum QCOW2ClusterMapping: Sendable, Equatable {
    /// Not allocated in this image: reads from the backing file, or as zeros.
    case unallocated
    /// Reads as zeros (zero flag, or subcluster zero bit).
    case zero
    /// Stored uncompressed at this host offset.
    case data(host: UInt64)
    /// Stored compressed: `size` bytes (sector-rounded upper bound) starting at `host`.
    case compressed(host: UInt64, size: UInt64)
}

/// Decoding of L1 and L2 entries (qcow2.txt, "Cluster mapping").
public enum QCOW2Entry {
    /// Bits 9-55 of an L1 or standard L2 entry: the host offset.
    public static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    /// Bit 62: the cluster is compressed.
    public static let compressedFlag: UInt64 = 1 << 62
    /// Bit 0 of a standard L2 entry (version 3): the cluster reads as zeros.
    public static let zeroFlag: UInt64 = 1
    /// Bits 1-8 and 56-61 of a standard L2 entry for an uncompressed cluster: reserved, must be zero (qemu's
    /// `L2E_STD_RESERVED_MASK`).
    public static let standardReservedMask: UInt64 = 0x3F00_0000_0000_01FE
    /// Bits 0-8 and 56-62 of an L1 entry: reserved, must be zero (qemu's `L1E_RESERVED_MASK`).
    public static let l1ReservedMask: UInt64 = 0x7F00_0000_0000_01FF

    /// Decodes a standard (64-bit) L2 entry for a cluster.
    /// - Throws: `corrupt` for an unaligned host offset or a zero flag in a version 2 image.
    public static func decodeStandard(_ entry: UInt64, header: QCOW2Header) throws -> QCOW2ClusterMapping {
        if entry & compressedFlag != 0 {
            let shift = 62 - (UInt64(header.clusterBits) - 8)
            let host = entry & ((1 << shift) - 1)
            let sectors = ((entry >> shift) & ((1 << (UInt64(header.clusterBits) - 8)) - 1)) + 1
            return .compressed(host: host, size: sectors * 512 - (host & 511))
        }
        let host = entry & offsetMask
        if entry & standardReservedMask != 0 {
            throw KDCTError.corrupt("reserved bits 0x\(String(entry & standardReservedMask, radix: 16)) are set (L2 entry 0x\(String(entry, radix: 16)))",
                                    field: "L2 entry")
        }
        if entry & zeroFlag != 0 && !header.extendedL2 {
            guard header.version >= 3 else {
                throw KDCTError.corrupt("zero cluster flag in a version 2 image (L2 entry 0x\(String(entry, radix: 16)))",
                                        field: "L2 entry")
            }
            return .zero
        }
        if host == 0 { return .unallocated }
        if host % header.clusterSize != 0 {
            throw KDCTError.corrupt("data cluster offset 0x\(String(host, radix: 16)) is not cluster-aligned (L2 entry 0x\(String(entry, radix: 16)))",
                                    field: "L2 entry")
        }
        return .data(host: host)
    }

    /// Decodes subcluster `index` (0..<32) of an extended L2 entry (qcow2.txt, "Extended L2 Entries"): bits 0-31 of
    /// `bitmap` say "allocated", bits 32-63 "reads as zeros".
    public static func decodeSubcluster(_ entry: UInt64, bitmap: UInt64, index: Int,
                                        header: QCOW2Header) throws -> QCOW2ClusterMapping {
        let cluster = try decodeStandard(entry & ~zeroFlag, header: header)
        if case .compressed = cluster { return cluster }
        let allocated = bitmap & (1 << UInt64(index)) != 0
        let zero = bitmap & (1 << UInt64(32 + index)) != 0
        if allocated && zero {
            throw KDCTError.corrupt("subcluster \(index) is marked both allocated and zero (bitmap 0x\(String(bitmap, radix: 16)))",
                                    field: "L2 bitmap")
        }
        if zero { return .zero }
        guard allocated else { return .unallocated }
        guard case let .data(host) = cluster else {
            throw KDCTError.corrupt("subcluster \(index) is allocated but its cluster has no host offset",
                                    field: "L2 bitmap")
        }
        return .data(host: host + UInt64(index) * (header.clusterSize / 32))
    }
}
