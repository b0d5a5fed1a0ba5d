#if canImport(Glibc)
import Glibc
#endif
import KDCTFormats

/// Options of an appliance conversion.
public struct ApplianceConvertOptions: Sendable {
    /// Disk output format and writer/pipeline settings (`overwrite` replaces existing outputs).
    public var convert = ConvertOptions(outputFormat: .qcow2)
    /// Bus for every disk; nil: virtio, or sata for a Windows guest.
    public var diskBus: DiskBus?
    /// Model of every NIC; nil: virtio, or e1000 for a Windows guest.
    public var nicModel: NICModel?
    /// Check the manifest digests before writing anything.
    public var verifyManifest = true
    /// Called with (bytes hashed, bytes to hash) while the manifest is checked.
    public var verifyProgress: (@Sendable (UInt64, UInt64) -> Void)?

    /// Default options: qcow2 output, manifest checked.
    public init() {}
}

/// Something an appliance conversion wants its user to know, with what it is about, so a front end can add its own
/// advice (a CLI names the flags that change it).
public struct ApplianceNote: Sendable, Equatable, CustomStringConvertible {
    /// What a note is about. Compare with `==`; more topics may be added.
    public struct Topic: Hashable, Sendable {
        private let rawValue: String
        /// The disk bus and NIC model were chosen for a Windows guest without virtio drivers (sata, e1000).
        public static let windowsDeviceDefaults = Topic(rawValue: "windows-device-defaults")
        /// The appliance has a manifest and it was not checked (``ApplianceConvertOptions/verifyManifest`` off).
        public static let manifestNotVerified = Topic(rawValue: "manifest-not-verified")
        /// Anything else: a default chosen, a size mismatch tolerated, a firmware guessed.
        public static let general = Topic(rawValue: "general")
    }

    /// What the note is about.
    public var topic: Topic
    /// The note, one line.
    public var text: String

    /// A note about `topic`.
    public init(_ text: String, topic: Topic = .general) {
        self.text = text
        self.topic = topic
    }

    /// The text.
    public var description: String { text }
}

/// What an appliance conversion wrote.
public struct ApplianceConvertResult: Sendable {
    /// One converted disk.
    public struct Disk: Sendable {
        /// The OVF disk id.
        public var diskID: String
        /// Where it was written.
        public var path: String
        /// The pipeline's result.
        public var result: ConvertResult
    }

    /// The disks, in boot order.
    public var disks: [Disk]
    /// The libvirt domain XML written.
    public var domainXMLPath: String
    /// The domain it describes.
    public var domain: LibvirtDomainSpec
    /// Things the user should know (defaults chosen for Windows, firmware guessed, files not verified...).
    public var hints: [ApplianceNote]
    /// What the manifest check did (nil with verification off).
    public var manifest: Appliance.ManifestReport?
}

/// Converts an appliance into KVM-ready disks and a libvirt domain in one output directory.
///
/// All or nothing: every disk is opened and checked (sizes, formats) and the manifest verified before anything is
/// written; disks and the domain XML are written under hidden temporary names and renamed to their final names
/// only when all succeeded. On failure every file written is removed, and the directory too when this call
/// created it.
public enum ApplianceConverter {
    /// The file names the conversion writes in the output directory: `NAME-diskN.EXT` per disk and `NAME.xml`.
    public static func outputNames(for appliance: Appliance, format: ImageFormat) -> (disks: [String], domainXML: String) {
        let name = LibvirtDomainXML.sanitizedName(appliance.machine.name)
        let ext = format == .qcow2 ? "qcow2" : "raw"
        let disks = appliance.machine.disks.indices.map { "\(name)-disk\($0 + 1).\(ext)" }
        return (disks, name + ".xml")
    }

    /// The bus and NIC model the domain gets, and a note when Windows defaults were applied.
    static func deviceChoices(for machine: VirtualMachineDescription, diskBus: DiskBus?,
                                     nicModel: NICModel?) -> (DiskBus, NICModel, ApplianceNote?) {
        let windows = machine.operatingSystem.isWindows
        let bus = diskBus ?? (windows ? .sata : .virtio)
        let nic = nicModel ?? (windows ? .e1000 : .virtio)
        var hint: ApplianceNote?
        if windows && (diskBus == nil || nicModel == nil) {
            hint = ApplianceNote("Windows guest (\(machine.operatingSystem.displayName)): disks on \(bus.rawValue) and NICs as "
                                    + "\(nic.rawValue) so it boots without virtio drivers; install virtio-win in the guest, "
                                    + "then switch both to virtio for speed", topic: .windowsDeviceDefaults)
        }
        return (bus, nic, hint)
    }

