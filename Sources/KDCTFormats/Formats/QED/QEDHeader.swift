/// The QED header (qemu docs/interop/qed_spec.rst), 64 bytes, all fields little-endian:
///
/// ```
///  0 magic "QED\0"          4 cluster_size (bytes)     8 table_size (clusters)   12 header_size (clusters)
/// 16 features              24 compat_features         32 autoclear_features
/// 40 l1_table_offset       48 image_size
/// 56 backing_filename_offset (bytes from the start)   60 backing_filename_size
/// ```
///
/// `decode` only parses; `validate` applies the spec's rules (qemu's bdrv_qed_do_open) and the library's limits.
struct QEDHeader: Sendable, Equatable {
    /// "QED\0" read as a little-endian 32-bit value.
    static let magic: UInt32 = 0x0044_4551
    /// Size of the header.
    static let size = 64
    /// `features` bit: the image has a backing file.
    static let featureBackingFile: UInt64 = 0x01
    /// `features` bit: the image was not closed cleanly and needs a consistency check before read-write use.
    static let featureNeedCheck: UInt64 = 0x02
    /// `features` bit: the backing file is raw; its format must not be probed.
    static let featureBackingFormatNoProbe: UInt64 = 0x04
    /// Every `features` bit this reader understands; an image with any other is refused (spec: "must not be opened").
    static let knownFeatures: UInt64 = 0x07
    /// Cluster sizes the spec allows: powers of two from 4 KiB to 64 MiB.
    static let clusterSizeRange: ClosedRange<UInt32> = 4096...(64 << 20)
    /// Table sizes (in clusters) the spec allows: powers of two from 1 to 16.
    static let tableSizeRange: ClosedRange<UInt32> = 1...16
    /// Longest backing file name accepted (qemu reads it into a PATH_MAX buffer).
    static let maxBackingNameBytes: UInt32 = 4095

    /// Bytes per cluster.
    var clusterSize: UInt32
    /// Clusters per L1 or L2 table.
    var tableSize: UInt32
    /// Clusters used by the header and anything stored before the first regular cluster.
    var headerSize: UInt32
    /// Incompatible feature bits.
    var features: UInt64
    /// Compatible feature bits (none defined; unknown ones are ignored).
    var compatFeatures: UInt64
    /// Self-clearing feature bits (none defined; a read-only reader never clears them).
    var autoclearFeatures: UInt64
    /// File offset of the L1 table.
    var l1TableOffset: UInt64
    /// Guest size in bytes.
    var imageSize: UInt64
    /// Offset of the backing file name from the start of the file.
    var backingFilenameOffset: UInt32
    /// Length of the backing file name (not NUL-terminated).
    var backingFilenameSize: UInt32

    /// Bytes of one L1 or L2 table.
    var tableBytes: UInt64 { UInt64(clusterSize) * UInt64(tableSize) }
    /// Entries of one table.
    var tableEntries: UInt64 { tableBytes / 8 }
    /// Bytes before the first regular cluster.
    var headerBytes: UInt64 { UInt64(headerSize) * UInt64(clusterSize) }
    /// The image has a backing file.
    var hasBackingFile: Bool { features & QEDHeader.featureBackingFile != 0 }
    /// The backing file is raw and must not be probed.
    var backingIsRaw: Bool { features & QEDHeader.featureBackingFormatNoProbe != 0 }
    /// The image was not closed cleanly.
    var needsCheck: Bool { features & QEDHeader.featureNeedCheck != 0 }
    /// The largest image the L1 table can map: `tableEntries^2 * clusterSize` (saturating).
    var maxImageSize: UInt64 {
        let (squared, o1) = tableEntries.multipliedReportingOverflow(by: tableEntries)
        let (total, o2) = squared.multipliedReportingOverflow(by: UInt64(clusterSize))
        return o1 || o2 ? .max : total
    }

