import ArgumentParser
import KDCTAppliance
import KDCTFormats

/// Options of `convert` that concern appliances (OVA/OVF) and the generated libvirt domain.
struct ApplianceOptionGroup: ParsableArguments {
    @Option(help: "Deployment configuration of an OVF with several (default: the descriptor's default).")
    var config: String?

    @Flag(name: .customLong("no-verify"), help: "Convert an appliance even when its manifest digests do not match.")
    var noVerify = false

    @Option(name: .customLong("disk-bus"), help: "Disk bus in the libvirt domain: virtio, sata or scsi (default: virtio; sata for Windows guests).")
    var diskBus: DiskBus?

    @Option(name: .customLong("nic-model"), help: "NIC model in the libvirt domain: virtio, e1000 or e1000e (default: virtio; e1000 for Windows guests).")
    var nicModel: NICModel?

    @Option(name: .customLong("domain-xml"), help: "Also write a minimal libvirt domain for the converted disk to this file (single images).")
    var domainXML: String?
}

extension DiskBus: ExpressibleByArgument {}
extension NICModel: ExpressibleByArgument {}

extension Info {
    /// `info VM.ova|VM.ovf`: the VM the appliance describes.
    func runAppliance(configuration: String?) throws {
        var options = ApplianceOptions(configuration: configuration)
        options.referencePolicy = source.openOptions.effectiveReferencePolicy
        options.untrusted = source.untrusted
        let appliance = try Appliance(path: image, options: options)
        switch output {
        case .json: print(appliance.infoValue.jsonText())
        case .human: print(ApplianceText.render(appliance), terminator: "")
        }
    }
}

extension Convert {
    /// `convert [-O fmt] VM.ova|VM.ovf OUTDIR`: every disk plus OUTDIR/NAME.xml.
    func runAppliance(options convertOptions: ConvertOptions) throws -> [(String, JSONLine.Value)] {
        if appliance.domainXML != nil {
            throw ValidationError("--domain-xml is for single images; an appliance conversion writes OUTDIR/NAME.xml itself")
        }
        var openOptions = ApplianceOptions(configuration: appliance.config)
        openOptions.referencePolicy = source.openOptions.effectiveReferencePolicy
        openOptions.untrusted = source.untrusted
        let opened = try Appliance(path: sourceImage, options: openOptions)
        var options = ApplianceConvertOptions()
        options.convert = convertOptions
        options.diskBus = appliance.diskBus
        options.nicModel = appliance.nicModel
        options.verifyManifest = !appliance.noVerify
        if options.verifyManifest, opened.manifest != nil, progressBar {
            Console.error("verifying the manifest (\(ByteCount.human(opened.bytesToVerify)))...\n")
        }
        let result = try ApplianceConverter.convert(opened, toDirectory: destination, options: options)
        if !quiet { for hint in result.hints { Console.error("note: \(hint.commandLineText)\n") } }
        if progressStyle != .json {
            for disk in result.disks { print("disk \(disk.diskID): \(disk.path)") }
            print("domain: \(result.domainXMLPath)  (virsh define \(result.domainXMLPath))")
        }
        var disks = JSONLine()
        for disk in result.disks { disks.add(disk.diskID, .string(disk.path)) }
        return [("output", .string(destination)), ("disks", .object(disks)), ("domain", .string(result.domainXMLPath))]
    }

    /// `convert SRC DST --domain-xml FILE`: a minimal domain for the converted disk.
    func writeSingleDiskDomain(source device: any BlockDevice, format: ImageFormat) throws {
        guard let path = appliance.domainXML else { return }
        let (spec, hints) = ApplianceConverter.singleDiskDomain(source: device, diskPath: destination, format: format,
                                                                diskBus: appliance.diskBus, nicModel: appliance.nicModel)
        try LibvirtDomainXML.write(LibvirtDomainXML.render(spec), to: path, overwrite: force)
        if !quiet { for hint in hints { Console.error("note: \(hint)\n") } }
    }
}

/// Human rendering of an appliance for `info`.
enum ApplianceText {
    static func render(_ appliance: Appliance) -> String {
        let vm = appliance.machine
        var out = "appliance: \(appliance.path)\n"
        out += "container: \(appliance.container.rawValue.uppercased()), descriptor \(appliance.descriptorName) (OVF \(vm.ovfVersion))\n"
        out += "name: \(vm.name)\n"
        if let producer = vm.producer { out += "producer: \(producer)\n" }
        let os = vm.operatingSystem
        out += "guest OS: \(os.displayName)"
        var osDetails: [String] = []
        if let id = os.cimID { osDetails.append("CIM \(id)" + (os.cimName.map { " \($0)" } ?? "")) }
        if let type = os.vmwareType, type != os.displayName { osDetails.append("vmw \(type)") }
        if let type = os.virtualBoxType, type != os.displayName { osDetails.append("vbox \(type)") }
        if os.isWindows { osDetails.append("Windows") }
        out += osDetails.isEmpty ? "\n" : " (\(osDetails.joined(separator: ", ")))\n"
        out += "vCPUs: \(vm.cpuCount)" + (vm.coresPerSocket.map { " (\($0) core\($0 == 1 ? "" : "s") per socket)" } ?? "") + "\n"
        out += "memory: \(ByteCount.human(vm.memoryBytes)) (\(vm.memoryBytes) bytes)\n"
        out += "firmware: \(vm.firmware.rawValue.uppercased()) (\(vm.firmwareSource.rawValue))"
        out += vm.secureBoot ? ", secure boot\n" : "\n"
        if !vm.configurations.isEmpty {
            let list = vm.configurations.map { $0.id + ($0.isDefault ? " (default)" : "") }.joined(separator: ", ")
            out += "configuration: \(vm.selectedConfiguration ?? "-") of \(list)\n"
        }
        out += "disks:\n"
        for (index, disk) in vm.disks.enumerated() {
            out += "    [\(index + 1)] \(disk.diskID): \(disk.file?.href ?? "(blank)")"
            if let capacity = disk.capacity { out += ", capacity \(ByteCount.human(capacity))" }
            if let uri = disk.formatURI {
                let variant = uri.split(separator: "#").last.map(String.init)
                out += ", " + (disk.declaredFormat?.rawValue ?? "format") + (variant.map { $0 == uri ? "" : " \($0)" } ?? "")
            }
            if let controller = disk.controller {
                out += ", on \(controller.bus.rawValue)" + (controller.model.map { " (\($0))" } ?? "")
                if let unit = disk.addressOnParent { out += " unit \(unit)" }
            }
            out += "\n"
        }
        if vm.disks.isEmpty { out += "    none\n" }
        out += "nics:\n"
        for (index, nic) in vm.networkAdapters.enumerated() {
            out += "    [\(index + 1)] \(nic.name ?? nic.instanceID): \(nic.adapterType ?? "unknown type")"
            if let network = nic.network { out += " on \"\(network)\"" }
            if let mac = nic.macAddress { out += ", MAC \(mac)" }
            out += "\n"
        }
        if vm.networkAdapters.isEmpty { out += "    none\n" }
        if let manifest = appliance.manifest, let name = appliance.manifestName {
            let algorithms = Set(manifest.entries.map(\.algorithm.rawValue)).sorted().joined(separator: "/")
            out += "manifest: \(name) (\(manifest.entries.count) files, \(algorithms); checked by convert)\n"
        } else {
            out += "manifest: none\n"
        }
        for note in appliance.notes + vm.notes { out += "note: \(note)\n" }
        return out
    }
}
