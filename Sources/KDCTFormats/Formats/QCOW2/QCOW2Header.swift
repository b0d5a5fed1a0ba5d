/// The QCOW2 header (docs/interop/qcow2.txt, "Header") with its extensions, decoded from bytes.
struct QCOW2Header: Sendable, Equatable {
    /// Incompatible feature bits (qcow2.txt, bytes 72-79).
    enum IncompatibleFeature {
        /// Bit 0: refcounts may be inconsistent (lazy refcounts, not closed cleanly).
        static let dirty: UInt64 = 1 << 0
        /// Bit 1: qemu found the metadata corrupt.
        static let corrupt: UInt64 = 1 << 1
        /// Bit 2: guest data lives in an external data file.
        static let externalDataFile: UInt64 = 1 << 2
        /// Bit 3: the compression type field is not deflate.
        static let compressionType: UInt64 = 1 << 3
        /// Bit 4: L2 entries are 128 bits with subcluster bitmaps.
        static let extendedL2: UInt64 = 1 << 4
        /// Every bit this reader understands.
        static let known: UInt64 = dirty | corrupt | externalDataFile | compressionType | extendedL2
    }

    /// Header extension type codes (qcow2.txt, "Header extensions").
    enum ExtensionType {
        static let end: UInt32 = 0
        static let backingFormat: UInt32 = 0xE279_2ACA
        static let featureNameTable: UInt32 = 0x6803_F857
        static let bitmaps: UInt32 = 0x2385_2875
        static let fullDiskEncryption: UInt32 = 0x0537_BE77
        static let externalDataFile: UInt32 = 0x4441_5441
    }

    var version: UInt32
    var backingFileOffset: UInt64
    var backingFileSize: UInt32
    var clusterBits: UInt32
    var size: UInt64
    var cryptMethod: UInt32
    var l1Size: UInt32
    var l1TableOffset: UInt64
    var refcountTableOffset: UInt64
    var refcountTableClusters: UInt32
    var snapshotCount: UInt32
    var snapshotsOffset: UInt64
    var incompatibleFeatures: UInt64
    var compatibleFeatures: UInt64
    var autoclearFeatures: UInt64
    var refcountOrder: UInt32
    var headerLength: UInt32
    /// 0 deflate, 1 zstd.
    var compressionTypeCode: UInt8
    /// Backing file format from the header extension, if present.
    var backingFormat: String?
    /// External data file name from the header extension, if present.
    var externalDataFile: String?
    /// Names of feature bits from the feature name table: (type 0 incompatible / 1 compatible / 2 autoclear, bit, name).
    var featureNames: [(type: UInt8, bit: UInt8, name: String)] = []
    /// A bitmaps extension is present (persistent dirty bitmaps; irrelevant for reading).
    var hasBitmaps = false

    static func == (lhs: QCOW2Header, rhs: QCOW2Header) -> Bool {
        lhs.version == rhs.version && lhs.size == rhs.size && lhs.clusterBits == rhs.clusterBits
            && lhs.l1Size == rhs.l1Size && lhs.l1TableOffset == rhs.l1TableOffset
            && lhs.incompatibleFeatures == rhs.incompatibleFeatures && lhs.backingFormat == rhs.backingFormat
    }

    /// Cluster size in bytes.
    var clusterSize: UInt64 { 1 << UInt64(clusterBits) }
    /// Extended L2 entries (128-bit, with subcluster bitmaps).
    var extendedL2: Bool { incompatibleFeatures & IncompatibleFeature.extendedL2 != 0 }
    /// Bytes per L2 entry.
    var l2EntrySize: UInt64 { extendedL2 ? 16 : 8 }
    /// Entries per L2 table (one cluster).
    var l2Entries: UInt64 { clusterSize / l2EntrySize }
    /// The compression type of compressed clusters.
    var compressionType: CompressionType { compressionTypeCode == 1 ? .zstd : .deflate }
    /// Not closed cleanly (dirty bit).
    var isDirty: Bool { incompatibleFeatures & IncompatibleFeature.dirty != 0 }

    /// Bytes read for the header when `cluster_bits` is invalid (the decoder then reports it): qemu's 2 MiB cap on
    /// a cluster.
    static let maximumHeaderRead = 2 << 20

