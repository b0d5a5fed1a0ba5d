import Foundation
import KDCTFormats

/// Parses OVF descriptors (DMTF DSP0243, OVF 1.x and 2.0) as VMware, VirtualBox and other tools write them into a
/// `VirtualMachineDescription`.
///
/// Element and attribute names are matched by local name, so the prefixes a producer chose (`ovf:`, none, `rasd:`,
/// OVF 2.0's `sasd:`/`epasd:` for `StorageItem`/`EthernetPortItem`) do not matter.
enum OVFDescriptor {
    /// CIM ResourceAllocationSettingData.ResourceType codes used here (DSP0243 / CIM schema).
    enum ResourceType {
        static let processor = 3
        static let memory = 4
        static let ideController = 5
        static let scsiController = 6
        static let ethernetAdapter = 10
        static let floppy = 14
        static let cdDrive = 15
        static let dvdDrive = 16
        static let diskDrive = 17
        static let otherStorage = 20
    }

    /// Parses the descriptor `bytes` (read from `file`, for messages) for deployment configuration
    /// `configuration` (nil: the descriptor's default). Throws `invalidFormat` for something that is not an OVF
    /// envelope, `unsupported` for appliances this converter cannot describe as one VM, `corrupt` for values that
    /// make no sense, and `invalidArgument` for an unknown configuration name.
    static func parse(_ bytes: [UInt8], file: String? = nil, configuration: String? = nil,
                             limits: ImageLimits = ImageLimits()) throws -> VirtualMachineDescription {
        try ImageLimits.check("OVF descriptor size", UInt64(bytes.count), max: limits.maxDescriptorBytes, file: file)
        let root = try XMLTree.parse(bytes, file: file)
        var parser = Parser(root: root, raw: bytes, file: file, requestedConfiguration: configuration)
        return try parser.parse()
    }

    /// One `Item` / `StorageItem` / `EthernetPortItem` of the hardware section.
    struct HardwareItem {
        var element: XMLTreeElement
        var resourceType: Int?
        var instanceID: String
        var configurations: [String]?

        func text(_ field: String) -> String? {
            let value = element.childText(field)
            return value?.isEmpty == false ? value : nil
        }

        var name: String? { text("ElementName") ?? text("Caption") }
    }

    private struct Parser {
        let root: XMLTreeElement
        let raw: [UInt8]
        let file: String?
        let requestedConfiguration: String?
        var notes: [String] = []

        init(root: XMLTreeElement, raw: [UInt8], file: String?, requestedConfiguration: String?) {
            self.root = root
            self.raw = raw
            self.file = file
            self.requestedConfiguration = requestedConfiguration
        }

        func corrupt(_ message: String, field: String) -> KDCTError {
            KDCTError(.corrupt, message, file: file, field: field)
        }

        mutating func parse() throws -> VirtualMachineDescription {
            let version = try envelopeVersion()
            let files = try parseFiles()
            let configurations = parseConfigurations()
            let selected = try selectConfiguration(configurations)
            let system = try findVirtualSystem()
            let systemID = system.attribute("id") ?? "vm"
            let name = system.childText("Name").flatMap { $0.isEmpty ? nil : $0 } ?? systemID
            let vboxMachine = system.child("Machine").flatMap { $0.namespace?.contains("virtualbox") == true ? $0 : nil }
            let os = operatingSystem(system, vboxMachine: vboxMachine)

            let hardwareSections = system.children("VirtualHardwareSection")
            guard let hardware = hardwareSections.first else {
                throw KDCTError(.corrupt, "virtual system \"\(systemID)\" has no VirtualHardwareSection", file: file,
                                field: "VirtualHardwareSection")
            }
            if hardwareSections.count > 1 {
                notes.append("\(hardwareSections.count) VirtualHardwareSections; the first one is used")
            }
            let systemType = hardware.child("System").flatMap { $0.childText("VirtualSystemType") }
            let items = try selectItems(hardware, configuration: selected)

            let (cpuCount, coresPerSocket) = try processors(items)
            let memoryBytes = try memorySize(items)
            let devices = try attachDevices(items, files: files, controllers: controllers(items))
            let boot = firmware(hardware, vboxMachine: vboxMachine, systemType: systemType)
            if os.isARM64 {
                notes.append("the guest is 64-bit ARM (\(os.displayName)); the generated domain is x86-64 and will not boot it")
            }

            return VirtualMachineDescription(
                name: name, systemID: systemID, ovfVersion: version, producer: producer(vboxMachine: vboxMachine, systemType: systemType),
                virtualSystemType: systemType, operatingSystem: os, cpuCount: cpuCount, coresPerSocket: coresPerSocket,
                memoryBytes: memoryBytes, firmware: boot.firmware, firmwareSource: boot.source, secureBoot: boot.secureBoot,
                disks: devices.disks, networkAdapters: devices.adapters, configurations: configurations,
                selectedConfiguration: selected, files: files, notes: notes)
        }