    /// Converts `appliance` into `directory` (created when missing).
    public static func convert(_ appliance: Appliance, toDirectory directory: String,
                               options: ApplianceConvertOptions = ApplianceConvertOptions()) throws -> ApplianceConvertResult {
        let format = options.convert.outputFormat
        guard format == .raw || format == .qcow2 else {
            throw KDCTError(.unsupported, "appliance disks are written as raw or qcow2, not \(format)",
                            field: "outputFormat")
        }
        let machine = appliance.machine
        guard !machine.disks.isEmpty else {
            throw KDCTError(.unsupported, "the appliance has no disk to convert", file: appliance.path, field: "DiskSection")
        }
        var hints = (appliance.notes + machine.notes).map { ApplianceNote($0) }

        // 1. Open every disk: wrong sizes, formats or members fail here, before anything is written.
        var opened: [OpenedApplianceDisk] = []
        for disk in machine.disks {
            let disk = try appliance.openDisk(disk)
            hints += disk.notes.map { ApplianceNote($0) }
            opened.append(disk)
        }

        // 2. The manifest.
        var report: Appliance.ManifestReport?
        if options.verifyManifest {
            let total = appliance.bytesToVerify
            let progress = options.verifyProgress
            let cancelled = options.convert.pipeline.isCancelled
            report = try appliance.verifyManifest(progress: { progress?($0, total) }, isCancelled: { cancelled?() == true })
            hints += (report?.notes ?? []).map { ApplianceNote($0) }
        } else if appliance.manifest != nil {
            hints.append(ApplianceNote("manifest not checked", topic: .manifestNotVerified))
        }

        // 3. Firmware: the descriptor's, else what the first disk's partition table implies.
        var firmware = machine.firmware
        if machine.firmwareSource == .defaulted, let first = opened.first,
           let guessed = try? BootFirmwareProbe.guess(first.device) {
            firmware = guessed
            if guessed == .efi {
                hints.append(ApplianceNote("the descriptor names no firmware; UEFI chosen because the first disk is GPT with an EFI system partition"))
            }
        }
        let (bus, nic, windowsHint) = deviceChoices(for: machine, diskBus: options.diskBus, nicModel: options.nicModel)
        if let windowsHint { hints.append(windowsHint) }

        // 4. The output directory and names.
        var createdDirectory = false
        if !FilePaths.exists(directory) {
            if mkdir(directory, 0o755) != 0 {
                throw KDCTError.io("mkdir", errno: errno, file: directory)
            }
            createdDirectory = true
        } else if !FilePaths.isDirectory(directory) {
            throw KDCTError(.invalidArgument, "the output of an appliance conversion must be a directory", file: directory)
        }
        let absoluteDirectory = FilePaths.canonical(directory) ?? directory
        let names = outputNames(for: appliance, format: format)
        let finals = names.disks.map { FilePaths.join(absoluteDirectory, $0) } + [FilePaths.join(absoluteDirectory, names.domainXML)]
        var staged: [String] = []
        var renamed: [String] = []
        func cleanUp() {
            for path in staged { FilePaths.remove(path) }
            if !options.convert.overwrite { for path in renamed { FilePaths.remove(path) } }
            if createdDirectory { _ = rmdir(absoluteDirectory) }
        }
        do {
            if !options.convert.overwrite, let existing = finals.first(where: { FilePaths.exists($0) }) {
                throw KDCTError(.alreadyExists, "file exists", file: existing)
            }
            let stagingPrefix = ".kdct-\(getpid())-"
            func staging(_ final: String) -> String {
                FilePaths.join(absoluteDirectory, stagingPrefix + FilePaths.lastComponent(of: final))
            }

            // 5. The disks, with progress summed over all of them.
            let totalBytes = opened.reduce(UInt64(0)) { $0 + $1.device.virtualSize }
            var done: UInt64 = 0
            var disks: [ApplianceConvertResult.Disk] = []
            for (index, disk) in opened.enumerated() {
                var convertOptions = options.convert
                convertOptions.overwrite = false
                if let progress = options.convert.pipeline.progress {
                    let base = done
                    convertOptions.pipeline.progress = { step in
                        progress(ConvertProgress(processedBytes: base + step.processedBytes, totalBytes: totalBytes,
                                                 dataBytesRead: step.dataBytesRead))
                    }
                }
                let target = staging(finals[index])
                staged.append(target)
                let result = try DiskConverter.convert(disk.device, toFile: target, options: convertOptions)
                done += disk.device.virtualSize
                disks.append(.init(diskID: disk.disk.diskID, path: finals[index], result: result))
            }

            // 6. The domain.
            let spec = domainSpec(for: machine, sourceName: FilePaths.lastComponent(of: appliance.path),
                                  firmware: firmware, diskPaths: disks.map(\.path), format: format, bus: bus, nic: nic)
            let xmlPath = finals[finals.count - 1]
            let xmlStaging = staging(xmlPath)
            staged.append(xmlStaging)
            try LibvirtDomainXML.write(LibvirtDomainXML.render(spec), to: xmlStaging, overwrite: false)

            // 7. Everything is written: rename into place.
            for (index, final) in finals.enumerated() {
                let from = staged[index]
                if options.convert.overwrite {
                    try FilePaths.rename(from, to: final)
                } else {
                    try FilePaths.renameNoReplace(from, to: final)
                }
                renamed.append(final)
            }
            staged = []
            FilePaths.syncDirectory(of: xmlPath)
            if machine.firmwareSource == .defaulted && firmware == .bios {
                hints.append(ApplianceNote("the descriptor names no firmware; BIOS is used"))
            }
            return ApplianceConvertResult(disks: disks, domainXMLPath: xmlPath, domain: spec, hints: hints, manifest: report)
        } catch {
            cleanUp()
            throw error
        }
    }