    /// The first cluster of `file` (or the whole file when shorter): the header, its extensions and the backing
    /// file name live there, so opening never reads guest data clusters. The first 512 bytes (the smallest
    /// cluster) are read first for `cluster_bits`, then only the rest of the cluster, so no byte is read twice.
    static func readFirstCluster(of file: ReadOnlyFile) throws -> [UInt8] {
        var bytes = try file.readBytes(count: Int(min(file.size, 512)), at: 0, what: "qcow2 header")
        guard bytes.count >= 24 else { return bytes }
        let clusterBits = try ByteReader(bytes, structure: "qcow2 header").u32be(20)
        let wanted = (9...21).contains(clusterBits) ? UInt64(1) << UInt64(clusterBits) : UInt64(maximumHeaderRead)
        let length = min(wanted, file.size)
        if length > UInt64(bytes.count) {
            bytes += try file.readBytes(count: Int(length) - bytes.count, at: UInt64(bytes.count), what: "qcow2 header")
        }
        return bytes
    }

    /// Decodes the header from the first bytes of the file (`bytes` holds at least the first cluster, or the whole
    /// file when shorter). Validates every field against the file size; `limits` caps the tables.
    static func decode(_ bytes: [UInt8], fileSize: UInt64, limits: ImageLimits) throws -> QCOW2Header {
        let r = ByteReader(bytes, structure: "qcow2 header")
        guard try r.u32be(0) == 0x5146_49FB else {
            throw KDCTError.invalidFormat("not a qcow2 image (bad magic)", field: "magic")
        }
        let version = try r.u32be(4)
        guard version == 2 || version == 3 else {
            throw KDCTError.unsupported("qcow2 version \(version) (only 2 and 3 exist)", field: "version")
        }
        var header = QCOW2Header(
            version: version, backingFileOffset: try r.u64be(8), backingFileSize: try r.u32be(16),
            clusterBits: try r.u32be(20), size: try r.u64be(24), cryptMethod: try r.u32be(32), l1Size: try r.u32be(36),
            l1TableOffset: try r.u64be(40), refcountTableOffset: try r.u64be(48),
            refcountTableClusters: try r.u32be(56), snapshotCount: try r.u32be(60), snapshotsOffset: try r.u64be(64),
            incompatibleFeatures: 0, compatibleFeatures: 0, autoclearFeatures: 0, refcountOrder: 4,
            headerLength: 72, compressionTypeCode: 0)
        if version == 3 {
            header.incompatibleFeatures = try r.u64be(72)
            header.compatibleFeatures = try r.u64be(80)
            header.autoclearFeatures = try r.u64be(88)
            header.refcountOrder = try r.u32be(96)
            header.headerLength = try r.u32be(100)
            guard header.headerLength >= 104, header.headerLength % 8 == 0 || header.headerLength == 104 else {
                throw KDCTError.corrupt("header_length \(header.headerLength) is below 104 or not a multiple of 8",
                                        field: "header_length")
            }
            if header.headerLength > 104 { header.compressionTypeCode = try r.u8(104) }
        }
        try header.validate(fileSize: fileSize, limits: limits)
        try header.decodeExtensions(r, fileSize: fileSize)
        // An external data file is a reference like a backing file, but one qemu opens even for `info`
        // (CVE-2024-4467: a json: data file naming a host file). Refused whatever its name; never opened.
        if header.incompatibleFeatures & IncompatibleFeature.externalDataFile != 0 || header.externalDataFile != nil {
            let name = header.externalDataFile.map { " \"\($0.prefix(200))\"" } ?? ""
            throw KDCTError.unsupported("guest data is in an external data file\(name) (data_file); not supported, and never opened",
                                        field: "data_file")
        }
        return header
    }

