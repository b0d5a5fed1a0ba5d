import KDCTFormats

/// The firmware a virtual machine boots with.
public enum Firmware: String, Sendable, Equatable {
    /// Legacy PC BIOS.
    case bios
    /// UEFI.
    case efi
}

/// Where the firmware choice came from (for `info` and the conversion hints).
public enum FirmwareSource: String, Sendable, Equatable {
    /// `vmw:Config`/`vmw:ExtraConfig` key `firmware` (VMware).
    case vmware = "vmw:Config firmware"
    /// `vbox:Machine/Hardware/Firmware/@type` (VirtualBox).
    case virtualBox = "vbox:Machine Firmware"
    /// A hint in `vssd:VirtualSystemType` (e.g. `...-uefi`).
    case systemType = "VirtualSystemType"
    /// Guessed from the disk's partition table (GPT with an EFI system partition).
    case diskLayout = "disk partition table"
    /// Nothing said: BIOS, the default of every hypervisor.
    case defaulted = "default"
}

/// A disk controller an OVF disk is attached to.
public struct DiskController: Sendable, Equatable {
    /// The bus family.
    public enum Bus: String, Sendable, Equatable {
        /// IDE (ResourceType 5).
        case ide
        /// Parallel SCSI HBA (ResourceType 6: lsilogic, lsilogicsas, buslogic, VirtualSCSI).
        case scsi
        /// AHCI (ResourceType 20 with an AHCI/SATA subtype).
        case sata
        /// NVMe (ResourceType 20 with an NVMe subtype).
        case nvme
        /// virtio (ResourceType 20 with a virtio subtype).
        case virtio
        /// Any other storage controller.
        case other
    }

    /// The bus family, from `rasd:ResourceType` (5 IDE, 6 SCSI, 20 other storage) and its subtype.
    public var bus: Bus
    /// `rasd:ResourceSubType` (e.g. `lsilogic`, `VirtualSCSI`, `AHCI`, `vmware.sata.ahci`, `PIIX4`).
    public var model: String?
    /// `rasd:InstanceID`.
    public var instanceID: String
    /// `rasd:Address` (the controller's index among its kind).
    public var address: String?
}

/// One file of the appliance (`References/File`).
public struct ApplianceFile: Sendable, Equatable {
    /// `ovf:id`.
    public var id: String
    /// `ovf:href`: the member name in an OVA, or the path relative to the descriptor.
    public var href: String
    /// `ovf:size`, when given.
    public var size: UInt64?
    /// `ovf:compression` (`gzip`), when given.
    public var compression: String?
    /// `ovf:chunkSize`, when the file is split into chunks.
    public var chunkSize: UInt64?
}

/// One virtual disk (`DiskSection/Disk`) and where it is attached.
public struct VirtualDisk: Sendable, Equatable {
    /// `ovf:diskId`.
    public var diskID: String
    /// The file holding the disk image; nil for a blank disk to be created with `capacity`.
    public var file: ApplianceFile?
    /// Capacity in bytes (`ovf:capacity` times `ovf:capacityAllocationUnits`), when it is a number.
    public var capacity: UInt64?
    /// `ovf:capacity` as written (may be a `${property}` reference).
    public var capacityText: String
    /// `ovf:populatedSize`, when given.
    public var populatedSize: UInt64?
    /// `ovf:format` URI.
    public var formatURI: String?
    /// The image format the URI names (vmdk, vhd, qcow2, raw), when known.
    public var declaredFormat: ImageFormat?
    /// The controller the disk hangs off, when a hardware item attaches it.
    public var controller: DiskController?
    /// `rasd:AddressOnParent` of the disk item (its unit on the controller).
    public var addressOnParent: String?
    /// `rasd:ElementName` (or `Caption`) of the disk item.
    public var itemName: String?
}

/// One network adapter (`ResourceType` 10).
public struct NetworkAdapter: Sendable, Equatable {
    /// `rasd:ElementName` / `Caption`.
    public var name: String?
    /// `rasd:ResourceSubType` (E1000, E1000e, VMXNET3, PCNet32, virtio...).
    public var adapterType: String?
    /// `rasd:Connection`: the logical network it is on.
    public var network: String?
    /// MAC address (`rasd:Address`), when it holds one.
    public var macAddress: String?
    /// `rasd:InstanceID`.
    public var instanceID: String
}

/// A deployment configuration (`DeploymentOptionSection/Configuration`).
public struct DeploymentConfiguration: Sendable, Equatable {
    /// `ovf:id`: the name ``ApplianceOptions/configuration`` takes.
    public var id: String
    /// `Label`.
    public var label: String?
    /// `ovf:default="true"`.
    public var isDefault: Bool
}

/// A virtual machine as an OVF descriptor describes it, for one deployment configuration.
public struct VirtualMachineDescription: Sendable, Equatable {
    /// `VirtualSystem/Name`, else its `ovf:id`.
    public var name: String
    /// `VirtualSystem/@ovf:id`.
    public var systemID: String
    /// OVF version: `1.x` (envelope namespace `.../envelope/1`) or `2.0` (`.../envelope/2`).
    public var ovfVersion: String
    /// Who wrote the descriptor, when it says (ovftool build, VirtualBox machine section).
    public var producer: String?
    /// `vssd:VirtualSystemType` (e.g. `vmx-11`, `virtualbox-2.2`).
    public var virtualSystemType: String?
    /// The guest operating system.
    public var operatingSystem: GuestOperatingSystem
    /// Virtual CPUs.
    public var cpuCount: Int
    /// Cores per socket (`vmw:CoresPerSocket`), when given.
    public var coresPerSocket: Int?
    /// Memory in bytes.
    public var memoryBytes: UInt64
    /// Boot firmware.
    public var firmware: Firmware
    /// Where `firmware` came from.
    public var firmwareSource: FirmwareSource
    /// UEFI secure boot requested (`bootOptions.efiSecureBootEnabled`).
    public var secureBoot: Bool
    /// Disks in attachment order (disks no hardware item attaches come last).
    public var disks: [VirtualDisk]
    /// Network adapters in order.
    public var networkAdapters: [NetworkAdapter]
    /// Every deployment configuration the descriptor offers.
    public var configurations: [DeploymentConfiguration]
    /// The configuration this description is for (nil when the descriptor has none).
    public var selectedConfiguration: String?
    /// Every file the descriptor references.
    public var files: [ApplianceFile]
    /// Remarks: defaults applied, items ignored, values that could not be used.
    public var notes: [String]
}
