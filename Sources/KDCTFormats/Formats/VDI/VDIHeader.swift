/// A 16-byte VirtualBox UUID (RTUUID) as stored in a VDI header.
///
/// Compared byte for byte; shown in the mixed-endian GUID layout VirtualBox uses (`VBoxManage showmediuminfo`,
/// the `uuid="{...}"` attributes of a `.vbox` file), i.e. the first three fields byte-swapped.
struct VDIUUID: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes exactly as stored in the file.
    let bytes: [UInt8]

    /// Wraps 16 stored bytes (shorter input is zero-padded, longer is cut, so the value is always 16 bytes).
    init(bytes: [UInt8]) {
        var padded = Array(bytes.prefix(16))
        padded += [UInt8](repeating: 0, count: 16 - padded.count)
        self.bytes = padded
    }

    /// The all-zero UUID (an unset field).
    static let null = VDIUUID(bytes: [])

    /// True when every byte is zero.
    var isNull: Bool { bytes.allSatisfy { $0 == 0 } }

    var description: String {
        (try? ByteReader(bytes, structure: "UUID").guid(0)) ?? "invalid"
    }
}

/// The CHS geometry VirtualBox stores in a VDI header (VDIDISKGEOMETRY). Informational only: reading never uses it.
struct VDIGeometry: Sendable, Equatable {
    /// Cylinders.
    var cylinders: UInt32
    /// Heads.
    var heads: UInt32
    /// Sectors per track.
    var sectors: UInt32
    /// Bytes per sector.
    var sectorSize: UInt32
}

/// The image type field of a VDI header (VDIIMAGETYPE in VirtualBox's VDICore.h).
enum VDIImageType: UInt32, Sendable {
    /// Dynamically growing base image ("normal").
    case dynamic = 1
    /// Preallocated base image ("fixed"; qemu calls it static).
    case `static` = 2
    /// Undo image of VirtualBox 1.x: a growing image layered over another one.
    case undo = 3
    /// Differencing image (a snapshot): blocks it does not hold come from its parent.
    case differencing = 4

    /// The subformat name shown by `info`.
    var name: String {
        switch self {
        case .dynamic: return "dynamic"
        case .static: return "static"
        case .undo: return "undo"
        case .differencing: return "differencing"
        }
    }
}

/// The VDI pre-header and header, all layouts VirtualBox still opens (VDICore.h):
///
/// - pre-header (all versions): 64 bytes of text, signature `0xBEDA107F` at 0x40, version at 0x44
///   (major in the high 16 bits).
/// - version 0.2 (VDIHEADER0, VirtualBox's oldest): no header size field, block map right after the header
///   at 0x1A4, data right after the map, no block_extra, no parent modification UUID.
/// - versions 1.x (VDIHEADER1, `cbHeader` >= 0x180): explicit block map and data offsets, block_extra, four UUIDs.
/// - version 1.1 with `cbHeader` >= 0x190 (VDIHEADER1PLUS): adds the LCHS geometry.
///
/// All fields are little-endian. `decode` only parses; `validate` applies VirtualBox's own header checks plus
/// the library's limits.
struct VDIHeader: Sendable, Equatable {
    /// The signature at offset 0x40.
    static let signature: UInt32 = 0xBEDA_107F
    /// Bytes read from the start of the file to decode any known header layout.
    static let readSize = 512
    /// Size of the pre-header (text + signature + version).
    static let preHeaderSize: UInt64 = 0x48
    /// Size of VDIHEADER0 (the 0.x header after the pre-header).
    static let header0Size: UInt64 = 348
    /// Size of VDIHEADER1 (minimum `cbHeader` of a 1.x header).
    static let header1Size: UInt64 = 0x180
    /// Size of VDIHEADER1PLUS (a 1.1 header carrying the LCHS geometry).
    static let header1PlusSize: UInt64 = 0x190
    /// Image flags VirtualBox accepts (VD_VDI_IMAGE_FLAGS_MASK: fixed, diff, zero-expand).
    static let knownFlags: UInt32 = 0x0003_0100

