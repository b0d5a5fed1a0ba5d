/// The 512-byte VHD "hard disk footer" (Virtual Hard Disk Image Format Specification, "Hard Disk Footer Format").
///
/// Every VHD ends with one; dynamic and differencing disks also keep a copy at offset 0. All fields are
/// big-endian. Old Virtual PC versions wrote a 511-byte footer (the last reserved byte missing); it is decoded
/// the same way with that byte taken as zero.
struct VHDFooter: Sendable, Equatable {
    /// Size of the footer structure.
    static let size = 512
    /// The cookie every footer starts with.
    static let cookie: [UInt8] = Array("conectix".utf8)

    /// The `Disk Type` field.
    enum DiskType: UInt32, Sendable {
        case fixed = 2
        case dynamic = 3
        case differencing = 4

        /// The subformat name shown by `info`.
        var name: String {
            switch self {
            case .fixed: return "fixed"
            case .dynamic: return "dynamic"
            case .differencing: return "differencing"
            }
        }
    }

    /// `Features` (bit 0: temporary, bit 1: reserved, always set).
    var features: UInt32
    /// `File Format Version` (0x00010000).
    var formatVersion: UInt32
    /// `Data Offset`: file offset of the dynamic disk header, 0xFFFFFFFFFFFFFFFF for fixed disks.
    var dataOffset: UInt64
    /// `Time Stamp`: seconds since 2000-01-01 00:00:00 UTC.
    var timestamp: UInt32
    /// `Creator Application`, four raw bytes (`vpc `, `win `, `d2v\0`, `qemu`...).
    var creatorApplication: [UInt8]
    /// `Creator Version` major (high 16 bits).
    var creatorVersionMajor: UInt16
    /// `Creator Version` minor (low 16 bits).
    var creatorVersionMinor: UInt16
    /// `Creator Host OS`, four raw bytes (`Wi2k`, `Mac `).
    var creatorHostOS: [UInt8]
    /// `Original Size` in bytes.
    var originalSize: UInt64
    /// `Current Size` in bytes.
    var currentSize: UInt64
    /// `Disk Geometry` cylinders.
    var cylinders: UInt16
    /// `Disk Geometry` heads.
    var heads: UInt8
    /// `Disk Geometry` sectors per track.
    var sectorsPerTrack: UInt8
    /// `Disk Type` as stored.
    var rawDiskType: UInt32
    /// `Checksum` as stored.
    var checksum: UInt32
    /// The checksum computed over the footer bytes (one's complement of the byte sum, checksum field excluded).
    var computedChecksum: UInt32
    /// `Unique Id`, 16 raw bytes.
    var uniqueID: [UInt8]
    /// `Saved State` flag.
    var savedState: UInt8

    /// The disk type, or nil when the stored value is not fixed/dynamic/differencing.
    var diskType: DiskType? { DiskType(rawValue: rawDiskType) }

    /// True when the stored checksum matches the content.
    var checksumIsValid: Bool { checksum == computedChecksum }

    /// cylinders × heads × sectors per track × 512: the size Virtual PC shows the guest.
    var geometrySize: UInt64 { UInt64(cylinders) * UInt64(heads) * UInt64(sectorsPerTrack) * 512 }

    /// The largest geometry a VHD can state (65535 × 16 × 255), used by tools that size by `current_size`
    /// (Disk2vhd, Hyper-V) for disks above 127 GiB: the geometry then says nothing about the size.
    static let maximumGeometrySectors: UInt64 = 65535 * 16 * 255

    /// True when the geometry is the maximum one.
    var hasMaximumGeometry: Bool {
        UInt64(cylinders) * UInt64(heads) * UInt64(sectorsPerTrack) == Self.maximumGeometrySectors
    }

    /// The creator application as text (NULs shown as `\0`).
    var creatorApplicationText: String { Self.fourCC(creatorApplication) }

    /// The creator host OS as text.
    var creatorHostOSText: String { Self.fourCC(creatorHostOS) }

    /// True when `bytes` (512 or 511 bytes) start with the `conectix` cookie.
    static func hasCookie(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 8 && Array(bytes[0..<8]) == cookie
    }