        /// The OVF version the envelope's namespace names (DSP0243 section 7): "1.x" or "2.0".
        func envelopeVersion() throws -> String {
            guard root.name == "Envelope" else {
                throw KDCTError(.invalidFormat, "root element is <\(root.name)>, not an OVF <Envelope>", file: file,
                                field: "Envelope")
            }
            switch root.namespace {
            case "http://schemas.dmtf.org/ovf/envelope/1": return "1.x"
            case "http://schemas.dmtf.org/ovf/envelope/2": return "2.0"
            case let other?:
                if other.contains("vmware.com/schema/ovf/1/envelope") {
                    throw KDCTError(.unsupported, "OVF 0.9 descriptors (namespace \(other)) are not supported; re-export as OVF 1.0 or later",
                                    file: file, field: "Envelope")
                }
                throw KDCTError(.invalidFormat, "envelope namespace \(other) is not OVF 1.x or 2.0", file: file,
                                field: "Envelope")
            case nil:
                throw KDCTError(.invalidFormat, "<Envelope> has no namespace; not an OVF descriptor", file: file,
                                field: "Envelope")
            }
        }

        /// The guest OS from `OperatingSystemSection` (CIM id, VMware's `vmw:osType`, VirtualBox's `OSType`), with
        /// VirtualBox's machine section as a fallback for its type.
        func operatingSystem(_ system: XMLTreeElement, vboxMachine: XMLTreeElement?) -> GuestOperatingSystem {
            var os = GuestOperatingSystem()
            if let section = system.child("OperatingSystemSection") {
                os.cimID = section.attribute("id").flatMap { Int($0.trimmingWhitespace) }
                os.vmwareType = section.attribute("osType", prefix: "vmw") ?? section.attribute("osType")
                os.virtualBoxType = section.child("OSType")?.trimmedText
                os.description = section.childText("Description")
            }
            if os.virtualBoxType == nil, let type = vboxMachine?.attribute("OSType") { os.virtualBoxType = type }
            return os
        }

        /// The vCPU count and cores per socket from the last processor item (1 when there is none).
        mutating func processors(_ items: [HardwareItem]) throws -> (count: Int, coresPerSocket: Int?) {
            guard let cpu = items.last(where: { $0.resourceType == ResourceType.processor }) else {
                notes.append("no processor item: 1 vCPU assumed")
                return (1, nil)
            }
            guard let quantity = cpu.text("VirtualQuantity").flatMap({ Int($0) }), quantity >= 1, quantity <= 4096 else {
                throw corrupt("processor item \(cpu.instanceID) has VirtualQuantity \"\(cpu.text("VirtualQuantity") ?? "")\", not a CPU count between 1 and 4096",
                              field: "VirtualQuantity")
            }
            if let cores = cpu.element.child("CoresPerSocket").flatMap({ Int($0.trimmedText) }), cores >= 1,
               cores <= quantity, quantity % cores == 0 {
                return (quantity, cores)
            }
            return (quantity, nil)
        }

