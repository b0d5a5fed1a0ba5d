/// The disk image formats KDCTFormats recognises.
public enum ImageFormat: String, Sendable, CaseIterable, CustomStringConvertible {
    /// A plain byte-for-byte disk.
    case raw
    /// QEMU copy-on-write version 2 and 3.
    case qcow2
    /// QEMU copy-on-write version 1.
    case qcow
    /// QEMU Enhanced Disk.
    case qed
    /// VirtualBox Disk Image.
    case vdi
    /// VMware Virtual Machine Disk (descriptor, hosted sparse, COWD, seSparse extents).
    case vmdk
    /// Virtual PC / Hyper-V VHD (qemu calls it `vpc`).
    case vhd
    /// Hyper-V VHDX.
    case vhdx

    public var description: String { rawValue }

    /// Parses a user-supplied format name; accepts qemu's aliases (`vpc` for VHD).
    public init?(name: String) {
        switch name.lowercased() {
        case "vpc": self = .vhd
        case "qcow1": self = .qcow
        default:
            guard let format = ImageFormat(rawValue: name.lowercased()) else { return nil }
            self = format
        }
    }

    /// File name extensions that announce this format (a file with one of them must not be treated as raw).
    public var fileExtensions: [String] {
        switch self {
        case .raw: return []
        case .qcow2: return ["qcow2"]
        case .qcow: return ["qcow"]
        case .qed: return ["qed"]
        case .vdi: return ["vdi"]
        case .vmdk: return ["vmdk"]
        case .vhd: return ["vhd", "avhd"]
        case .vhdx: return ["vhdx", "avhdx"]
        }
    }

    /// The name qemu-img gives the format (`vpc` for VHD): in JSON output and image headers.
    package var qemuName: String { self == .vhd ? "vpc" : rawValue }

    /// Formats KDCTFormats can write.
    public var isWritable: Bool { self == .raw || self == .qcow2 }
}
