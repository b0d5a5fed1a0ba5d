import Foundation
import Testing
@testable import KDCTAppliance
import KDCTFormats
import KDCTTestSupport

/// What a corpus manifest note says an OVF holds: "2 disks (disk1.vmdk, disk2.vmdk), 1 CPU, 2048 MB, 1 NIC",
/// or with deployment configurations "(1/2/4 CPUs, 1024/2048/4096 MB)".
struct OVFExpectation {
    var diskCount: Int?
    var diskNames: [String] = []
    var cpus: [Int] = []
    var memoryMB: [UInt64] = []
    var nics: Int?
    var configurations: Int?

    init(notes: String) {
        func captures(_ pattern: String) -> [String] {
            guard let regex = try? NSRegularExpression(pattern: pattern),
                  let match = regex.firstMatch(in: notes, range: NSRange(notes.startIndex..., in: notes)) else { return [] }
            return (1..<match.numberOfRanges).compactMap { Range(match.range(at: $0), in: notes).map { String(notes[$0]) } }
        }
        diskCount = captures(#"(\d+) disks?"#).first.flatMap { Int($0) }
        if let names = captures(#"disks? \(([^)]+)\)"#).first {
            diskNames = names.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        }
        cpus = captures(#"([\d/]+) CPUs?"#).first?.split(separator: "/").compactMap { Int($0) } ?? []
        memoryMB = captures(#"([\d/]+) MB"#).first?.split(separator: "/").compactMap { UInt64($0) } ?? []
        nics = captures(#"(\d+) NICs?"#).first.flatMap { Int($0) }
        configurations = captures(#"(\d+) deployment configurations"#).first.flatMap { Int($0) }
    }
}

@Suite struct ApplianceOVFTests {
    // MARK: Corpus

    static let corpusOVFs: [Corpus.Entry] = Corpus.load()?.entries.filter { $0.expect == "ovf" } ?? []

    @Test func corpusHasTheFourDescriptors() {
        guard Corpus.load() != nil else { return }
        #expect(Self.corpusOVFs.count >= 4, "the corpus should list at least four OVF descriptors")
    }

    @Test(arguments: corpusOVFs.map(\.file))
    func corpusDescriptorMatchesItsManifestNotes(_ file: String) throws {
        guard let corpus = Corpus.load(), let entry = corpus.entries.first(where: { $0.file == file }) else { return }
        let expected = OVFExpectation(notes: entry.notes ?? "")
        let path = corpus.directory + "/" + file
        let appliance = try Appliance(path: path)
        let vm = appliance.machine
        #expect(appliance.container == .ovf)

        if let count = expected.diskCount { #expect(vm.disks.count == count, "\(file): disks") }
        if !expected.diskNames.isEmpty { #expect(vm.disks.compactMap { $0.file?.href } == expected.diskNames, "\(file)") }
        if let nics = expected.nics { #expect(vm.networkAdapters.count == nics, "\(file): NICs of the default configuration") }
        if let configurations = expected.configurations {
            #expect(vm.configurations.count == configurations, "\(file): configurations")
            // Each configuration in turn: its CPUs and memory are among the listed ones, all listed values appear.
            var seenCPUs: [Int] = []
            var seenMemory: [UInt64] = []
            for configuration in vm.configurations {
                let selected = try Appliance(path: path, options: ApplianceOptions(configuration: configuration.id)).machine
                #expect(selected.selectedConfiguration == configuration.id)
                seenCPUs.append(selected.cpuCount)
                seenMemory.append(selected.memoryBytes >> 20)
                #expect(selected.disks.count == vm.disks.count)
            }
            #expect(seenCPUs.sorted() == expected.cpus.sorted(), "\(file): CPUs per configuration")
            #expect(seenMemory.sorted() == expected.memoryMB.sorted(), "\(file): memory per configuration")
            let defaultID = vm.configurations.first(where: \.isDefault)?.id ?? vm.configurations.first?.id
            #expect(vm.selectedConfiguration == defaultID)
        } else {
            #expect(expected.cpus.count == 1 && expected.memoryMB.count == 1, "\(file): notes give one CPU count and size")
            #expect([vm.cpuCount] == expected.cpus, "\(file): CPUs")
            #expect([vm.memoryBytes >> 20] == expected.memoryMB, "\(file): memory")
            #expect(vm.memoryBytes % (1 << 20) == 0)
        }
        // Every disk has a capacity and a controller; every NIC a type.
        for disk in vm.disks {
            #expect(disk.capacity != nil && disk.capacity! > 0, "\(file): \(disk.diskID) capacity")
            #expect(disk.controller != nil, "\(file): \(disk.diskID) controller")
            #expect(disk.declaredFormat == .vmdk)
        }
        for adapter in vm.networkAdapters { #expect(adapter.adapterType != nil) }
    }

    @Test func corpusDetails() throws {
        guard let corpus = Corpus.load() else { return }
        let cot = try Appliance(path: corpus.directory + "/cot/input.ovf").machine
        #expect(cot.name == "test")
        #expect(cot.selectedConfiguration == "4CPU-4GB-3NIC")
        #expect(cot.disks.first?.capacity == 1 << 30)
        #expect(cot.disks.first?.controller?.bus == .scsi)
        #expect(cot.disks.first?.controller?.model == "lsilogic")
        #expect(cot.networkAdapters.map(\.adapterType) == ["VMXNET3", "VMXNET3", "VMXNET3"])
        #expect(cot.operatingSystem.vmwareType == "other26xLinux64Guest")
        #expect(!cot.operatingSystem.isWindows)
        #expect(cot.notes.contains { $0.contains("input.iso") }, "the CD-ROM image is mentioned")
        let minimal = try Appliance(path: corpus.directory + "/cot/input.ovf",
                                    options: ApplianceOptions(configuration: "1CPU-1GB-1NIC")).machine
        #expect(minimal.cpuCount == 1 && minimal.memoryBytes == 1 << 30 && minimal.networkAdapters.count == 1)
        let unknown = #expect(throws: KDCTError.self) {
            try Appliance(path: corpus.directory + "/cot/input.ovf", options: ApplianceOptions(configuration: "8CPU"))
        }
        #expect(unknown?.code == .invalidArgument)
        #expect(unknown?.message.contains("2CPU-2GB-1NIC") == true, "the offered configurations are listed")

        let vmware = try Appliance(path: corpus.directory + "/cot/vmware.ovf").machine
        #expect(vmware.firmware == .bios && vmware.firmwareSource == .vmware)
        #expect(vmware.coresPerSocket == 2)
        #expect(vmware.operatingSystem.cimID == 80)
        #expect(vmware.producer == "VMware (build-880146)")
        #expect(vmware.networkAdapters.allSatisfy { $0.network == "lanethernet0" && $0.adapterType == "E1000" })

        let win10 = try Appliance(path: corpus.directory + "/proxmox-qemu-server/Win10-Liz.ovf").machine
        #expect(win10.operatingSystem.isWindows)
        #expect(win10.producer == "VMware ovftool 4.1.0 (build-2982904)")
        #expect(win10.disks.first?.capacity == 128 << 30)
        #expect(win10.disks.first?.controller?.bus == .scsi)
        #expect(win10.networkAdapters.first?.adapterType == "E1000e")

        let twoDisks = try Appliance(path: corpus.directory + "/proxmox-qemu-server/Win_2008_R2_two-disks.ovf").machine
        #expect(twoDisks.operatingSystem.isWindows)
        #expect(twoDisks.operatingSystem.cimName == "Microsoft Windows Server 2008 R2")
        #expect(twoDisks.disks.map(\.capacity) == [40 << 30, 1 << 30])
        #expect(twoDisks.disks.map(\.addressOnParent) == ["0", "1"])
    }

    // MARK: Hand-written descriptors (VirtualBox OVF 2.0, edge cases)

    /// A VirtualBox 7-style OVF 2.0 export: StorageItem/EthernetPortItem, `/disk/ID` host resources, MegaBytes,
    /// `vbox:OSType` and a `vbox:Machine` with EFI firmware.
    static let virtualBoxOVF2 = """
    <?xml version="1.0"?>
    <Envelope ovf:version="2.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/2" \
    xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/2" \
    xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" \
    xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" \
    xmlns:vbox="http://www.virtualbox.org/ovf/machine" \
    xmlns:epasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData.xsd" \
    xmlns:sasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData.xsd">
      <References>
        <File ovf:id="file1" ovf:href="Alpine-disk001.vmdk"/>
        <File ovf:id="file2" ovf:href="Alpine-disk002.vmdk"/>
      </References>
      <DiskSection>
        <Info>List of the virtual disks used in the package</Info>
        <Disk ovf:capacity="8589934592" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
        <Disk ovf:capacity="2048" ovf:capacityAllocationUnits="MegaBytes" ovf:diskId="vmdisk2" ovf:fileRef="file2" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
      </DiskSection>
      <NetworkSection>
        <Info>Logical networks used in the package</Info>
        <Network ovf:name="NAT"><Description>Logical network used by this appliance.</Description></Network>
      </NetworkSection>
      <VirtualSystem ovf:id="Alpine">
        <Info>A virtual machine</Info>
        <OperatingSystemSection ovf:id="101">
          <Info>The kind of installed guest operating system</Info>
          <Description>Linux26_64</Description>
          <vbox:OSType ovf:required="false">Linux26_64</vbox:OSType>
        </OperatingSystemSection>
        <VirtualHardwareSection>
          <Info>Virtual hardware requirements for a virtual machine</Info>
          <System>
            <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
            <vssd:InstanceID>0</vssd:InstanceID>
            <vssd:VirtualSystemIdentifier>Alpine</vssd:VirtualSystemIdentifier>
            <vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType>
          </System>
          <Item>
            <rasd:Caption>2 virtual CPU</rasd:Caption>
            <rasd:Description>Number of virtual CPUs</rasd:Description>
            <rasd:InstanceID>1</rasd:InstanceID>
            <rasd:ResourceType>3</rasd:ResourceType>
            <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
          </Item>
          <Item>
            <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
            <rasd:Caption>3072 MB of memory</rasd:Caption>
            <rasd:Description>Memory Size</rasd:Description>
            <rasd:InstanceID>2</rasd:InstanceID>
            <rasd:ResourceType>4</rasd:ResourceType>
            <rasd:VirtualQuantity>3072</rasd:VirtualQuantity>
          </Item>
          <Item>
            <rasd:Address>0</rasd:Address>
            <rasd:Caption>sataController0</rasd:Caption>
            <rasd:Description>SATA Controller</rasd:Description>
            <rasd:InstanceID>3</rasd:InstanceID>
            <rasd:ResourceSubType>AHCI</rasd:ResourceSubType>
            <rasd:ResourceType>20</rasd:ResourceType>
          </Item>
          <Item>
            <rasd:Address>0</rasd:Address>
            <rasd:Caption>ideController0</rasd:Caption>
            <rasd:InstanceID>4</rasd:InstanceID>
            <rasd:ResourceSubType>PIIX4</rasd:ResourceSubType>
            <rasd:ResourceType>5</rasd:ResourceType>
          </Item>
          <StorageItem>
            <sasd:AddressOnParent>0</sasd:AddressOnParent>
            <sasd:Caption>disk1</sasd:Caption>
            <sasd:Description>Disk Image</sasd:Description>
            <sasd:HostResource>/disk/vmdisk1</sasd:HostResource>
            <sasd:InstanceID>5</sasd:InstanceID>
            <sasd:Parent>3</sasd:Parent>
            <sasd:ResourceType>17</sasd:ResourceType>
          </StorageItem>
          <StorageItem>
            <sasd:AddressOnParent>1</sasd:AddressOnParent>
            <sasd:Caption>disk2</sasd:Caption>
            <sasd:HostResource>/disk/vmdisk2</sasd:HostResource>
            <sasd:InstanceID>6</sasd:InstanceID>
            <sasd:Parent>4</sasd:Parent>
            <sasd:ResourceType>17</sasd:ResourceType>
          </StorageItem>
          <EthernetPortItem>
            <epasd:Address>08:00:27:AB:CD:EF</epasd:Address>
            <epasd:AutomaticAllocation>true</epasd:AutomaticAllocation>
            <epasd:Caption>Ethernet adapter on 'NAT'</epasd:Caption>
            <epasd:Connection>NAT</epasd:Connection>
            <epasd:InstanceID>7</epasd:InstanceID>
            <epasd:ResourceSubType>virtio</epasd:ResourceSubType>
            <epasd:ResourceType>10</epasd:ResourceType>
          </EthernetPortItem>
        </VirtualHardwareSection>
        <vbox:Machine ovf:required="false" version="1.19-linux" uuid="{0e5f6c3a-1111-2222-3333-444455556666}" name="Alpine" OSType="Linux26_64">
          <ovf:Info>Complete VirtualBox machine configuration in VirtualBox format</ovf:Info>
          <Hardware>
            <CPU count="2"/>
            <Memory RAMSize="3072"/>
            <Firmware type="EFI"/>
          </Hardware>
        </vbox:Machine>
      </VirtualSystem>
    </Envelope>
    """

    @Test func virtualBoxOVF2() throws {
        let vm = try OVFDescriptor.parse(Array(Self.virtualBoxOVF2.utf8), file: "vbox.ovf")
        #expect(vm.ovfVersion == "2.0")
        #expect(vm.name == "Alpine")
        #expect(vm.cpuCount == 2)
        #expect(vm.memoryBytes == 3072 << 20)
        #expect(vm.firmware == .efi && vm.firmwareSource == .virtualBox)
        #expect(vm.operatingSystem.virtualBoxType == "Linux26_64")
        #expect(vm.operatingSystem.cimName == "Linux 64-Bit")
        #expect(vm.producer == "VirtualBox (settings 1.19-linux)")
        #expect(vm.disks.map(\.diskID) == ["vmdisk1", "vmdisk2"])
        #expect(vm.disks.map(\.capacity) == [8 << 30, 2 << 30])
        #expect(vm.disks.map { $0.controller?.bus } == [.sata, .ide])
        #expect(vm.networkAdapters.count == 1)
        #expect(vm.networkAdapters.first?.adapterType == "virtio")
        #expect(vm.networkAdapters.first?.macAddress == "08:00:27:ab:cd:ef")
        #expect(vm.networkAdapters.first?.network == "NAT")
    }

    /// A minimal OVF 1.0 envelope around `hardware` items and `extra` VirtualSystem content.
    static func envelope(hardware: String, extra: String = "", disks: String? = nil, references: String? = nil,
                         deployment: String = "", systemName: String = "box") -> [UInt8] {
        let xml = """
        <?xml version="1.0" encoding="UTF-8"?>
        <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" \
        xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" \
        xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" \
        xmlns:vmw="http://www.vmware.com/schema/ovf">
          <References>\(references ?? "<File ovf:href=\"disk.img\" ovf:id=\"file1\"/>")</References>
          <DiskSection><Info>disks</Info>\(disks ?? "<Disk ovf:capacity=\"1\" ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:diskId=\"d1\" ovf:fileRef=\"file1\"/>")</DiskSection>
          \(deployment)
          <VirtualSystem ovf:id="\(systemName)">
            <Info>vm</Info>
            <VirtualHardwareSection>
              <Info>hw</Info>
              \(hardware)
            </VirtualHardwareSection>
            \(extra)
          </VirtualSystem>
        </Envelope>
        """
        return Array(xml.utf8)
    }

    static let cpuAndMemory = """
    <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
    <Item><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>4</rasd:VirtualQuantity></Item>
    """

    @Test func vmwareFirmwareAndSecureBootAndUnattachedDisks() throws {
        let vm = try OVFDescriptor.parse(Self.envelope(hardware: Self.cpuAndMemory + """
        <vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>
        <vmw:Config ovf:required="false" vmw:key="bootOptions.efiSecureBootEnabled" vmw:value="true"/>
        """))
        #expect(vm.firmware == .efi && vm.firmwareSource == .vmware && vm.secureBoot)
        #expect(vm.memoryBytes == 4 << 30)
        #expect(vm.name == "box", "without a Name the system id is used")
        #expect(vm.disks.count == 1, "a disk no item attaches is still converted")
        #expect(vm.notes.contains { $0.contains("no hardware item attaches") })
        #expect(vm.operatingSystem.displayName == "unknown")
    }

    @Test func systemTypeHintAndDefaults() throws {
        let vm = try OVFDescriptor.parse(Self.envelope(hardware: """
        <System><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>qemu-q35-uefi</vssd:VirtualSystemType></System>
        """))
        #expect(vm.firmware == .efi && vm.firmwareSource == .systemType)
        #expect(vm.cpuCount == 1 && vm.memoryBytes == 1 << 30)
        #expect(vm.notes.contains { $0.contains("1 vCPU assumed") })
        #expect(vm.notes.contains { $0.contains("1 GiB assumed") })
    }

    @Test func blankDiskAndPropertyCapacity() throws {
        let vm = try OVFDescriptor.parse(Self.envelope(hardware: Self.cpuAndMemory, disks: """
        <Disk ovf:capacity="${disk.size}" ovf:diskId="d1" ovf:fileRef="file1"/>
        <Disk ovf:capacity="16" ovf:capacityAllocationUnits="byte * 2^30" ovf:diskId="blank"/>
        """))
        #expect(vm.disks.count == 2)
        #expect(vm.disks[0].capacity == nil && vm.disks[0].file?.href == "disk.img")
        #expect(vm.disks[1].file == nil && vm.disks[1].capacity == 16 << 30)
    }

    @Test func configurationsReplaceItemsByInstanceID() throws {
        let deployment = """
        <DeploymentOptionSection><Info>configs</Info>
          <Configuration ovf:id="small"><Label>Small</Label></Configuration>
          <Configuration ovf:id="large"><Label>Large</Label></Configuration>
        </DeploymentOptionSection>
        """
        let hardware = Self.cpuAndMemory + """
        <Item ovf:configuration="large"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>8</rasd:VirtualQuantity></Item>
        <Item ovf:configuration="small large"><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType><rasd:Connection>a</rasd:Connection></Item>
        <Item ovf:configuration="large"><rasd:InstanceID>10</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType><rasd:Connection>b</rasd:Connection></Item>
        """
        let bytes = Self.envelope(hardware: hardware, deployment: deployment)
        let first = try OVFDescriptor.parse(bytes)
        #expect(first.selectedConfiguration == "small", "no ovf:default: the first configuration")
        #expect(first.cpuCount == 2 && first.networkAdapters.map(\.network) == ["a"])
        let large = try OVFDescriptor.parse(bytes, configuration: "large")
        #expect(large.cpuCount == 8 && large.networkAdapters.map(\.network) == ["a", "b"])
        let none = #expect(throws: KDCTError.self) { try OVFDescriptor.parse(Self.envelope(hardware: ""), configuration: "x") }
        #expect(none?.code == .invalidArgument)
    }

    // MARK: Refusals

    @Test func hostileAndInvalidDescriptorsAreRefused() throws {
        func kind(_ bytes: [UInt8]) -> KDCTError.Code? {
            do { _ = try OVFDescriptor.parse(bytes, file: "x.ovf"); return nil } catch let error as KDCTError { return error.code } catch { return nil }
        }
        // Entities are never expanded: a DTD is refused outright (billion laughs, external entities).
        let laughs = """
        <?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
        <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem>&lol2;</VirtualSystem></Envelope>
        """
        #expect(kind(Array(laughs.utf8)) == .unsupported)
        let external = "<?xml version=\"1.0\"?><!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Envelope>&x;</Envelope>"
        #expect(kind(Array(external.utf8)) == .unsupported)
        #expect(kind(Array("<notxml".utf8)) == .invalidFormat)
        #expect(kind(Array("<html xmlns='http://www.w3.org/1999/xhtml'/>".utf8)) == .invalidFormat)
        #expect(kind(Array("<Envelope/>".utf8)) == .invalidFormat)
        #expect(kind(Array("<Envelope xmlns='http://www.vmware.com/schema/ovf/1/envelope'/>".utf8)) == .unsupported)
        #expect(kind(Self.envelope(hardware: "")) == nil)
        // Deep nesting is bounded.
        let deep = "<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'>" + String(repeating: "<a>", count: 200)
            + String(repeating: "</a>", count: 200) + "</Envelope>"
        #expect(kind(Array(deep.utf8)) == .limitExceeded)
        // Nonsense quantities.
        let zeroCPU = "<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>0</rasd:VirtualQuantity></Item>"
        #expect(kind(Self.envelope(hardware: zeroCPU)) == .corrupt)
        let hugeMemory = "<Item><rasd:AllocationUnits>byte * 2^60</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>99</rasd:VirtualQuantity></Item>"
        #expect(kind(Self.envelope(hardware: hugeMemory)) == .corrupt)
        let badUnits = "<Item><rasd:AllocationUnits>parsecs</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>"
        #expect(kind(Self.envelope(hardware: badUnits)) == .corrupt)
        // References that do not resolve.
        let danglingDisk = "<Item><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:HostResource>ovf:/disk/nope</rasd:HostResource></Item>"
        #expect(kind(Self.envelope(hardware: danglingDisk)) == .corrupt)
        #expect(kind(Self.envelope(hardware: "", disks: "<Disk ovf:capacity='1' ovf:diskId='d' ovf:fileRef='missing'/>")) == .corrupt)
        #expect(kind(Self.envelope(hardware: "", disks: "<Disk ovf:diskId='d'/>")) == .corrupt)
        #expect(kind(Self.envelope(hardware: "", references: "<File ovf:href='a' ovf:id='f' ovf:size='-3'/>")) == .corrupt)
        // Two virtual systems are not one VM.
        let two = Self.envelope(hardware: "", extra: "</VirtualSystem><VirtualSystem ovf:id='second'><Info>x</Info><VirtualHardwareSection><Info>y</Info></VirtualHardwareSection>")
        #expect(kind(two) == .unsupported)
        // Descriptors past the limit are not parsed.
        var limits = ImageLimits()
        limits.maxDescriptorBytes = 100
        #expect(throws: KDCTError.self) { try OVFDescriptor.parse(Self.envelope(hardware: ""), limits: limits) }
    }

    // MARK: Units, OS, names

    @Test func allocationUnits() {
        #expect(OVFUnits.byteMultiplier("byte") == 1)
        #expect(OVFUnits.byteMultiplier("byte * 2^20") == 1 << 20)
        #expect(OVFUnits.byteMultiplier("byte*2^30") == 1 << 30)
        #expect(OVFUnits.byteMultiplier("byte * 10^3") == 1000)
        #expect(OVFUnits.byteMultiplier("byte * 1024") == 1024)
        #expect(OVFUnits.byteMultiplier("MegaBytes") == 1 << 20)
        #expect(OVFUnits.byteMultiplier("GigaBytes") == 1 << 30)
        #expect(OVFUnits.byteMultiplier("KiloBytes") == 1024)
        #expect(OVFUnits.byteMultiplier("hertz * 10^6") == nil)
        #expect(OVFUnits.byteMultiplier("byte * 2^65") == nil)
        #expect(OVFUnits.byteMultiplier("byte * 2^") == nil)
        #expect(OVFUnits.bytes(quantity: "1536", units: "byte * 2^20") == 1536 << 20)
        #expect(OVFUnits.bytes(quantity: "99999999999", units: "byte * 2^40") == nil)
        #expect(OVFUnits.bytes(quantity: "-1", units: "byte") == nil)
    }

    @Test func windowsDetection() {
        #expect(GuestOperatingSystem(vmwareType: "windows9_64Guest").isWindows)
        #expect(GuestOperatingSystem(vmwareType: "winNetStandardGuest").isWindows)
        #expect(GuestOperatingSystem(virtualBoxType: "Windows2019_64").isWindows)
        #expect(GuestOperatingSystem(cimID: 103).isWindows)
        #expect(GuestOperatingSystem(cimID: 1, description: "Microsoft Windows 10 (64-bit)").isWindows)
        #expect(!GuestOperatingSystem(cimID: 80, vmwareType: "rhel6_64Guest").isWindows)
        #expect(!GuestOperatingSystem(virtualBoxType: "Ubuntu_64").isWindows)
        #expect(GuestOperatingSystem(virtualBoxType: "Ubuntu_arm64").isARM64)
    }
}
