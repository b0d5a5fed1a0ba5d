/// The space a QCOW2 image's persistent dirty bitmaps would take in a new image (qemu's `measure` field
/// `bitmaps`, block/qcow2-bitmap.c `qcow2_get_persistent_dirty_bitmap_size`): for each bitmap its data clusters
/// (one bit per `granularity` bytes of guest), its bitmap table, and its bitmap directory entry; the directory
/// rounded up to a cluster.
///
/// Read from the bitmaps header extension (docs/interop/qcow2.txt, "Bitmaps extension") and the bitmap
/// directory it points at ("Bitmap directory"), both big-endian.
enum QCOW2BitmapSizes {
    /// The bitmaps extension's type.
    static let extensionType: UInt32 = 0x2385_2875
    /// qemu's caps: 65535 bitmaps, a 64 MiB directory.
    static let maxBitmaps: UInt32 = 65535
    static let maxDirectoryBytes: UInt64 = 64 << 20

    /// The bytes for an output with `clusterSize`-byte clusters; 0 when the image has no bitmaps.
    static func bytes(of info: ImageInfo, clusterSize: Int) throws -> UInt64 {
        guard info.formatSpecific["bitmaps"] == .bool(true) else { return 0 }
        let file = try ReadOnlyFile(path: info.filename)
        let entries = try directoryEntries(file)
        let cluster = UInt64(clusterSize)
        var total: UInt64 = 0
        var directory: UInt64 = 0
        for entry in entries {
            let granularity = UInt64(1) << UInt64(min(entry.granularityBits, 63))
            let bits = (info.virtualSize + granularity - 1) / granularity
            let clusters = ((bits + 7) / 8 + cluster - 1) / cluster
            total += clusters * cluster + (clusters * 8 + cluster - 1) / cluster * cluster
            directory += (24 + UInt64(entry.nameSize) + 7) / 8 * 8
        }
        return total + (directory + cluster - 1) / cluster * cluster
    }

    /// One bitmap directory entry: what the size depends on.
    struct Entry: Equatable {
        var granularityBits: UInt8
        var nameSize: UInt16
    }

    /// The directory entries of the image in `file`.
    static func directoryEntries(_ file: ReadOnlyFile) throws -> [Entry] {
        let header = ByteReader(try file.readBytes(count: 104, at: 0, what: "qcow2 header"), structure: "qcow2 header")
        let version = try header.u32be(4)
        let headerLength = version >= 3 ? UInt64(try header.u32be(100)) : 72
        // Header extensions: type, length, data padded to 8 bytes, until type 0 (the first cluster at most).
        let clusterBits = try header.u32be(20)
        let end = UInt64(1) << UInt64(min(max(clusterBits, 9), 21))
        var offset = headerLength
        while offset + 8 <= end {
            let head = ByteReader(try file.readBytes(count: 8, at: offset, what: "header extension"),
                                  structure: "header extension")
            let type = try head.u32be(0)
            let length = UInt64(try head.u32be(4))
            if type == 0 { break }
            if type == extensionType {
                guard length >= 24 else {
                    throw KDCTError.corrupt("bitmaps extension is \(length) bytes, less than 24", file: file.path,
                                            field: "bitmaps extension")
                }
                let data = ByteReader(try file.readBytes(count: 24, at: offset + 8, what: "bitmaps extension"),
                                      structure: "bitmaps extension")
                return try entries(file, count: try data.u32be(0), directorySize: try data.u64be(8),
                                   directoryOffset: try data.u64be(16))
            }
            offset += 8 + (length + 7) / 8 * 8
        }
        return []
    }

    private static func entries(_ file: ReadOnlyFile, count: UInt32, directorySize: UInt64,
                                directoryOffset: UInt64) throws -> [Entry] {
        guard count <= maxBitmaps else { throw KDCTError.limit("nb_bitmaps", value: UInt64(count), limit: UInt64(maxBitmaps), file: file.path) }
        guard directorySize <= maxDirectoryBytes else {
            throw KDCTError.limit("bitmap_directory_size", value: directorySize, limit: maxDirectoryBytes, file: file.path)
        }
        let directory = ByteReader(try file.readBytes(count: Int(directorySize), at: directoryOffset,
                                                      what: "bitmap directory"), structure: "bitmap directory")
        var result: [Entry] = []
        var position = 0
        for index in 0..<Int(count) {
            guard position + 24 <= directory.count else {
                throw KDCTError.corrupt("bitmap directory entry \(index) runs past the directory's \(directory.count) bytes",
                                        file: file.path, field: "bitmap directory")
            }
            let granularityBits = try directory.u8(position + 17)
            let nameSize = try directory.u16be(position + 18)
            let extraSize = try directory.u32be(position + 20)
            result.append(Entry(granularityBits: granularityBits, nameSize: nameSize))
            position += (24 + Int(extraSize) + Int(nameSize) + 7) / 8 * 8
        }
        return result
    }
}
