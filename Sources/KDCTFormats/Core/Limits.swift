/// Caps on every size and count read from an image, checked before anything is allocated from it.
///
/// The defaults accept every image real hypervisors write (see FORMATS.md, "Limits") while keeping a hostile
/// image from making the process allocate unbounded memory or loop for long. Callers with bigger needs raise them.
public struct ImageLimits: Sendable, Equatable {
    /// Largest guest size accepted (default 64 TiB, VHDX's maximum).
    public var maxVirtualSize: UInt64 = 64 << 40
    /// Largest metadata table (L1, BAT, grain directory, block map) loaded into memory at open (default 256 MiB).
    public var maxTableBytes: UInt64 = 256 << 20
    /// Largest allocation unit (cluster, grain, block) read as a whole (default 256 MiB, VHDX's largest block).
    public var maxClusterSize: UInt64 = 256 << 20
    /// Largest text descriptor (VMDK, OVF) read (default 1 MiB).
    public var maxDescriptorBytes: UInt64 = 1 << 20
    /// Most extents a VMDK descriptor may list (default 4096).
    public var maxExtents: Int = 4096
    /// Deepest backing/parent chain followed (default 32).
    public var maxChainDepth: Int = 32
    /// Most internal snapshots listed (default 65536, qcow2's own cap).
    public var maxSnapshots: Int = 65536
    /// Bytes of metadata tables (L2, grain tables) cached per open image (default 32 MiB).
    public var maxTableCacheBytes: UInt64 = 32 << 20
    /// Most log entries replayed for a VHDX (default 65536).
    public var maxLogEntries: Int = 65536

    /// The default limits.
    public init() {}

    /// Throws `limitExceeded` naming `field` when `value` is above `limit`.
    package static func check(_ field: String, _ value: UInt64, max limit: UInt64, file: String? = nil) throws {
        if value > limit { throw KDCTError.limit(field, value: value, limit: limit, file: file) }
    }
}

/// Which files an image may make us open (backing files, extents, parents). See docs/ARCHITECTURE.md, "References and trust".
public enum ReferencePolicy: String, Sendable, CaseIterable {
    /// Open no referenced file at all (strict mode for untrusted uploads).
    case none
    /// Default: only relative paths without `..` that resolve to a regular file inside the directory of the image
    /// naming them (subdirectories included; symlinks that leave the directory are refused).
    case sameDirectory = "same-dir"
    /// Any local path, absolute or relative, including `..`. Protocol prefixes are still refused.
    case any
}

/// How an image is opened: format override, limits, reference policy, strictness.
public struct OpenOptions: Sendable {
    /// The declared format; nil probes the content. A declaration the content contradicts is an error.
    public var format: ImageFormat?
    /// Safety limits.
    public var limits = ImageLimits()
    /// Which referenced files may be opened.
    public var referencePolicy: ReferencePolicy = .sameDirectory
    /// Strict mode for untrusted input (see SECURITY section of FORMATS.md): no references, restricted subformats,
    /// ambiguous files refused, declared format must match.
    public var untrusted = false
    /// Open referenced files (false for `info`, which only reports them).
    public var openReferences = true
    /// Explicit parent images for formats that find parents by UUID (VDI snapshots), searched before directories.
    public var parentFiles: [String] = []
    /// VHD virtual size convention override (nil: per creator, as qemu does).
    public var vhdSizeMode: VHDSizeMode?

    /// Default options.
    public init(format: ImageFormat? = nil) { self.format = format }

    /// The policy actually applied: strict mode opens nothing.
    public var effectiveReferencePolicy: ReferencePolicy { untrusted ? .none : referencePolicy }
}

/// How a VHD's virtual size is taken: from the footer's current size or from its CHS geometry.
public enum VHDSizeMode: String, Sendable, CaseIterable {
    /// The footer's `current_size` field.
    case current
    /// cylinders x heads x sectors x 512.
    case chs
}