        /// The memory size in bytes from the last memory item (1 GiB when there is none; MiB when it has no units).
        mutating func memorySize(_ items: [HardwareItem]) throws -> UInt64 {
            guard let memory = items.last(where: { $0.resourceType == ResourceType.memory }) else {
                notes.append("no memory item: 1 GiB assumed")
                return 1 << 30
            }
            let quantity = memory.text("VirtualQuantity") ?? ""
            var units = memory.text("AllocationUnits") ?? ""
            if units.isEmpty {
                units = "byte * 2^20"
                notes.append("memory item has no AllocationUnits: MiB assumed")
            }
            guard let bytes = OVFUnits.bytes(quantity: quantity, units: units), bytes > 0, bytes <= 64 << 40 else {
                throw corrupt("memory item \(memory.instanceID): \"\(quantity)\" of \"\(units)\" is not a memory size up to 64 TiB",
                              field: "VirtualQuantity")
            }
            return bytes
        }

        /// The storage controllers by InstanceID: IDE, SCSI, and "other storage" told apart by ResourceSubType.
        func controllers(_ items: [HardwareItem]) -> [String: DiskController] {
            var controllers: [String: DiskController] = [:]
            for item in items {
                guard let type = item.resourceType else { continue }
                let subtype = item.text("ResourceSubType")
                let lowered = subtype?.lowercased() ?? ""
                var bus: DiskController.Bus?
                switch type {
                case ResourceType.ideController: bus = .ide
                case ResourceType.scsiController: bus = .scsi
                case ResourceType.otherStorage:
                    if lowered.contains("ahci") || lowered.contains("sata") { bus = .sata }
                    else if lowered.contains("nvme") { bus = .nvme }
                    else if lowered.contains("virtio") { bus = .virtio }
                    else { bus = .other }
                default: break
                }
                if let bus {
                    controllers[item.instanceID] = DiskController(bus: bus, model: subtype, instanceID: item.instanceID,
                                                                  address: item.text("Address"))
                }
            }
            return controllers
        }

        /// The disks in hardware-item order (each DiskSection disk attached at most once; declared but unattached
        /// disks after them) and the network adapters; removable media are noted, not converted.
        mutating func attachDevices(_ items: [HardwareItem], files: [ApplianceFile], controllers: [String: DiskController])
            throws -> (disks: [VirtualDisk], adapters: [NetworkAdapter]) {
            var disksByID: [String: VirtualDisk] = [:]
            var diskOrder: [String] = []
            for disk in try parseDisks(files: files) {
                guard disksByID[disk.diskID] == nil else {
                    throw corrupt("disk id \"\(disk.diskID)\" is declared twice", field: "ovf:diskId")
                }
                disksByID[disk.diskID] = disk
                diskOrder.append(disk.diskID)
            }
            var disks: [VirtualDisk] = []
            var attached = Set<String>()
            var adapters: [NetworkAdapter] = []
            for item in items {
                switch item.resourceType ?? -1 {
                case ResourceType.diskDrive:
                    guard let resource = item.text("HostResource") else {
                        notes.append("disk item \(item.instanceID) (\(item.name ?? "unnamed")) has no HostResource; ignored")
                        continue
                    }
                    var disk: VirtualDisk
                    switch OVFDescriptor.hostResource(resource) {
                    case let .disk(id)?:
                        guard let found = disksByID[id] else {
                            throw corrupt("disk item \(item.instanceID) refers to disk \"\(id)\", which DiskSection does not declare",
                                          field: "HostResource")
                        }
                        guard !attached.contains(id) else {
                            throw corrupt("disk \"\(id)\" is attached twice", field: "HostResource")
                        }
                        disk = found
                        attached.insert(id)
                    case let .file(id)?:
                        guard let found = files.first(where: { $0.id == id }) else {
                            throw corrupt("disk item \(item.instanceID) refers to file \"\(id)\", which References does not list",
                                          field: "HostResource")
                        }
                        disk = VirtualDisk(diskID: id, file: found, capacity: nil, capacityText: "", populatedSize: nil,
                                           formatURI: nil, declaredFormat: nil)
                    case nil:
                        throw corrupt("disk item \(item.instanceID) has HostResource \"\(resource)\", not ovf:/disk/ID or ovf:/file/ID",
                                      field: "HostResource")
                    }
                    if let parent = item.text("Parent") {
                        if let controller = controllers[parent] {
                            disk.controller = controller
                        } else {
                            notes.append("disk \(disk.diskID): parent controller \(parent) is not in the hardware section")
                        }
                    }
                    disk.addressOnParent = item.text("AddressOnParent")
                    disk.itemName = item.name
                    disks.append(disk)
                case ResourceType.cdDrive, ResourceType.dvdDrive, ResourceType.floppy:
                    if let resource = item.text("HostResource"), case let .file(id)? = OVFDescriptor.hostResource(resource) {
                        let href = files.first { $0.id == id }?.href ?? id
                        notes.append("\(item.name ?? "removable drive") holds \(href); media images are not converted")
                    }
                case ResourceType.ethernetAdapter:
                    var mac: String?
                    if let address = item.text("Address"), OVFDescriptor.isMACAddress(address) { mac = address.lowercased() }
                    adapters.append(NetworkAdapter(name: item.name, adapterType: item.text("ResourceSubType"),
                                                   network: item.text("Connection"), macAddress: mac,
                                                   instanceID: item.instanceID))
                default:
                    break
                }
            }
            for id in diskOrder where !attached.contains(id) {
                if let disk = disksByID[id] {
                    notes.append("disk \(id) is declared but no hardware item attaches it; added after the attached ones")
                    disks.append(disk)
                }
            }
            return (disks, adapters)
        }

