import Foundation
import KDCTAppliance
import KDCTFormats
import Testing

// Support for the appliance (OVA/OVF) tests of KDCTFormatsTests and CLITests.

/// Checks a domain XML with libvirt's own schema and its test driver, as a user's `virsh define` would.
public func expectValidDomainXML(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let validate = try runProcess(["virt-xml-validate", path, "domain"])
    #expect(validate.status == 0, "virt-xml-validate \(path): \(validate.stdout) \(validate.stderr)",
            sourceLocation: sourceLocation)
    // The test driver starts with a domain called "test": drop it first so a VM of that name can be defined.
    let define = try runProcess(["virsh", "-q", "-c", "test:///default", "destroy test; undefine test; define '\(path)'"])
    #expect(define.status == 0, "virsh define \(path): \(define.stdout) \(define.stderr)", sourceLocation: sourceLocation)
}

/// Writes `xml` to a file in `dir` and checks it.
public func expectValidDomainXML(text xml: String, in dir: TemporaryDirectory, name: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
    let path = dir.file(name)
    try xml.write(toFile: path, atomically: true, encoding: .utf8)
    try expectValidDomainXML(path, sourceLocation: sourceLocation)
}

/// Builds appliances (OVF + manifest + disks) with GNU tar, the way exporters do.
public struct ApplianceBuilder {
    /// A builder writing into `dir`.
    public init(dir: TemporaryDirectory) { self.dir = dir }

    /// What manifest the appliance gets.
    public enum ManifestKind: Sendable { case none, sha1, sha256, wrongDigest }

    public let dir: TemporaryDirectory
    public var name = "testvm"
    public var osSection = "<OperatingSystemSection ovf:id=\"101\" vmw:osType=\"debian10_64Guest\"><Info>os</Info></OperatingSystemSection>"
    public var hardwareExtra = ""
    public var cpus = 3
    public var memoryMB = 1536
    public var nics: [(type: String, network: String)] = [("VMXNET3", "VM Network"), ("E1000", "Backup")]

    /// The OVF for `disks` (member name, capacity, format URI, declared size or nil).
    public func descriptor(disks: [(href: String, capacity: UInt64, uri: String?, size: UInt64?)]) -> String {
        var references = ""
        var diskSection = ""
        var items = """
        <Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>\(cpus)</rasd:VirtualQuantity></Item>
        <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>\(memoryMB)</rasd:VirtualQuantity></Item>
        <Item><rasd:Address>0</rasd:Address><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>

        """
        for (index, disk) in disks.enumerated() {
            let size = disk.size.map { " ovf:size=\"\($0)\"" } ?? ""
            references += "<File ovf:href=\"\(disk.href)\" ovf:id=\"file\(index)\"\(size)/>\n"
            let uri = disk.uri.map { " ovf:format=\"\($0)\"" } ?? ""
            diskSection += "<Disk ovf:capacity=\"\(disk.capacity)\" ovf:diskId=\"vmdisk\(index)\" ovf:fileRef=\"file\(index)\"\(uri)/>\n"
            items += "<Item><rasd:AddressOnParent>\(index)</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk\(index)</rasd:HostResource><rasd:InstanceID>\(10 + index)</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>\n"
        }
        for (index, nic) in nics.enumerated() {
            items += "<Item><rasd:Connection>\(nic.network)</rasd:Connection><rasd:ElementName>Network adapter \(index + 1)</rasd:ElementName><rasd:InstanceID>\(20 + index)</rasd:InstanceID><rasd:ResourceSubType>\(nic.type)</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>\n"
        }
        return """
        <?xml version="1.0" encoding="UTF-8"?>
        <Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" \
        xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" \
        xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" \
        xmlns:vmw="http://www.vmware.com/schema/ovf">
          <References>\(references)</References>
          <DiskSection><Info>disks</Info>\(diskSection)</DiskSection>
          <VirtualSystem ovf:id="\(name)">
            <Info>A virtual machine</Info>
            <Name>\(name)</Name>
            \(osSection)
            <VirtualHardwareSection>
              <Info>hw</Info>
              <System><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType></System>
              \(items)
              \(hardwareExtra)
            </VirtualHardwareSection>
          </VirtualSystem>
        </Envelope>
        """
    }

    /// Writes descriptor, manifest and `disks` (paths of existing images, stored under their own names) into a
    /// staging directory and returns it, so callers can tar it or use it as an OVF directory.
    public func stage(disks: [String], uris: [String?], manifest: ManifestKind, declaredSizes: Bool = true,
               sizeAdjust: Int64 = 0) throws -> (directory: String, members: [String]) {
        let staging = dir.file("stage-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        var entries: [(href: String, capacity: UInt64, uri: String?, size: UInt64?)] = []
        for (index, disk) in disks.enumerated() {
            let href = FilePaths.lastComponent(of: disk)
            try FileManager.default.copyItem(atPath: disk, toPath: staging + "/" + href)
            let size = try FileManager.default.attributesOfItem(atPath: disk)[.size] as? UInt64 ?? 0
            let capacity = (try? ImageOpener.open(disk).virtualSize) ?? size  // a deliberately broken disk: its file size
            entries.append((href, capacity, uris[index], declaredSizes ? UInt64(Int64(size) + sizeAdjust) : nil))
        }
        let fileBase = LibvirtDomainXML.sanitizedName(name)
        let ovfName = fileBase + ".ovf"
        try descriptor(disks: entries).write(toFile: staging + "/" + ovfName, atomically: true, encoding: .utf8)
        var members = [ovfName]
        if manifest != .none {
            var lines = ""
            // Digests from coreutils, independently of the library under test.
            func digest(_ tool: String, _ member: String) throws -> String {
                let result = try runProcess([tool, staging + "/" + member])
                return String(result.stdout.prefix { $0 != " " })
            }
            for member in [ovfName] + entries.map(\.href) {
                switch manifest {
                case .sha1:
                    lines += "SHA1(\(member))= " + (try digest("sha1sum", member)) + "\n"
                case .wrongDigest:
                    var sum = try digest("sha256sum", member)
                    if member != ovfName { sum = String(sum.reversed()) }
                    lines += "SHA256(\(member))= \(sum)\n"
                default:
                    lines += "SHA256 (\(member)) = " + (try digest("sha256sum", member)) + "\n"
                }
            }
            try lines.write(toFile: staging + "/" + fileBase + ".mf", atomically: true, encoding: .utf8)
            members.append(fileBase + ".mf")
        }
        return (staging, members + entries.map(\.href))
    }

    /// An OVA of the staged files made by GNU tar in `format`.
    public func ova(disks: [String], uris: [String?], manifest: ManifestKind = .sha256, format: String = "ustar",
             declaredSizes: Bool = true, sizeAdjust: Int64 = 0, fileName: String? = nil) throws -> String {
        let (staging, members) = try stage(disks: disks, uris: uris, manifest: manifest, declaredSizes: declaredSizes,
                                           sizeAdjust: sizeAdjust)
        let path = dir.file(fileName ?? "\(LibvirtDomainXML.sanitizedName(name))-\(UUID().uuidString.prefix(6)).ova")
        let result = try runProcess(["tar", "--format=\(format)", "-cf", path, "-C", staging] + members)
        #expect(result.status == 0, "\(result.stderr)")
        return path
    }
}