    /// Decodes the first 64 bytes of a file. Throws `invalidFormat` without the magic.
    static func decode(_ bytes: [UInt8]) throws -> QEDHeader {
        let r = ByteReader(bytes, structure: "QED header")
        guard (try? r.u32le(0)) == magic else {
            throw KDCTError.invalidFormat("no QED magic QED\\0 at offset 0", field: "magic")
        }
        return QEDHeader(clusterSize: try r.u32le(4), tableSize: try r.u32le(8), headerSize: try r.u32le(12),
                         features: try r.u64le(16), compatFeatures: try r.u64le(24),
                         autoclearFeatures: try r.u64le(32), l1TableOffset: try r.u64le(40),
                         imageSize: try r.u64le(48), backingFilenameOffset: try r.u32le(56),
                         backingFilenameSize: try r.u32le(60))
    }

    /// Checks the header for a file of `fileSize` bytes. Throws `unsupported` (unknown feature bits), `corrupt`,
    /// `limitExceeded` or `truncated`, naming the field and its value.
    func validate(fileSize: UInt64, limits: ImageLimits) throws {
        let unknown = features & ~QEDHeader.knownFeatures
        if unknown != 0 {
            throw KDCTError.unsupported(
                "unknown incompatible feature bits 0x\(String(unknown, radix: 16)) (features 0x\(String(features, radix: 16))); the spec forbids opening such an image",
                field: "features")
        }
        if !QEDHeader.clusterSizeRange.contains(clusterSize) || clusterSize & (clusterSize - 1) != 0 {
            throw KDCTError.corrupt("cluster size \(clusterSize) is not a power of two from 4 KiB to 64 MiB",
                                    field: "cluster_size")
        }
        if !QEDHeader.tableSizeRange.contains(tableSize) || tableSize & (tableSize - 1) != 0 {
            throw KDCTError.corrupt("table size \(tableSize) is not a power of two from 1 to 16 clusters",
                                    field: "table_size")
        }
        try ImageLimits.check("cluster size", UInt64(clusterSize), max: limits.maxClusterSize)
        try ImageLimits.check("table size (\(tableSize) clusters of \(clusterSize) bytes)", tableBytes, max: limits.maxTableBytes)
        if headerSize == 0 {
            throw KDCTError.corrupt("header size is 0 clusters", field: "header_size")
        }
        if imageSize % 512 != 0 {
            throw KDCTError.corrupt("image size \(imageSize) is not a multiple of 512", field: "image_size")
        }
        if imageSize > maxImageSize {
            throw KDCTError.corrupt("image size \(imageSize) is larger than the tables can map (\(maxImageSize))",
                                    field: "image_size")
        }
        try ImageLimits.check("virtual size", imageSize, max: limits.maxVirtualSize)
        if l1TableOffset % UInt64(clusterSize) != 0 || l1TableOffset < headerBytes {
            throw KDCTError.corrupt(
                "L1 table offset \(l1TableOffset) is not a cluster-aligned offset after the header (\(headerBytes) bytes)",
                field: "l1_table_offset")
        }
        if l1TableOffset > fileSize || tableBytes > fileSize - l1TableOffset {
            throw KDCTError(.truncated,
                            "the L1 table (\(tableBytes) bytes at offset \(l1TableOffset)) goes past the end of the file (\(fileSize) bytes)",
                            field: "l1_table_offset")
        }
        if hasBackingFile {
            let end = UInt64(backingFilenameOffset) + UInt64(backingFilenameSize)
            if end > headerBytes {
                throw KDCTError.corrupt(
                    "the backing file name (\(backingFilenameSize) bytes at offset \(backingFilenameOffset)) is not inside the header (\(headerBytes) bytes)",
                    field: "backing_filename_offset")
            }
            if backingFilenameSize > QEDHeader.maxBackingNameBytes {
                throw KDCTError.corrupt("backing file name of \(backingFilenameSize) bytes is too long",
                                        field: "backing_filename_size")
            }
            if end > fileSize {
                throw KDCTError(.truncated, "the backing file name goes past the end of the file (\(fileSize) bytes)",
                                field: "backing_filename_offset")
            }
        }
    }
}