        /// The firmware: VMware's config keys first, then VirtualBox's machine section, then hints in the virtual
        /// system type; BIOS when none says. Secure boot only with EFI.
        mutating func firmware(_ hardware: XMLTreeElement, vboxMachine: XMLTreeElement?, systemType: String?)
            -> (firmware: Firmware, source: FirmwareSource, secureBoot: Bool) {
            var firmware = Firmware.bios
            var firmwareSource = FirmwareSource.defaulted
            var secureBoot = false
            let vmwareConfig = hardware.descendants("Config") + hardware.descendants("ExtraConfig")
            for config in vmwareConfig {
                guard let key = config.attribute("key"), let value = config.attribute("value") else { continue }
                switch key {
                case "firmware":
                    switch value.lowercased() {
                    case "efi": firmware = .efi; firmwareSource = .vmware
                    case "bios": firmware = .bios; firmwareSource = .vmware
                    default: notes.append("unknown vmw firmware value \"\(value)\"; ignored")
                    }
                case "bootOptions.efiSecureBootEnabled", "uefi.secureBoot.enabled":
                    secureBoot = value.lowercased() == "true"
                default:
                    break
                }
            }
            if firmwareSource == .defaulted, let type = vboxMachine?.child("Hardware")?.child("Firmware")?.attribute("type") {
                let lowered = type.lowercased()
                if lowered.hasPrefix("efi") {
                    firmware = .efi
                    firmwareSource = .virtualBox
                } else if lowered == "bios" {
                    firmwareSource = .virtualBox
                } else {
                    notes.append("unknown VirtualBox firmware type \"\(type)\"; ignored")
                }
            }
            if firmwareSource == .defaulted, let systemType {
                let tokens = systemType.lowercased().split { !$0.isLetter && !$0.isNumber }
                if tokens.contains("efi") || tokens.contains("uefi") {
                    firmware = .efi
                    firmwareSource = .systemType
                }
            }
            if secureBoot && firmware != .efi {
                notes.append("secure boot is requested but the firmware is BIOS; ignored")
                secureBoot = false
            }
            return (firmware, firmwareSource, secureBoot)
        }

        func parseFiles() throws -> [ApplianceFile] {
            var files: [ApplianceFile] = []
            for element in root.child("References")?.children("File") ?? [] {
                guard let id = element.attribute("id"), let href = element.attribute("href"), !href.isEmpty else {
                    throw corrupt("a References/File lacks ovf:id or ovf:href", field: "File")
                }
                guard !files.contains(where: { $0.id == id }) else {
                    throw corrupt("file id \"\(id)\" is declared twice", field: "ovf:id")
                }
                var size: UInt64?
                if let text = element.attribute("size") {
                    guard let value = UInt64(text.trimmingWhitespace) else {
                        throw corrupt("file \"\(href)\" has ovf:size \"\(text)\", not a number", field: "ovf:size")
                    }
                    size = value
                }
                var chunkSize: UInt64?
                if let text = element.attribute("chunkSize") {
                    guard let value = UInt64(text.trimmingWhitespace) else {
                        throw corrupt("file \"\(href)\" has ovf:chunkSize \"\(text)\", not a number", field: "ovf:chunkSize")
                    }
                    chunkSize = value
                }
                let compression = element.attribute("compression").flatMap { $0.isEmpty || $0 == "identity" ? nil : $0 }
                files.append(ApplianceFile(id: id, href: href, size: size, compression: compression, chunkSize: chunkSize))
            }
            return files
        }

