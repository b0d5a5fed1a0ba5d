/// Where one QCOW2 cluster (or run of subclusters) of the guest lives, decoded from its L2 entry.
enum QCOW2ClusterMapping: Sendable, Equatable {
    /// Not allocated in this image: reads from the backing file, or as zeros.
    case unallocated
    /// Reads as zeros (zero flag, or subcluster zero bit); `host` when the entry also names a preallocated cluster.
    case zero(host: UInt64?)
    /// Stored uncompressed at this host offset.
    case data(host: UInt64)
    /// Stored compressed: at most `size` bytes (a sector-rounded bound) starting at `host`.
    case compressed(host: UInt64, size: UInt64)
}

/// Decoding of L1 and L2 entries (qcow2.txt, "Cluster mapping" and "Extended L2 Entries").
enum QCOW2Entry {
    /// Bits 9-55 of an L1 or standard L2 entry: the host offset.
    static let offsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    /// Bit 62: the cluster is compressed.
    static let compressedFlag: UInt64 = 1 << 62
    /// Bit 0 of a standard L2 entry (version 3 without extended L2): the cluster reads as zeros.
    static let zeroFlag: UInt64 = 1
    /// Bits 1-8 and 56-61 of a standard L2 entry for an uncompressed cluster: reserved, must be zero (qemu's
    /// `L2E_STD_RESERVED_MASK`).
    static let standardReservedMask: UInt64 = 0x3F00_0000_0000_01FE
    /// Bits 0-8 and 56-62 of an L1 entry: reserved, must be zero (qemu's `L1E_RESERVED_MASK`).
    static let l1ReservedMask: UInt64 = 0x7F00_0000_0000_01FF

    /// Where an entry is, for error messages: the field is `L2 table T entry I`, the message names the guest offset.
    struct Location {
        var file: String?
        var table: UInt64
        var index: UInt64
        var guestOffset: UInt64

        func corrupt(_ message: String) -> KDCTError {
            KDCTError.corrupt("\(message) at guest offset \(guestOffset)", file: file, field: "L2 table \(table) entry \(index)")
        }
    }

    /// The host offset and size bound of a compressed cluster descriptor (`x = 62 - (cluster_bits - 8)`: bits 0..x-1
    /// the byte offset, bits x..61 the additional 512-byte sectors).
    static func compressedDescriptor(_ entry: UInt64, clusterBits: UInt32) -> (host: UInt64, size: UInt64) {
        let shift = 62 - (UInt64(clusterBits) - 8)
        let host = entry & ((1 << shift) - 1)
        let sectors = ((entry >> shift) & ((1 << (UInt64(clusterBits) - 8)) - 1)) + 1
        return (host, sectors * 512 - (host & 511))
    }

    /// Decodes a standard (64-bit) L2 entry, or the first word of an extended one (whose bit 0 is not a zero flag).
    /// - Throws: `corrupt` for reserved bits, an unaligned host offset, or a zero flag in a version 2 image.
    static func decodeStandard(_ entry: UInt64, header: QCOW2Header, at location: Location) throws -> QCOW2ClusterMapping {
        if entry & compressedFlag != 0 {
            let (host, size) = compressedDescriptor(entry, clusterBits: header.clusterBits)
            return .compressed(host: host, size: size)
        }
        let host = entry & offsetMask
        if entry & standardReservedMask != 0 {
            throw location.corrupt("reserved bits 0x\(String(entry & standardReservedMask, radix: 16)) are set (L2 entry 0x\(String(entry, radix: 16)))")
        }
        if host % header.clusterSize != 0 {
            throw location.corrupt("data cluster offset 0x\(String(host, radix: 16)) is not cluster-aligned (L2 entry 0x\(String(entry, radix: 16)))")
        }
        if entry & zeroFlag != 0 && !header.extendedL2 {
            guard header.version >= 3 else {
                throw location.corrupt("zero cluster flag in a version 2 image (L2 entry 0x\(String(entry, radix: 16)))")
            }
            return .zero(host: host == 0 ? nil : host)
        }
        return host == 0 ? .unallocated : .data(host: host)
    }

    /// Decodes the run of subclusters of an extended L2 entry (`entry`, `bitmap`) that starts with subcluster
    /// `index` and shares its state: bits 0-31 of `bitmap` say "allocated", bits 32-63 "reads as zeros". Returns the
    /// mapping of subcluster `index` (host offsets at its start) and the number of subclusters in the run.
    /// A compressed cluster has no subclusters: its bitmap must be 0 (qcow2.txt), and it is one run.
    static func decodeSubclusters(_ entry: UInt64, bitmap: UInt64, from index: Int, header: QCOW2Header,
                                  at location: Location) throws -> (mapping: QCOW2ClusterMapping, count: Int) {
        if entry & compressedFlag != 0 {
            guard bitmap == 0 else {
                throw location.corrupt("compressed cluster with a non-zero subcluster bitmap 0x\(String(bitmap, radix: 16)) (it is reserved and must be 0)")
            }
            return (try decodeStandard(entry, header: header, at: location), 32 - index)
        }
        let cluster = try decodeStandard(entry, header: header, at: location)
        let allocated = UInt32(truncatingIfNeeded: bitmap)
        let zero = UInt32(truncatingIfNeeded: bitmap >> 32)
        if allocated & zero != 0 {
            throw location.corrupt("subclusters are marked both allocated and zero (bitmap 0x\(String(bitmap, radix: 16)))")
        }
        let host: UInt64?
        switch cluster {
        case let .data(offset): host = offset
        default: host = nil
        }
        if host == nil && allocated != 0 {
            throw location.corrupt("subclusters are allocated (bitmap 0x\(String(bitmap, radix: 16))) but the cluster has no host offset")
        }
        func state(_ i: Int) -> UInt32 { (allocated >> UInt32(i)) & 1 | ((zero >> UInt32(i)) & 1) << 1 }
        let first = state(index)
        var end = index + 1
        while end < 32, state(end) == first { end += 1 }
        let subclusterOffset = host.map { $0 + UInt64(index) * (header.clusterSize / 32) }
        switch first {
        case 1: return (.data(host: subclusterOffset ?? 0), end - index)
        case 2: return (.zero(host: subclusterOffset), end - index)
        default: return (.unallocated, end - index)
        }
    }
}