    private func validate(fileSize: UInt64, limits: ImageLimits) throws {
        guard (9...21).contains(clusterBits) else {
            throw KDCTError.corrupt("cluster_bits \(clusterBits) is outside 9..21 (512 B to 2 MiB clusters)", field: "cluster_bits")
        }
        if UInt64(headerLength) > clusterSize {
            throw KDCTError.corrupt("header_length \(headerLength) is larger than a cluster (\(clusterSize))", field: "header_length")
        }
        if cryptMethod != 0 {
            throw KDCTError.unsupported("encrypted image (crypt_method \(cryptMethod)); decrypt it with qemu-img first",
                                        field: "crypt_method")
        }
        let unknown = incompatibleFeatures & ~IncompatibleFeature.known
        if unknown != 0 {
            throw KDCTError.unsupported("unknown incompatible feature bits 0x\(String(unknown, radix: 16))",
                                        field: "incompatible_features")
        }
        if refcountOrder > 6 {
            throw KDCTError.corrupt("refcount_order \(refcountOrder) is above 6", field: "refcount_order")
        }
        if compressionTypeCode > 1 {
            throw KDCTError.unsupported("compression_type \(compressionTypeCode) (0 deflate and 1 zstd exist)",
                                        field: "compression_type")
        }
        if compressionTypeCode != 0 && incompatibleFeatures & IncompatibleFeature.compressionType == 0 {
            throw KDCTError.corrupt("compression_type \(compressionTypeCode) without the compression type feature bit",
                                    field: "compression_type")
        }
        try ImageLimits.check("size", size, max: limits.maxVirtualSize)
        // The L1 table must cover the whole guest (qemu: "L1 table is too small").
        let bytesPerL2 = clusterSize * l2Entries
        let needed = (size + bytesPerL2 - 1) / bytesPerL2
        if UInt64(l1Size) < needed {
            throw KDCTError.corrupt("l1_size \(l1Size) is too small for a size of \(size) bytes (needs \(needed))", field: "l1_size")
        }
        try ImageLimits.check("l1_size * 8", UInt64(l1Size) * 8, max: min(limits.maxTableBytes, 32 << 20))
        if l1Size > 0 {
            try checkTable("l1_table_offset", offset: l1TableOffset, length: UInt64(l1Size) * 8, fileSize: fileSize)
        }
        if snapshotCount > 0 {
            try ImageLimits.check("nb_snapshots", UInt64(snapshotCount), max: UInt64(limits.maxSnapshots))
            try checkTable("snapshots_offset", offset: snapshotsOffset, length: 40, fileSize: fileSize)
        }
        if backingFileOffset != 0 {
            guard backingFileSize > 0, backingFileSize <= 1023 else {
                throw KDCTError.corrupt("backing_file_size \(backingFileSize) is outside 1..1023", field: "backing_file_size")
            }
            let (end, overflow) = backingFileOffset.addingReportingOverflow(UInt64(backingFileSize))
            guard !overflow, end <= clusterSize, end <= fileSize else {
                throw KDCTError.corrupt("backing file name at \(backingFileOffset) (+\(backingFileSize)) lies outside the first cluster",
                                        field: "backing_file_offset")
            }
        }
    }

    /// Checks that a table at `offset` of `length` bytes is cluster-aligned and inside the file.
    func checkTable(_ field: String, offset: UInt64, length: UInt64, fileSize: UInt64) throws {
        if offset % clusterSize != 0 && field != "snapshots_offset" {
            throw KDCTError.corrupt("\(field) 0x\(String(offset, radix: 16)) is not aligned to the cluster size \(clusterSize)", field: field)
        }
        let (end, overflow) = offset.addingReportingOverflow(length)
        if overflow || end > fileSize {
            throw KDCTError.corrupt("\(field) 0x\(String(offset, radix: 16)) (+\(length) bytes) lies past the end of the file (\(fileSize) bytes)",
                                    field: field)
        }
    }

    private mutating func decodeExtensions(_ r: ByteReader, fileSize: UInt64) throws {
        guard version == 3 || headerLength == 72 else { return }
        var offset = Int(version == 3 ? headerLength : 72)
        let limit = min(r.count, Int(clusterSize))
        var seen = 0
        while offset + 8 <= limit {
            let type = try r.u32be(offset)
            let length = Int(try r.u32be(offset + 4))
            if type == ExtensionType.end { return }
            seen += 1
            guard seen <= 1024, length <= limit - offset - 8 else {
                throw KDCTError.corrupt("header extension 0x\(String(type, radix: 16)) of \(length) bytes at \(offset) overruns the first cluster",
                                        field: "header extension")
            }
            let data = offset + 8
            switch type {
            case ExtensionType.backingFormat:
                backingFormat = try r.ascii(data, length)
            case ExtensionType.externalDataFile:
                externalDataFile = try r.ascii(data, length)
            case ExtensionType.fullDiskEncryption:
                throw KDCTError.unsupported("encrypted image (full disk encryption header)", field: "crypt_method")
            case ExtensionType.bitmaps:
                hasBitmaps = true
            case ExtensionType.featureNameTable:
                var entry = data
                while entry + 48 <= data + length {
                    featureNames.append((try r.u8(entry), try r.u8(entry + 1), try r.ascii(entry + 2, 46)))
                    entry += 48
                }
            default:
                break
            }
            offset = data + (length + 7) / 8 * 8
        }
    }

    /// The backing file name stored in the header, if any.
    func backingFileName(from bytes: [UInt8]) throws -> String? {
        guard backingFileOffset != 0 else { return nil }
        let r = ByteReader(bytes, structure: "qcow2 header")
        let raw = try r.slice(Int(backingFileOffset), Int(backingFileSize))
        return String(decoding: raw, as: UTF8.self)
    }
}
