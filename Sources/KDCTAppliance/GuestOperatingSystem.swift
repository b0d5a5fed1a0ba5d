import KDCTFormats

/// The guest operating system an OVF descriptor declares, from every place producers put it.
public struct GuestOperatingSystem: Sendable, Equatable {
    /// `OperatingSystemSection/@ovf:id`: the DMTF CIM_OperatingSystem.OSType code.
    public var cimID: Int?
    /// `OperatingSystemSection/@vmw:osType` (VMware guest id, e.g. `windows9_64Guest`).
    public var vmwareType: String?
    /// `vbox:OSType` (VirtualBox guest type, e.g. `Windows10_64`, `Ubuntu_64`).
    public var virtualBoxType: String?
    /// `OperatingSystemSection/Description`.
    public var description: String?

    /// Creates a description from the fields a descriptor gave.
    public init(cimID: Int? = nil, vmwareType: String? = nil, virtualBoxType: String? = nil, description: String? = nil) {
        self.cimID = cimID
        self.vmwareType = vmwareType
        self.virtualBoxType = virtualBoxType
        self.description = description
    }

    /// The CIM name of `cimID`, when it is one this table knows.
    public var cimName: String? { cimID.flatMap { Self.cimNames[$0] } }

    /// The most specific name available, for display.
    public var displayName: String {
        if let description, !description.isEmpty { return description }
        if let vmwareType { return vmwareType }
        if let virtualBoxType { return virtualBoxType }
        if let cimName { return cimName }
        if let cimID { return "CIM OS type \(cimID)" }
        return "unknown"
    }

    /// True when any of the fields says Windows (VMware ids start with `win`, VirtualBox types with `Windows`,
    /// the CIM code is a Windows one, or the description names Windows).
    public var isWindows: Bool {
        if let vmwareType, vmwareType.lowercased().hasPrefix("win") { return true }
        if let virtualBoxType, virtualBoxType.lowercased().hasPrefix("windows") { return true }
        if let cimID, Self.windowsCIMIDs.contains(cimID) { return true }
        if let description, description.lowercased().contains("windows") { return true }
        return false
    }

    /// True when a field says the guest is 64-bit ARM (VirtualBox `*_arm64`, VMware `arm-*`).
    public var isARM64: Bool {
        let fields = [vmwareType, virtualBoxType].compactMap { $0?.lowercased() }
        return fields.contains { $0.contains("arm64") || $0.hasPrefix("arm-") }
    }

    /// Windows codes of CIM_OperatingSystem.OSType (DMTF CIM schema): 15-19 (3.x, 95, 98, NT, CE), 58 (2000),
    /// 63 (Me), 67 (XP), 69-77 (Server 2003, XP 64-bit, XP Embedded, Vista, POS, Server 2008), 103 (Server 2008 R2),
    /// 105 (7), 111-115 (Server 2011, Server 2012, 8, 8 64-bit, Server 2012 R2).
    static let windowsCIMIDs: Set<Int> = [15, 16, 17, 18, 19, 58, 63, 67, 69, 70, 71, 72, 73, 74, 75, 76, 77, 103, 105,
                                          111, 112, 113, 114, 115]

    /// Names of the CIM_OperatingSystem.OSType codes producers commonly write.
    static let cimNames: [Int: String] = [
        0: "Unknown", 1: "Other", 2: "MACOS", 14: "MSDOS", 15: "WIN3x", 16: "WIN95", 17: "WIN98", 18: "WINNT",
        19: "WINCE", 21: "NetWare", 29: "Solaris", 36: "LINUX", 41: "BSDUNIX", 42: "FreeBSD", 43: "NetBSD",
        58: "Windows 2000", 63: "Windows (R) Me", 65: "OpenBSD", 66: "Not Applicable", 67: "Windows XP",
        69: "Microsoft Windows Server 2003", 70: "Microsoft Windows Server 2003 64-Bit", 71: "Windows XP 64-Bit",
        72: "Windows XP Embedded", 73: "Windows Vista", 74: "Windows Vista 64-Bit",
        75: "Windows Embedded for Point of Service", 76: "Microsoft Windows Server 2008",
        77: "Microsoft Windows Server 2008 64-Bit", 78: "FreeBSD 64-Bit", 79: "RedHat Enterprise Linux",
        80: "RedHat Enterprise Linux 64-Bit", 81: "Solaris 64-Bit", 82: "SUSE", 83: "SUSE 64-Bit", 84: "SLES",
        85: "SLES 64-Bit", 86: "Novell OES", 87: "Novell Linux Desktop", 88: "Sun Java Desktop System",
        89: "Mandriva", 90: "Mandriva 64-Bit", 91: "TurboLinux", 92: "TurboLinux 64-Bit", 93: "Ubuntu",
        94: "Ubuntu 64-Bit", 95: "Debian", 96: "Debian 64-Bit", 97: "Linux 2.4.x", 98: "Linux 2.4.x 64-Bit",
        99: "Linux 2.6.x", 100: "Linux 2.6.x 64-Bit", 101: "Linux 64-Bit", 102: "Other 64-Bit",
        103: "Microsoft Windows Server 2008 R2", 104: "VMware ESXi", 105: "Microsoft Windows 7", 106: "CentOS 32-bit",
        107: "CentOS 64-bit", 108: "Oracle Enterprise Linux 32-bit", 109: "Oracle Enterprise Linux 64-bit",
        110: "eComStation 32-bitx", 111: "Microsoft Windows Server 2011", 112: "Microsoft Windows Server 2012",
        113: "Microsoft Windows 8", 114: "Microsoft Windows 8 64-bit", 115: "Microsoft Windows Server 2012 R2",
    ]
}