        mutating func parseDisks(files: [ApplianceFile]) throws -> [VirtualDisk] {
            var disks: [VirtualDisk] = []
            for element in root.child("DiskSection")?.children("Disk") ?? [] {
                guard let id = element.attribute("diskId") else {
                    throw corrupt("a DiskSection/Disk lacks ovf:diskId", field: "ovf:diskId")
                }
                var file: ApplianceFile?
                if let ref = element.attribute("fileRef"), !ref.isEmpty {
                    guard let found = files.first(where: { $0.id == ref }) else {
                        throw corrupt("disk \"\(id)\" refers to file \"\(ref)\", which References does not list",
                                      field: "ovf:fileRef")
                    }
                    file = found
                }
                let capacityText = element.attribute("capacity") ?? ""
                let units = element.attribute("capacityAllocationUnits") ?? "byte"
                var capacity: UInt64?
                if !capacityText.isEmpty {
                    if let value = OVFUnits.bytes(quantity: capacityText, units: units) {
                        capacity = value
                    } else if capacityText.hasPrefix("${") {
                        notes.append("disk \(id): capacity \(capacityText) is a property reference; the image's own size is used")
                    } else {
                        throw corrupt("disk \"\(id)\" has capacity \"\(capacityText)\" in \"\(units)\", not a size",
                                      field: "ovf:capacity")
                    }
                }
                if file == nil, capacity == nil {
                    throw corrupt("disk \"\(id)\" has neither a file nor a capacity", field: "ovf:capacity")
                }
                let populated = element.attribute("populatedSize").flatMap { UInt64($0.trimmingWhitespace) }
                let uri = element.attribute("format")
                disks.append(VirtualDisk(diskID: id, file: file, capacity: capacity, capacityText: capacityText,
                                         populatedSize: populated, formatURI: uri,
                                         declaredFormat: uri.flatMap(OVFDescriptor.format(forURI:))))
            }
            return disks
        }

        func parseConfigurations() -> [DeploymentConfiguration] {
            (root.child("DeploymentOptionSection")?.children("Configuration") ?? []).compactMap { element in
                guard let id = element.attribute("id") else { return nil }
                return DeploymentConfiguration(id: id, label: element.childText("Label"),
                                               isDefault: element.attribute("default")?.lowercased() == "true")
            }
        }

        func selectConfiguration(_ configurations: [DeploymentConfiguration]) throws -> String? {
            if let requested = requestedConfiguration {
                guard configurations.contains(where: { $0.id == requested }) else {
                    let offered = configurations.map(\.id)
                    throw KDCTError(.invalidArgument,
                                    offered.isEmpty ? "the descriptor has no deployment configurations, so configuration \"\(requested)\" does not apply"
                                                    : "no deployment configuration \"\(requested)\"; the descriptor offers: \(offered.joined(separator: ", "))",
                                    file: file, field: "DeploymentOptionSection")
                }
                return requested
            }
            // DSP0243 9.8: the default is the one marked ovf:default="true", else the first.
            return configurations.first(where: \.isDefault)?.id ?? configurations.first?.id
        }

        func findVirtualSystem() throws -> XMLTreeElement {
            var systems = root.children("VirtualSystem")
            if let collection = root.child("VirtualSystemCollection") {
                systems += collection.descendants("VirtualSystem")
            }
            guard systems.count == 1, let system = systems.first else {
                if systems.isEmpty {
                    throw KDCTError(.corrupt, "the descriptor has no VirtualSystem", file: file, field: "VirtualSystem")
                }
                let names = systems.map { $0.attribute("id") ?? "?" }.joined(separator: ", ")
                throw KDCTError(.unsupported, "the appliance holds \(systems.count) virtual systems (\(names)); only single-VM appliances are converted",
                                file: file, field: "VirtualSystemCollection")
            }
            return system
        }

