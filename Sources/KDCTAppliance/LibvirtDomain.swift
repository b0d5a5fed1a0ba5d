import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KDCTFormats

/// The bus converted disks are attached to in the generated libvirt domain.
public enum DiskBus: String, Sendable, CaseIterable {
    /// virtio-blk: fastest; needs virtio drivers in the guest (Linux has them, Windows needs virtio-win).
    case virtio
    /// AHCI on q35: every OS boots from it without extra drivers.
    case sata
    /// virtio-scsi: TRIM, many disks; needs the vioscsi driver on Windows.
    case scsi
}

/// The model of the generated network adapters.
public enum NICModel: String, Sendable, CaseIterable {
    /// virtio-net: fastest; needs virtio drivers on Windows.
    case virtio
    /// Intel e1000: drivers in every Windows release.
    case e1000
    /// Intel e1000e (82574): drivers in Windows 8 and later.
    case e1000e
}

/// What goes into a generated libvirt domain.
public struct LibvirtDomainSpec: Sendable, Equatable {
    /// One disk of the domain.
    public struct Disk: Sendable, Equatable {
        /// Absolute path of the image.
        public var path: String
        /// The image's format (raw or qcow2).
        public var format: ImageFormat
        /// The bus it is attached to.
        public var bus: DiskBus

        /// A disk at `path` in `format` on `bus`.
        public init(path: String, format: ImageFormat, bus: DiskBus) {
            self.path = path
            self.format = format
            self.bus = bus
        }
    }

    /// One network adapter of the domain.
    public struct NIC: Sendable, Equatable {
        /// The adapter model.
        public var model: NICModel
        /// The MAC address to keep, when the source had one.
        public var macAddress: String?
        /// A remark written as an XML comment before the adapter (the source network and adapter type).
        public var comment: String?

        /// An adapter of `model`.
        public init(model: NICModel, macAddress: String? = nil, comment: String? = nil) {
            self.model = model
            self.macAddress = macAddress
            self.comment = comment
        }
    }

    /// Domain name (restricted to letters, digits, `.`, `_`, `+`, `-`).
    public var name: String
    /// A one-line title (the original VM name).
    public var title: String?
    /// Free text for `<description>`.
    public var description: String?
    /// Memory in bytes (rounded up to KiB).
    public var memoryBytes: UInt64
    /// Virtual CPUs.
    public var cpuCount: Int
    /// Cores per socket, when the topology should be explicit.
    public var coresPerSocket: Int?
    /// Boot firmware.
    public var firmware: Firmware
    /// Ask for UEFI secure boot (with enrolled keys and SMM).
    public var secureBoot: Bool
    /// Windows guest: local-time clock and Hyper-V enlightenments, VGA video.
    public var windowsGuest: Bool
    /// Disks in boot order.
    public var disks: [Disk]
    /// Network adapters, all on libvirt's `default` network.
    public var nics: [NIC]

    /// A spec with everything given.
    public init(name: String, title: String? = nil, description: String? = nil, memoryBytes: UInt64, cpuCount: Int,
                coresPerSocket: Int? = nil, firmware: Firmware = .bios, secureBoot: Bool = false,
                windowsGuest: Bool = false, disks: [Disk], nics: [NIC]) {
        self.name = name
        self.title = title
        self.description = description
        self.memoryBytes = memoryBytes
        self.cpuCount = cpuCount
        self.coresPerSocket = coresPerSocket
        self.firmware = firmware
        self.secureBoot = secureBoot
        self.windowsGuest = windowsGuest
        self.disks = disks
        self.nics = nics
    }
}

/// Renders and writes libvirt domain XML (https://libvirt.org/formatdomain.html) for converted disks: a q35 KVM
/// machine with the VM's memory, vCPUs and firmware, its disks and NICs, a serial console and VNC graphics.
public enum LibvirtDomainXML {
    /// A libvirt-safe name made from `text`: letters, digits, `.`, `_`, `+`, `-` kept, anything else `-`;
    /// never empty and never starting with `.` or `-`.
    package static func sanitizedName(_ text: String) -> String {
        var name = String(text.unicodeScalars.map { scalar -> Character in
            let c = Character(scalar)
            return scalar.isASCII && (c.isLetter || c.isNumber || "._+-".contains(c)) ? c : "-"
        })
        while let first = name.first, first == "." || first == "-" { name.removeFirst() }
        if name.count > 200 { name = String(name.prefix(200)) }
        return name.isEmpty ? "vm" : name
    }

    /// The target device name of the `index`th disk (0-based) with `prefix` (`vd`, `sd`): vda..vdz, vdaa...
    static func deviceName(prefix: String, index: Int) -> String {
        var n = index
        var letters = ""
        repeat {
            letters = String(UnicodeScalar(UInt8(97 + n % 26))) + letters
            n = n / 26 - 1
        } while n >= 0
        return prefix + letters
    }