    /// The libvirt domain for `machine` with its disks at `diskPaths` (in `format`, on `bus`) and its NICs as
    /// `nic`; `firmware` overrides the descriptor's (a partition-table guess).
    static func domainSpec(for machine: VirtualMachineDescription, sourceName: String, firmware: Firmware? = nil,
                                  diskPaths: [String], format: ImageFormat, bus: DiskBus, nic: NICModel) -> LibvirtDomainSpec {
        let os = machine.operatingSystem
        let firmware = firmware ?? machine.firmware
        var description = "Converted by kdct-native from \(sourceName) (OVF \(machine.ovfVersion)"
        if let producer = machine.producer { description += ", written by \(producer)" }
        description += "). Guest OS: \(os.displayName). Firmware: \(firmware.rawValue)."
        if let config = machine.selectedConfiguration { description += " Deployment configuration: \(config)." }
        // Windows client editions use at most two sockets: without a topology in the descriptor, give one socket.
        let cores = machine.coresPerSocket ?? (os.isWindows && machine.cpuCount > 1 ? machine.cpuCount : nil)
        return LibvirtDomainSpec(
            name: machine.name, title: machine.name, description: description, memoryBytes: machine.memoryBytes,
            cpuCount: machine.cpuCount, coresPerSocket: cores, firmware: firmware,
            secureBoot: machine.secureBoot && firmware == .efi, windowsGuest: os.isWindows,
            disks: diskPaths.map { LibvirtDomainSpec.Disk(path: $0, format: format, bus: bus) },
            nics: machine.networkAdapters.map { adapter in
                var comment = "OVF adapter \(adapter.name ?? adapter.instanceID)"
                if let type = adapter.adapterType { comment += " (\(type))" }
                if let network = adapter.network { comment += " on network \"\(network)\"" }
                return LibvirtDomainSpec.NIC(model: nic, macAddress: adapter.macAddress, comment: comment)
            })
    }

    /// A minimal domain for one converted disk (`convert SRC DST --domain-xml FILE`): 2 vCPUs, 2 GiB, one NIC,
    /// firmware from the disk's partition table (BIOS when it says nothing).
    public static func singleDiskDomain(source: any BlockDevice, diskPath: String, format: ImageFormat,
                                        diskBus: DiskBus?, nicModel: NICModel?) -> (LibvirtDomainSpec, [ApplianceNote]) {
        var hints: [ApplianceNote] = []
        let guessed = (try? BootFirmwareProbe.guess(source)) ?? nil
        let firmware = guessed ?? .bios
        hints.append(ApplianceNote(guessed == nil ? "firmware: BIOS (the partition table does not say)"
                                                  : "firmware: \(firmware == .efi ? "UEFI" : "BIOS") (from the partition table)"))
        hints.append(ApplianceNote("the domain has 2 vCPUs and 2 GiB of memory; adjust them with virsh edit"))
        var name = FilePaths.lastComponent(of: diskPath)
        if let dot = name.lastIndex(of: "."), dot != name.startIndex { name = String(name[..<dot]) }
        let absolute = FilePaths.canonical(diskPath) ?? diskPath
        let spec = LibvirtDomainSpec(
            name: name, title: name, description: "Converted by kdct-native from \(FilePaths.lastComponent(of: source.info.filename))",
            memoryBytes: 2 << 30, cpuCount: 2, firmware: firmware,
            disks: [.init(path: absolute, format: format, bus: diskBus ?? .virtio)],
            nics: [.init(model: nicModel ?? .virtio)])
        return (spec, hints)
    }
}