    /// Decodes a footer from 512 bytes, or 511 bytes for an old Virtual PC file (the missing last byte is a
    /// reserved one and is taken as zero). Fails with `invalidFormat` when the cookie is missing. The checksum is
    /// computed but not enforced: callers decide (see `checksumIsValid`).
    static func decode(_ bytes: [UInt8]) throws -> VHDFooter {
        guard bytes.count == size || bytes.count == size - 1 else {
            throw KDCTError.invalidFormat("a VHD footer is 512 bytes (511 in old files), got \(bytes.count)",
                                          field: "VHD footer")
        }
        guard hasCookie(bytes) else {
            throw KDCTError.invalidFormat("no \"conectix\" cookie", field: "VHD footer cookie")
        }
        let r = ByteReader(bytes, structure: "VHD footer")
        return VHDFooter(
            features: try r.u32be(8),
            formatVersion: try r.u32be(12),
            dataOffset: try r.u64be(16),
            timestamp: try r.u32be(24),
            creatorApplication: try r.slice(28, 4),
            creatorVersionMajor: try r.u16be(32),
            creatorVersionMinor: try r.u16be(34),
            creatorHostOS: try r.slice(36, 4),
            originalSize: try r.u64be(40),
            currentSize: try r.u64be(48),
            cylinders: try r.u16be(56),
            heads: try r.u8(58),
            sectorsPerTrack: try r.u8(59),
            rawDiskType: try r.u32be(60),
            checksum: try r.u32be(64),
            computedChecksum: onesComplementChecksum(bytes, skipping: 64..<68),
            uniqueID: try r.slice(68, 16),
            savedState: try r.u8(84))
    }

    /// The VHD checksum: one's complement of the sum of all bytes, the bytes in `skipping` (the checksum field)
    /// left out.
    static func onesComplementChecksum(_ bytes: [UInt8], skipping: Range<Int>) -> UInt32 {
        var sum: UInt32 = 0
        for (index, byte) in bytes.enumerated() where !skipping.contains(index) {
            sum &+= UInt32(byte)
        }
        return ~sum
    }

    /// Four raw bytes as text, NUL shown as `\0` and other non-printables as `?`.
    static func fourCC(_ bytes: [UInt8]) -> String {
        bytes.map { byte -> String in
            if byte == 0 { return "\\0" }
            if byte >= 0x20 && byte < 0x7F { return String(UnicodeScalar(byte)) }
            return "?"
        }.joined()
    }
}

/// Which size a VHD's guest sees: the footer's `current_size` or its CHS geometry, per creator (as qemu's
/// block/vpc.c decides), overridable by `OpenOptions.vhdSizeMode`.
enum VHDSizeRule {
    /// Creators whose tools size the disk by its CHS geometry: Virtual PC (`vpc `), Virtual Server (`vs  `) and
    /// qemu before 2.6 (`qemu`, which also rounds `current_size` to the geometry).
    static let geometryCreators: Set<[UInt8]> = [Array("vpc ".utf8), Array("vs  ".utf8), Array("qemu".utf8)]

    /// The virtual size of a disk with `footer`, and the rule that chose it.
    ///
    /// - Creators in `geometryCreators` use cylinders × heads × sectors × 512, every other creator (`win `
    ///   Hyper-V, `d2v` Disk2vhd, `qem2` qemu with force_size, `tap\0` XenServer, `CTXS`, `vbox`...) uses
    ///   `current_size`. qemu applies the geometry to unknown creators too; here an unknown creator gets
    ///   `current_size`, so no data past the geometry is ever cut off.
    /// - A disk at the maximum geometry (65535 × 16 × 255, about 127 GiB) always uses `current_size`, even when
    ///   `mode` asks for CHS: its geometry only says "larger than CHS can express".
    /// - `mode` (`OpenOptions.vhdSizeMode`) overrides the creator table.
    /// The result is rounded down to whole 512-byte sectors, as qemu does.
    static func virtualSize(of footer: VHDFooter, mode: VHDSizeMode?) -> (size: UInt64, source: VHDSizeMode) {
        var source: VHDSizeMode = geometryCreators.contains(footer.creatorApplication) ? .chs : .current
        if let mode { source = mode }
        if footer.hasMaximumGeometry { source = .current }
        let size = source == .chs ? footer.geometrySize : footer.currentSize
        return (size / 512 * 512, source)
    }
}