    /// The text at the start of the file ("<<< Oracle VM VirtualBox Disk Image >>>"), for eyes only.
    var fileInfo: String
    /// The raw version: major in the high 16 bits, minor in the low 16 bits.
    var version: UInt32
    /// `cbHeader` of a 1.x header; nil for 0.x.
    var headerSize: UInt32?
    /// The raw image type field.
    var imageTypeValue: UInt32
    /// Image flags (VDI_IMAGE_FLAGS_*).
    var flags: UInt32
    /// The image comment (description).
    var comment: String
    /// File offset of the block map.
    var blocksOffset: UInt64
    /// File offset of the first data block.
    var dataOffset: UInt64
    /// The legacy geometry (previous VirtualBox versions stored the physical CHS here).
    var legacyGeometry: VDIGeometry
    /// The logical CHS geometry (1.1 headers of at least 0x190 bytes).
    var lchsGeometry: VDIGeometry?
    /// Size of the disk in bytes as stored.
    var diskSize: UInt64
    /// Bytes of guest data per block.
    var blockSize: UInt32
    /// Bytes of service data stored before the guest data of each block (`cbBlockExtra`).
    var blockExtra: UInt32
    /// Number of entries in the block map.
    var blockCount: UInt32
    /// Number of blocks allocated in the file.
    var blocksAllocated: UInt32
    /// UUID given to the image at creation (what a child's link UUID names).
    var creationUUID: VDIUUID
    /// UUID changed on every modification session (what a child's parent UUID records).
    var modificationUUID: VDIUUID
    /// Differencing images: the creation UUID of the parent.
    var linkUUID: VDIUUID
    /// Differencing images (1.x): the parent's modification UUID when the child was created.
    var parentModificationUUID: VDIUUID?

    /// Major version.
    var majorVersion: UInt32 { version >> 16 }
    /// Minor version.
    var minorVersion: UInt32 { version & 0xFFFF }
    /// The image type, or nil when the field holds an unknown value.
    var imageType: VDIImageType? { VDIImageType(rawValue: imageTypeValue) }
    /// True when blocks this image lacks come from a parent: differencing images, and undo images naming a parent.
    var hasParent: Bool {
        imageType == .differencing || (imageType == .undo && !linkUUID.isNull)
    }
    /// The guest-visible size: VirtualBox rounds a size that is not a multiple of 512 down to whole sectors
    /// (vdiImageReadHeader), which is what the guest saw.
    var virtualSize: UInt64 { diskSize & ~UInt64(511) }
    /// Distance between the starts of two consecutive blocks in the file.
    var blockStride: UInt64 { UInt64(blockSize) + UInt64(blockExtra) }

    /// Decodes the pre-header and header from the first bytes of a file (at least the header's size; 512 is
    /// always enough). Throws `invalidFormat` without the signature, `unsupported` for versions VirtualBox does
    /// not open, `truncated` when `bytes` is shorter than the header.
    static func decode(_ bytes: [UInt8]) throws -> VDIHeader {
        let r = ByteReader(bytes, structure: "VDI header")
        guard (try? r.u32le(0x40)) == signature else {
            throw KDCTError.invalidFormat("no VDI signature 0xBEDA107F at offset 0x40", field: "signature")
        }
        let version = try r.u32le(0x44)
        let fileInfo = try r.ascii(0, 64).trimmingTrailingNewlines()
        let major = version >> 16
        let minor = version & 0xFFFF
        // VirtualBox opens major version 1 (any minor) and the old 0.2 (vdiValidatePreHeader).
        if major == 0 {
            guard version == 0x0000_0002 else {
                throw KDCTError.unsupported("VDI version \(major).\(minor) is not one VirtualBox opens (0.2 or 1.x)",
                                            field: "version")
            }
            // VDIHEADER0 follows the pre-header directly.
            let blockCount = try r.u32le(0x16C)
            return VDIHeader(
                fileInfo: fileInfo, version: version, headerSize: nil,
                imageTypeValue: try r.u32le(0x48), flags: try r.u32le(0x4C), comment: try r.utf8(0x50, 256),
                blocksOffset: preHeaderSize + header0Size,
                dataOffset: preHeaderSize + header0Size + UInt64(blockCount) * 4,
                legacyGeometry: try geometry(r, 0x150), lchsGeometry: nil,
                diskSize: try r.u64le(0x160), blockSize: try r.u32le(0x168), blockExtra: 0,
                blockCount: blockCount, blocksAllocated: try r.u32le(0x170),
                creationUUID: VDIUUID(bytes: try r.slice(0x174, 16)),
                modificationUUID: VDIUUID(bytes: try r.slice(0x184, 16)),
                linkUUID: VDIUUID(bytes: try r.slice(0x194, 16)), parentModificationUUID: nil)
        }
        guard major == 1 else {
            throw KDCTError.unsupported("VDI version \(major).\(minor) is not one VirtualBox opens (0.2 or 1.x)",
                                        field: "version")
        }
        let headerSize = try r.u32le(0x48)
        var lchs: VDIGeometry?
        if minor == 1 && UInt64(headerSize) >= header1PlusSize {
            lchs = try geometry(r, 0x1C8)
        }
        return VDIHeader(
            fileInfo: fileInfo, version: version, headerSize: headerSize,
            imageTypeValue: try r.u32le(0x4C), flags: try r.u32le(0x50), comment: try r.utf8(0x54, 256),
            blocksOffset: UInt64(try r.u32le(0x154)), dataOffset: UInt64(try r.u32le(0x158)),
            legacyGeometry: try geometry(r, 0x15C), lchsGeometry: lchs,
            diskSize: try r.u64le(0x170), blockSize: try r.u32le(0x178), blockExtra: try r.u32le(0x17C),
            blockCount: try r.u32le(0x180), blocksAllocated: try r.u32le(0x184),
            creationUUID: VDIUUID(bytes: try r.slice(0x188, 16)),
            modificationUUID: VDIUUID(bytes: try r.slice(0x198, 16)),
            linkUUID: VDIUUID(bytes: try r.slice(0x1A8, 16)),
            parentModificationUUID: VDIUUID(bytes: try r.slice(0x1B8, 16)))
    }

