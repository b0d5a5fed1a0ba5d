import KDCTFormats

extension Appliance {
    /// The appliance described for `info --output json` (and, rendered as text, the human `info`).
    public var infoValue: InfoValue {
        let vm = machine
        var pairs: [(String, InfoValue)] = [
            ("format", .string(container.rawValue)),
            ("filename", .string(path)),
            ("descriptor", .string(descriptorName)),
            ("ovf-version", .string(vm.ovfVersion)),
            ("name", .string(vm.name)),
        ]
        if let producer = vm.producer { pairs.append(("producer", .string(producer))) }
        if let type = vm.virtualSystemType { pairs.append(("virtual-system-type", .string(type))) }
        let os = vm.operatingSystem
        var osPairs: [(String, InfoValue)] = [("name", .string(os.displayName))]
        if let id = os.cimID { osPairs.append(("cim-id", .integer(Int64(id)))) }
        if let name = os.cimName { osPairs.append(("cim-name", .string(name))) }
        if let type = os.vmwareType { osPairs.append(("vmware-type", .string(type))) }
        if let type = os.virtualBoxType { osPairs.append(("virtualbox-type", .string(type))) }
        osPairs.append(("windows", .bool(os.isWindows)))
        pairs.append(("operating-system", .object(osPairs)))
        pairs.append(("cpus", .integer(Int64(vm.cpuCount))))
        if let cores = vm.coresPerSocket { pairs.append(("cores-per-socket", .integer(Int64(cores)))) }
        pairs.append(("memory", .unsigned(vm.memoryBytes)))
        pairs.append(("firmware", .string(vm.firmware.rawValue)))
        pairs.append(("firmware-source", .string(vm.firmwareSource.rawValue)))
        pairs.append(("secure-boot", .bool(vm.secureBoot)))
        pairs.append(("disks", .array(vm.disks.map(Self.diskInfo))))
        pairs.append(("nics", .array(vm.networkAdapters.map { adapter in
            var nic: [(String, InfoValue)] = [("id", .string(adapter.instanceID))]
            if let name = adapter.name { nic.append(("name", .string(name))) }
            if let type = adapter.adapterType { nic.append(("type", .string(type))) }
            if let network = adapter.network { nic.append(("network", .string(network))) }
            if let mac = adapter.macAddress { nic.append(("mac", .string(mac))) }
            return .object(nic)
        })))
        if !vm.configurations.isEmpty {
            pairs.append(("configurations", .array(vm.configurations.map { config in
                var item: [(String, InfoValue)] = [("id", .string(config.id))]
                if let label = config.label { item.append(("label", .string(label))) }
                item.append(("default", .bool(config.isDefault)))
                return .object(item)
            })))
        }
        if let selected = vm.selectedConfiguration { pairs.append(("configuration", .string(selected))) }
        if let manifest, let manifestName {
            pairs.append(("manifest", .object([
                ("file", .string(manifestName)),
                ("entries", .array(manifest.entries.map {
                    .object([("name", .string($0.name)), ("algorithm", .string($0.algorithm.rawValue))])
                })),
            ])))
        }
        if let certificateName { pairs.append(("certificate", .string(certificateName))) }
        let allNotes = notes + vm.notes
        if !allNotes.isEmpty { pairs.append(("notes", .array(allNotes.map { .string($0) }))) }
        return .object(pairs)
    }

    static func diskInfo(_ disk: VirtualDisk) -> InfoValue {
        var pairs: [(String, InfoValue)] = [("id", .string(disk.diskID))]
        if let file = disk.file {
            pairs.append(("file", .string(file.href)))
            if let size = file.size { pairs.append(("file-size", .unsigned(size))) }
            if let compression = file.compression { pairs.append(("compression", .string(compression))) }
        } else {
            pairs.append(("blank", .bool(true)))
        }
        if let capacity = disk.capacity {
            pairs.append(("capacity", .unsigned(capacity)))
        } else if !disk.capacityText.isEmpty {
            pairs.append(("capacity", .string(disk.capacityText)))
        }
        if let populated = disk.populatedSize { pairs.append(("populated-size", .unsigned(populated))) }
        if let uri = disk.formatURI { pairs.append(("format-uri", .string(uri))) }
        if let format = disk.declaredFormat { pairs.append(("format", .string(format.rawValue))) }
        if let controller = disk.controller {
            var item: [(String, InfoValue)] = [("bus", .string(controller.bus.rawValue))]
            if let model = controller.model { item.append(("model", .string(model))) }
            pairs.append(("controller", .object(item)))
        }
        if let unit = disk.addressOnParent { pairs.append(("address-on-parent", .string(unit))) }
        return .object(pairs)
    }
}
