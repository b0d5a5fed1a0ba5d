/// A JSON-like value for format-specific details in `ImageInfo`, keeping object keys in insertion order so
/// human and JSON output are stable.
public indirect enum InfoValue: Sendable, Equatable {
    /// A JSON string.
    case string(String)
    /// A signed JSON number.
    case integer(Int64)
    /// An unsigned JSON number (sizes and offsets).
    case unsigned(UInt64)
    /// `true` or `false`.
    case bool(Bool)
    /// A JSON array.
    case array([InfoValue])
    /// A JSON object, its keys in the order given.
    case object([(String, InfoValue)])

    public static func == (lhs: InfoValue, rhs: InfoValue) -> Bool {
        switch (lhs, rhs) {
        case let (.string(a), .string(b)): return a == b
        case let (.integer(a), .integer(b)): return a == b
        case let (.unsigned(a), .unsigned(b)): return a == b
        case let (.bool(a), .bool(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value under `key` of an object, or nil.
    public subscript(key: String) -> InfoValue? {
        guard case let .object(pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }
}

/// A reference from one image file to another: a backing file, a VMDK extent, a parent disk.
public struct ImageReference: Sendable, Equatable {
    /// What role the referenced file plays.
    public enum Kind: String, Sendable {
        /// A copy-on-write backing file (QCOW2, QCOW, QED).
        case backingFile = "backing-file"
        /// A file holding part of the guest data (a VMDK extent).
        case extent = "extent"
        /// The parent of a differencing disk (VHD, VHDX, VDI, a VMDK delta disk).
        case parent = "parent"
        /// A QCOW2 external data file.
        case dataFile = "data-file"
    }

    /// The role of the referenced file.
    public var kind: Kind
    /// The name exactly as stored in the image (a path, a locator, a UUID description).
    public var name: String
    /// The path it resolved to under the reference policy, when it was resolved.
    public var resolvedPath: String?
    /// Whether the referenced file was opened.
    public var opened: Bool

    /// Creates a reference description.
    package init(kind: Kind, name: String, resolvedPath: String? = nil, opened: Bool = false) {
        self.kind = kind
        self.name = name
        self.resolvedPath = resolvedPath
        self.opened = opened
    }
}

/// What an image says about itself: the data behind `info`.
public struct ImageInfo: Sendable {
    /// The container format.
    public var format: ImageFormat
    /// The variant within the format (`monolithicSparse`, `dynamic`, `fixed`, `differencing`...).
    public var subformat: String?
    /// The file name as given.
    public var filename: String
    /// Guest-visible size in bytes.
    public var virtualSize: UInt64
    /// Bytes the file occupies on disk (allocated blocks), when known.
    public var actualSize: UInt64?
    /// Allocation unit of the format (cluster, grain, block), when it has one.
    public var clusterSize: UInt64?
    /// The image was not closed cleanly (dirty flag, log to replay).
    public var dirty: Bool
    /// The backing or parent file as named by the image.
    public var backingFilename: String?
    /// The backing file's format as named by the image.
    public var backingFormat: String?
    /// Every file this image names.
    public var references: [ImageReference]
    /// Who wrote the image, when the image says or hints so (creator application, tool version).
    public var producer: String?
    /// Format-specific fields (an `.object`), shown under qemu's `format-specific` key.
    public var formatSpecific: InfoValue
    /// Remarks worth showing (a replayed log, a size convention applied).
    public var notes: [String]
    /// Info of the layers below, top first, when the image is a chain that was opened.
    public var backingChain: [ImageInfo]

    /// Creates an info record; everything but format, filename and size starts empty.
    package init(format: ImageFormat, filename: String, virtualSize: UInt64, subformat: String? = nil,
                clusterSize: UInt64? = nil, dirty: Bool = false, backingFilename: String? = nil,
                backingFormat: String? = nil, references: [ImageReference] = [], producer: String? = nil,
                formatSpecific: InfoValue = .object([]), notes: [String] = [], actualSize: UInt64? = nil,
                backingChain: [ImageInfo] = []) {
        self.format = format
        self.filename = filename
        self.virtualSize = virtualSize
        self.subformat = subformat
        self.clusterSize = clusterSize
        self.dirty = dirty
        self.backingFilename = backingFilename
        self.backingFormat = backingFormat
        self.references = references
        self.producer = producer
        self.formatSpecific = formatSpecific
        self.notes = notes
        self.actualSize = actualSize
        self.backingChain = backingChain
    }
}