    private static func geometry(_ r: ByteReader, _ offset: Int) throws -> VDIGeometry {
        VDIGeometry(cylinders: try r.u32le(offset), heads: try r.u32le(offset + 4),
                    sectors: try r.u32le(offset + 8), sectorSize: try r.u32le(offset + 12))
    }

    /// Applies VirtualBox's header checks (vdiValidateHeader) that matter for reading, and the library's limits,
    /// for a file of `fileSize` bytes. Throws `corrupt`, `unsupported`, `limitExceeded` or `truncated`, naming
    /// the field and its value.
    func validate(fileSize: UInt64, limits: ImageLimits) throws {
        if let headerSize, UInt64(headerSize) < VDIHeader.header1Size {
            throw KDCTError.corrupt("header size \(headerSize) is smaller than the 1.x header (\(VDIHeader.header1Size) bytes)",
                                    field: "cbHeader")
        }
        guard imageType != nil else {
            throw KDCTError.corrupt("image type \(imageTypeValue) is not one of 1 (dynamic), 2 (static), 3 (undo), 4 (differencing)",
                                    field: "image type")
        }
        if flags & ~VDIHeader.knownFlags != 0 {
            throw KDCTError.unsupported(
                "image flags 0x\(String(flags, radix: 16)) include unknown bits 0x\(String(flags & ~VDIHeader.knownFlags, radix: 16))",
                field: "image flags")
        }
        if diskSize == 0 { throw KDCTError.corrupt("disk size is 0", field: "disk size") }
        try ImageLimits.check("disk size", diskSize, max: limits.maxVirtualSize)
        // Block size: a power of two (VirtualBox shifts by it), at least one sector.
        if blockSize < 512 || blockSize & (blockSize - 1) != 0 {
            throw KDCTError.corrupt("block size \(blockSize) is not a power of two of at least 512", field: "block size")
        }
        try ImageLimits.check("block size", UInt64(blockSize), max: limits.maxClusterSize)
        if blockExtra != 0 && blockExtra & (blockExtra - 1) != 0 {
            throw KDCTError.corrupt("block extra size \(blockExtra) is not a power of two", field: "block extra")
        }
        try ImageLimits.check("block extra size", UInt64(blockExtra), max: limits.maxClusterSize)
        if blockCount == 0 { throw KDCTError.corrupt("the block map has no entries", field: "block count") }
        let mapBytes = UInt64(blockCount) * 4
        try ImageLimits.check("block map size (\(blockCount) blocks)", mapBytes, max: limits.maxTableBytes)
        let covered = UInt64(blockCount) * UInt64(blockSize)
        if diskSize > covered {
            throw KDCTError.corrupt(
                "disk size \(diskSize) is larger than the block map covers (\(blockCount) blocks of \(blockSize) bytes = \(covered))",
                field: "disk size")
        }
        if blocksAllocated > blockCount {
            throw KDCTError.corrupt("\(blocksAllocated) blocks allocated but the map has only \(blockCount)",
                                    field: "blocks allocated")
        }
        if headerSize != nil && blocksOffset < VDIHeader.preHeaderSize + VDIHeader.header1Size {
            throw KDCTError.corrupt("block map offset \(blocksOffset) lies inside the header", field: "blocks offset")
        }
        if dataOffset < blocksOffset + mapBytes {
            throw KDCTError.corrupt(
                "data offset \(dataOffset) lies inside the block map (\(blocksOffset) + \(mapBytes) bytes)",
                field: "data offset")
        }
        if blocksOffset + mapBytes > fileSize {
            throw KDCTError(.truncated,
                            "the block map (\(mapBytes) bytes at offset \(blocksOffset)) goes past the end of the file (\(fileSize) bytes)",
                            field: "block map")
        }
        if hasParent && linkUUID.isNull {
            throw KDCTError.corrupt("differencing image with a null link UUID: its parent cannot be identified",
                                    field: "link UUID")
        }
    }
}

extension ByteReader {
    /// Bytes at `offset` as UTF-8 text (invalid sequences replaced), stopping at the first NUL.
    func utf8(_ offset: Int, _ count: Int) throws -> String {
        let raw = try slice(offset, count)
        return String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

extension String {
    /// The string without trailing line ends.
    func trimmingTrailingNewlines() -> String {
        var result = Substring(self)
        while let last = result.last, last == "\n" || last == "\r" || last == "\r\n" { result = result.dropLast() }
        return String(result)
    }
}
