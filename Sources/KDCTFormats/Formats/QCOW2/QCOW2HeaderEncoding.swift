/// A QCOW2 version 3 header as KDCT writes it (qcow2.txt, "Header" and "Header extensions"): the fields a writer
/// sets (the rest stay zero), the optional header extensions in qemu's order (backing file format, feature name
/// table, end marker), and the backing file name after them, as qemu's `qcow2_update_header` lays them out.
struct QCOW2HeaderEncoding {
    /// log2 of the cluster size.
    var clusterBits: Int
    /// Guest size in bytes (a multiple of 512).
    var size: UInt64
    /// L1 table entries and offset (0 and 0 for an empty disk, as qemu-img create writes it).
    var l1Size: UInt32 = 0
    var l1TableOffset: UInt64 = 0
    /// The refcount table's offset and length in clusters.
    var refcountTableOffset: UInt64 = 0
    var refcountTableClusters: UInt32 = 0
    /// Compressed clusters' codec: zstd sets incompatible bit 3 and the compression type byte.
    var compressionType: CompressionType = .deflate
    /// 128-bit L2 entries with subcluster bitmaps (incompatible bit 4).
    var extendedL2 = false
    /// The backing file name as stored, and its format (the backing format extension).
    var backingFile: String?
    var backingFormat: String?
    /// Write the feature name table extension, as qemu does in every image it creates.
    var featureNameTable = false

    /// Bytes of the fixed header (qemu's `header_length`: 104 plus the compression type byte, padded to 8).
    static let headerLength = 112

    /// qemu-img writes the feature name table only in images with clusters of at least 8 KiB (observed with
    /// qemu 7.2: none with 512 B to 4 KiB clusters).
    static let featureNameTableMinimumCluster: UInt64 = 8192

    /// The feature name table qemu 7.2 writes: (type 0 incompatible / 1 compatible / 2 autoclear, bit, name).
    static let featureNames: [(UInt8, UInt8, String)] = [
        (0, 0, "dirty bit"), (0, 1, "corrupt bit"), (0, 2, "external data file"), (0, 3, "compression type"),
        (0, 4, "extended L2 entries"), (1, 0, "lazy refcounts"), (2, 0, "bitmaps"), (2, 1, "raw external data"),
    ]

    /// The incompatible feature bits these fields need.
    var incompatibleFeatures: UInt64 {
        (compressionType == .zstd ? QCOW2Header.IncompatibleFeature.compressionType : 0)
            | (extendedL2 ? QCOW2Header.IncompatibleFeature.extendedL2 : 0)
    }

    /// Throws `invalidArgument` when the extensions and the backing file name do not fit in the first cluster.
    func validate() throws {
        let needed = encodedLength()
        if needed > 1 << clusterBits {
            throw KDCTError(.invalidArgument,
                            "the header with its extensions and backing file name needs \(needed) bytes, more than a \(1 << clusterBits)-byte cluster",
                            field: "backing_file")
        }
        if let backingFile, backingFile.utf8.count > 1023 || backingFile.isEmpty {
            throw KDCTError(.invalidArgument, "a backing file name is 1 to 1023 bytes, not \(backingFile.utf8.count)",
                            field: "backing_file")
        }
    }

    /// Bytes the header, its extensions and the backing file name take.
    func encodedLength() -> Int {
        var length = Self.headerLength
        if let backingFormat { length += 8 + (backingFormat.utf8.count + 7) / 8 * 8 }
        if featureNameTable { length += 8 + Self.featureNames.count * 48 }
        length += 8
        return length + (backingFile?.utf8.count ?? 0)
    }

    /// The header as `count` bytes (at least `encodedLength()`), zero-padded.
    func encode(count: Int) -> [UInt8] {
        var header = ByteWriter(count: max(count, encodedLength()))
        header.put([0x51, 0x46, 0x49, 0xFB], at: 0)                  // magic "QFI\xfb"
        header.u32be(3, at: 4)                                        // version
        header.u32be(UInt32(clusterBits), at: 20)                     // cluster_bits
        header.u64be(size, at: 24)                                    // size
        header.u32be(l1Size, at: 36)                                  // l1_size
        header.u64be(l1TableOffset, at: 40)                           // l1_table_offset
        header.u64be(refcountTableOffset, at: 48)                     // refcount_table_offset
        header.u32be(refcountTableClusters, at: 56)                   // refcount_table_clusters
        header.u64be(incompatibleFeatures, at: 72)                    // incompatible_features
        header.u32be(4, at: 96)                                       // refcount_order: 16-bit refcounts
        header.u32be(UInt32(Self.headerLength), at: 100)              // header_length
        header.u8(compressionType == .zstd ? 1 : 0, at: 104)          // compression_type
        var offset = Self.headerLength
        if let backingFormat {
            let name = Array(backingFormat.utf8)
            header.u32be(QCOW2Header.ExtensionType.backingFormat, at: offset)
            header.u32be(UInt32(name.count), at: offset + 4)
            header.put(name, at: offset + 8)
            offset += 8 + (name.count + 7) / 8 * 8
        }
        if featureNameTable {
            header.u32be(QCOW2Header.ExtensionType.featureNameTable, at: offset)
            header.u32be(UInt32(Self.featureNames.count * 48), at: offset + 4)
            offset += 8
            for (type, bit, name) in Self.featureNames {
                header.u8(type, at: offset)
                header.u8(bit, at: offset + 1)
                header.put(Array(name.utf8), at: offset + 2)
                offset += 48
            }
        }
        offset += 8                                                   // end of header extensions
        if let backingFile {
            let name = Array(backingFile.utf8)
            header.u64be(UInt64(offset), at: 8)                       // backing_file_offset
            header.u32be(UInt32(name.count), at: 16)                  // backing_file_size
            header.put(name, at: offset)
        }
        return header.bytes
    }
}
