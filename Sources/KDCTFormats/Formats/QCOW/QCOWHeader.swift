/// The QCOW version 1 header (qemu block/qcow.c, `QCowHeader`), 48 bytes, all fields big-endian:
///
/// ```
///  0  magic "QFI\xfb"          4  version (1)
///  8  backing_file_offset     16  backing_file_size
/// 20  mtime                   24  size (bytes)
/// 32  cluster_bits            33  l2_bits      34 padding
/// 36  crypt_method (0 none, 1 AES)
/// 40  l1_table_offset
/// ```
///
/// `decode` only parses; `validate` applies qemu's own open checks (qcow_open) and the library's limits.
struct QCOWHeader: Sendable, Equatable {
    /// "QFI\xfb".
    static let magic: UInt32 = 0x5146_49FB
    /// Size of the header.
    static let size = 48
    /// Longest backing file name qemu accepts.
    static let maxBackingNameBytes: UInt32 = 1023
    /// Cluster sizes qemu accepts: 512 B to 64 KiB.
    static let clusterBitsRange: ClosedRange<UInt8> = 9...16
    /// L2 table sizes qemu accepts: 512 B to 64 KiB (64 to 8192 entries).
    static let l2BitsRange: ClosedRange<UInt8> = 6...13

    /// Format version (always 1 here).
    var version: UInt32
    /// File offset of the backing file name (0: none).
    var backingFileOffset: UInt64
    /// Length of the backing file name.
    var backingFileSize: UInt32
    /// Modification time stored by the writer (Unix seconds; qemu writes 0).
    var mtime: UInt32
    /// Guest size in bytes as stored.
    var size: UInt64
    /// log2 of the cluster size.
    var clusterBits: UInt8
    /// log2 of the number of entries of an L2 table.
    var l2Bits: UInt8
    /// 0: not encrypted; 1: AES-CBC.
    var cryptMethod: UInt32
    /// File offset of the L1 table.
    var l1TableOffset: UInt64

    /// Bytes per cluster.
    var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// Entries per L2 table.
    var l2Entries: Int { 1 << Int(l2Bits) }
    /// Guest bytes one L2 table maps.
    var bytesPerL2: UInt64 { 1 << (UInt64(clusterBits) + UInt64(l2Bits)) }
    /// Entries of the L1 table (qemu: `(size + bytesPerL2 - 1) >> shift`), valid after `validate`.
    var l1Entries: UInt64 {
        let perTable = bytesPerL2
        guard perTable > 0 else { return 0 }  // out-of-range bits (refused by validate)
        return size / perTable + (size % perTable == 0 ? 0 : 1)
    }
    /// The guest size qemu shows: whole 512-byte sectors (`total_sectors = size / 512`).
    var virtualSize: UInt64 { size & ~UInt64(511) }

    /// Decodes the first 48 bytes of a file. Throws `invalidFormat` without the magic, `unsupported` for a
    /// version other than 1.
    static func decode(_ bytes: [UInt8]) throws -> QCOWHeader {
        let r = ByteReader(bytes, structure: "QCOW header")
        guard (try? r.u32be(0)) == magic else {
            throw KDCTError.invalidFormat("no QCOW magic QFI\\xfb at offset 0", field: "magic")
        }
        let version = try r.u32be(4)
        guard version == 1 else {
            throw KDCTError.unsupported("QCOW version \(version) is not version 1", field: "version")
        }
        return QCOWHeader(version: version, backingFileOffset: try r.u64be(8), backingFileSize: try r.u32be(16),
                          mtime: try r.u32be(20), size: try r.u64be(24), clusterBits: try r.u8(32),
                          l2Bits: try r.u8(33), cryptMethod: try r.u32be(36), l1TableOffset: try r.u64be(40))
    }

    /// Checks the header for a file of `fileSize` bytes. Throws `corrupt`, `unsupported`, `limitExceeded` or
    /// `truncated` naming the field and its value.
    func validate(fileSize: UInt64, limits: ImageLimits) throws {
        if size <= 1 {
            throw KDCTError.corrupt("image size \(size) is too small (must be at least 2 bytes)", field: "size")
        }
        try ImageLimits.check("virtual size", size, max: limits.maxVirtualSize)
        guard QCOWHeader.clusterBitsRange.contains(clusterBits) else {
            throw KDCTError.corrupt("cluster_bits \(clusterBits) is out of range 9...16 (clusters of 512 B to 64 KiB)",
                                    field: "cluster_bits")
        }
        guard QCOWHeader.l2BitsRange.contains(l2Bits) else {
            throw KDCTError.corrupt("l2_bits \(l2Bits) is out of range 6...13 (L2 tables of 512 B to 64 KiB)",
                                    field: "l2_bits")
        }
        switch cryptMethod {
        case 0: break
        case 1:
            throw KDCTError.unsupported(
                "the image is encrypted (AES-CBC, crypt_method 1); encrypted qcow images are not supported (decrypt it with qemu-img convert first)",
                field: "crypt_method")
        default:
            throw KDCTError.corrupt("invalid encryption method \(cryptMethod)", field: "crypt_method")
        }
        let l1Bytes = l1Entries * 8
        try ImageLimits.check("L1 table size (\(l1Entries) entries)", l1Bytes, max: limits.maxTableBytes)
        if l1TableOffset % 8 != 0 {
            throw KDCTError.corrupt("L1 table offset \(l1TableOffset) is not aligned to 8 bytes", field: "l1_table_offset")
        }
        if l1TableOffset > fileSize || l1Bytes > fileSize - l1TableOffset {
            throw KDCTError(.truncated,
                            "the L1 table (\(l1Bytes) bytes at offset \(l1TableOffset)) goes past the end of the file (\(fileSize) bytes)",
                            field: "l1_table_offset")
        }
        if backingFileOffset != 0 {
            if backingFileSize > QCOWHeader.maxBackingNameBytes {
                throw KDCTError.corrupt("backing file name of \(backingFileSize) bytes is too long (at most 1023)",
                                        field: "backing_file_size")
            }
            if backingFileOffset > fileSize || UInt64(backingFileSize) > fileSize - backingFileOffset {
                throw KDCTError(.truncated,
                                "the backing file name (\(backingFileSize) bytes at offset \(backingFileOffset)) goes past the end of the file",
                                field: "backing_file_offset")
            }
        }
    }
}