        /// The items in force for `configuration`: an item without `ovf:configuration` applies to every
        /// configuration unless one naming the configuration has the same InstanceID (it then replaces it);
        /// an item naming other configurations only is left out. Items bound to `min`/`max` are left out.
        mutating func selectItems(_ hardware: XMLTreeElement, configuration: String?) throws -> [HardwareItem] {
            var all: [HardwareItem] = []
            for element in hardware.children where ["Item", "StorageItem", "EthernetPortItem"].contains(element.name) {
                if let bound = element.attribute("bound"), bound != "normal" { continue }
                let typeText = element.childText("ResourceType")
                let type = typeText.flatMap { Int($0) }
                if typeText != nil && type == nil {
                    throw corrupt("hardware item has ResourceType \"\(typeText ?? "")\", not a number", field: "ResourceType")
                }
                let instance = element.childText("InstanceID") ?? element.childText("InstanceId") ?? ""
                let configs = element.attribute("configuration").map {
                    $0.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init)
                }
                all.append(HardwareItem(element: element, resourceType: type, instanceID: instance, configurations: configs))
            }
            var selected: [HardwareItem] = []
            for item in all {
                if let configs = item.configurations {
                    guard let configuration, configs.contains(configuration) else { continue }
                    selected.append(item)
                } else {
                    let overridden = configuration != nil && all.contains {
                        $0.instanceID == item.instanceID && !item.instanceID.isEmpty
                            && ($0.configurations?.contains(configuration ?? "") ?? false)
                    }
                    if !overridden { selected.append(item) }
                }
            }
            return selected
        }

        func producer(vboxMachine: XMLTreeElement?, systemType: String?) -> String? {
            if let comment = Self.generatorComment(raw) { return comment }
            if let build = root.attribute("buildId", prefix: "vmw") { return "VMware (\(build))" }
            if let machine = vboxMachine {
                return "VirtualBox" + (machine.attribute("version").map { " (settings \($0))" } ?? "")
            }
            if let systemType, systemType.lowercased().hasPrefix("virtualbox") { return "VirtualBox" }
            if let systemType, systemType.lowercased().hasPrefix("vmx-") { return "VMware" }
            return nil
        }

        /// The text of a leading `<!--Generated by ...-->` comment (ovftool writes one).
        static func generatorComment(_ raw: [UInt8]) -> String? {
            let head = String(decoding: raw.prefix(4096), as: UTF8.self)
            guard let start = head.range(of: "<!--Generated by ") else { return nil }
            guard let end = head.range(of: "-->", range: start.upperBound..<head.endIndex) else { return nil }
            var text = String(head[start.upperBound..<end.lowerBound]).trimmingWhitespace
            if let comma = text.firstIndex(of: ",") { text = String(text[..<comma]) }
            return text.isEmpty ? nil : text
        }
    }

    /// What a `rasd:HostResource` points at.
    enum HostResource: Equatable {
        case disk(String)
        case file(String)
    }

    /// Decodes `ovf:/disk/ID`, `/disk/ID` (VirtualBox OVF 2.0), `ovf:/file/ID`.
    static func hostResource(_ text: String) -> HostResource? {
        var value = text.trimmingWhitespace
        if value.hasPrefix("ovf:") { value.removeFirst(4) }
        if value.hasPrefix("/disk/") { return .disk(String(value.dropFirst(6))) }
        if value.hasPrefix("/file/") { return .file(String(value.dropFirst(6))) }
        return nil
    }

    /// True for `aa:bb:cc:dd:ee:ff` (or with dashes).
    static func isMACAddress(_ text: String) -> Bool {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && $0.allSatisfy(\.isHexDigit) }
    }

    /// The image format an `ovf:format` URI names, when it is a known one.
    static func format(forURI uri: String) -> ImageFormat? {
        let lowered = uri.lowercased()
        if lowered.contains("vmdk") { return .vmdk }
        if lowered.contains("vhdx") { return .vhdx }
        if lowered.contains("vhd") || lowered.contains("137171") { return .vhd }
        if lowered.contains("qcow") { return nil }  // qcow or qcow2: let probing decide
        return nil
    }
}