    /// The domain XML for `spec`.
    public static func render(_ spec: LibvirtDomainSpec) -> String {
        var x = "<domain type='kvm'>\n"
        x += "  <name>\(escape(sanitizedName(spec.name)))</name>\n"
        if let title = spec.title {
            x += "  <title>\(escape(title.split(whereSeparator: \.isNewline).joined(separator: " ")))</title>\n"
        }
        if let description = spec.description { x += "  <description>\(escape(description))</description>\n" }
        let kib = spec.memoryBytes / 1024 + (spec.memoryBytes % 1024 == 0 ? 0 : 1)
        x += "  <memory unit='KiB'>\(max(kib, 1))</memory>\n"
        x += "  <currentMemory unit='KiB'>\(max(kib, 1))</currentMemory>\n"
        x += "  <vcpu placement='static'>\(max(spec.cpuCount, 1))</vcpu>\n"
        x += spec.firmware == .efi ? "  <os firmware='efi'>\n" : "  <os>\n"
        x += "    <type arch='x86_64' machine='q35'>hvm</type>\n"
        if spec.firmware == .efi && spec.secureBoot {
            x += "    <firmware>\n"
            x += "      <feature enabled='yes' name='secure-boot'/>\n"
            x += "      <feature enabled='yes' name='enrolled-keys'/>\n"
            x += "    </firmware>\n"
        }
        x += "    <boot dev='hd'/>\n"
        x += "  </os>\n"
        x += "  <features>\n    <acpi/>\n    <apic/>\n"
        if spec.windowsGuest {
            x += "    <hyperv mode='custom'>\n"
            x += "      <relaxed state='on'/>\n      <vapic state='on'/>\n      <spinlocks state='on' retries='8191'/>\n"
            x += "    </hyperv>\n"
        }
        if spec.firmware == .efi && spec.secureBoot { x += "    <smm state='on'/>\n" }
        x += "  </features>\n"
        if let cores = spec.coresPerSocket, cores >= 1, spec.cpuCount % cores == 0 {
            x += "  <cpu mode='host-passthrough' check='none'>\n"
            x += "    <topology sockets='\(spec.cpuCount / cores)' dies='1' cores='\(cores)' threads='1'/>\n"
            x += "  </cpu>\n"
        } else {
            x += "  <cpu mode='host-passthrough' check='none'/>\n"
        }
        x += "  <clock offset='\(spec.windowsGuest ? "localtime" : "utc")'>\n"
        x += "    <timer name='rtc' tickpolicy='catchup'/>\n    <timer name='pit' tickpolicy='delay'/>\n"
        x += "    <timer name='hpet' present='no'/>\n"
        if spec.windowsGuest { x += "    <timer name='hypervclock' present='yes'/>\n" }
        x += "  </clock>\n"
        x += "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n"
        x += "  <devices>\n"
        if spec.disks.contains(where: { $0.bus == .scsi }) {
            x += "    <controller type='scsi' index='0' model='virtio-scsi'/>\n"
        }
        var used: [DiskBus: Int] = [:]
        for disk in spec.disks {
            let prefix = disk.bus == .virtio ? "vd" : "sd"
            // sata and scsi share the sd namespace.
            let key: DiskBus = disk.bus == .virtio ? .virtio : .sata
            let index = used[key, default: 0]
            used[key] = index + 1
            x += "    <disk type='file' device='disk'>\n"
            x += "      <driver name='qemu' type='\(disk.format == .qcow2 ? "qcow2" : "raw")' discard='unmap'/>\n"
            x += "      <source file='\(escape(disk.path))'/>\n"
            x += "      <target dev='\(deviceName(prefix: prefix, index: index))' bus='\(disk.bus.rawValue)'/>\n"
            x += "    </disk>\n"
        }
        for nic in spec.nics {
            if let comment = nic.comment { x += "    <!-- \(commentText(comment)) -->\n" }
            x += "    <interface type='network'>\n"
            if let mac = nic.macAddress { x += "      <mac address='\(escape(mac))'/>\n" }
            x += "      <source network='default'/>\n"
            x += "      <model type='\(nic.model.rawValue)'/>\n"
            x += "    </interface>\n"
        }
        x += "    <serial type='pty'>\n      <target port='0'/>\n    </serial>\n"
        x += "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n"
        x += "    <input type='tablet' bus='usb'/>\n"
        x += "    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>\n"
        x += "    <video>\n      <model type='\(spec.windowsGuest ? "vga" : "virtio")'/>\n    </video>\n"
        x += "  </devices>\n"
        x += "</domain>\n"
        return x
    }

    /// Writes `xml` to `path` under a temporary name in the same directory, renamed into place once flushed;
    /// an existing `path` is an `alreadyExists` error unless `overwrite`.
    public static func write(_ xml: String, to path: String, overwrite: Bool = false) throws {
        if !overwrite && FilePaths.exists(path) {
            throw KDCTError(.alreadyExists, "file exists", file: path)
        }
        let temporary = FilePaths.join(FilePaths.directory(of: path),
                                       ".\(FilePaths.lastComponent(of: path)).kdct-\(getpid()).tmp")
        do {
            let file = try WritableFile(creatingExclusively: temporary)
            try Array(xml.utf8).withUnsafeBytes { try file.write($0, at: 0) }
            try file.sync()
            try file.close()
            try FilePaths.rename(temporary, to: path)
            FilePaths.syncDirectory(of: path)
        } catch {
            FilePaths.remove(temporary)
            throw error
        }
    }

    /// Text escaped for XML character data and single- or double-quoted attributes.
    static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "'": out += "&apos;"
            case "\"": out += "&quot;"
            default:
                // Control characters other than tab and newline are not allowed in XML 1.0.
                if scalar.value < 0x20 && scalar != "\t" && scalar != "\n" { out += " " } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out
    }

    /// Text safe inside an XML comment (no `--`, no control characters; entities are not expanded in comments,
    /// so nothing else is escaped).
    static func commentText(_ text: String) -> String {
        var out = String(String.UnicodeScalarView(text.unicodeScalars.map { $0.value < 0x20 ? " " : $0 }))
        while out.contains("--") { out = out.replacingOccurrences(of: "--", with: "- -") }
        if out.hasSuffix("-") { out += " " }
        return out
    }
}
