import KDCTFormats

/// How an appliance is opened.
public struct ApplianceOptions: Sendable {
    /// The deployment configuration to describe (a `DeploymentOptionSection` id); nil takes the descriptor's default.
    public var configuration: String?
    /// Safety limits (descriptor and manifest size, and those of the disk readers).
    public var limits = ImageLimits()
    /// Which files an OVF descriptor on disk may name (members of an OVA are always read from the archive, and the
    /// disks inside an OVA may not reference any file outside it).
    public var referencePolicy: ReferencePolicy = .sameDirectory
    /// Strict mode for untrusted input (`OpenOptions.untrusted`), applied to every disk of the appliance: no
    /// references, ambiguous disk files and risky VMDK subformats refused.
    public var untrusted = false

    /// Default options.
    public init(configuration: String? = nil) { self.configuration = configuration }
}

/// A virtual appliance: an OVA archive (read in place) or an OVF descriptor with its files beside it.
public final class Appliance: Sendable {
    /// The packaging.
    public enum Container: String, Sendable {
        /// A tar archive holding the descriptor, manifest and disks.
        case ova
        /// A descriptor file whose files lie in its directory.
        case ovf
    }

    /// The path as given.
    public let path: String
    /// OVA or OVF.
    public let container: Container
    /// The archive, for an OVA.
    let archive: TarArchive?
    /// The descriptor's name (the OVA member or the file's path).
    public let descriptorName: String
    /// The VM the descriptor describes, for the selected deployment configuration.
    public let machine: VirtualMachineDescription
    /// The manifest's name, when the appliance has one.
    public let manifestName: String?
    /// The manifest, when the appliance has one.
    public let manifest: Manifest?
    /// The signing certificate's name, when the appliance has one (the signature is not checked).
    public let certificateName: String?
    /// Remarks about the packaging.
    public let notes: [String]
    /// The options it was opened with.
    public let options: ApplianceOptions

    /// True when `path` looks like an appliance: a `.ova`/`.ovf` name, or content that is a tar archive whose
    /// first member is an `.ovf`, or XML with an OVF `Envelope`. Never true for a disk image format.
    public static func isAppliance(path: String) -> Bool {
        let ext = FilePaths.fileExtension(of: path)
        if ext == "ova" || ext == "ovf" { return true }
        guard let file = try? ReadOnlyFile(path: path) else { return false }
        guard let head = try? file.readBytes(count: Int(min(file.size, 4096)), at: 0) else { return false }
        if TarArchive.looksLikeTar(head), let header = try? TarHeader.decode(Array(head.prefix(512)), at: 0) {
            return header.name.lowercased().hasSuffix(".ovf")
        }
        let text = String(decoding: head, as: UTF8.self)
        return text.hasPrefix("<") && text.contains("Envelope") && text.contains("schemas.dmtf.org/ovf/envelope")
    }

    /// Opens the appliance at `path`: lists the archive (OVA), parses the descriptor and the manifest. Disks are
    /// not opened and the manifest is not checked until asked (`openDisk`, `verifyManifest`).
    public init(path: String, options: ApplianceOptions = ApplianceOptions()) throws {
        self.path = path
        self.options = options
        let file = try ReadOnlyFile(path: path)
        let head = try file.readBytes(count: Int(min(file.size, 512)), at: 0, what: "header")
        var notes: [String] = []
        if TarArchive.looksLikeTar(head) {
            let archive = try TarArchive(file: file)
            notes += archive.notes
            let regular = archive.members.filter { $0.kind == .regular }
            guard let descriptor = regular.first(where: { FilePaths.fileExtension(of: $0.name) == "ovf" }) else {
                throw KDCTError(.invalidFormat, "the archive holds no .ovf descriptor, so it is not an OVA", file: path,
                                field: "ovf")
            }
            if regular.first?.name != descriptor.name {
                notes.append("the descriptor \(descriptor.name) is not the first member, as DSP0243 requires")
            }
            let descriptors = regular.filter { FilePaths.fileExtension(of: $0.name) == "ovf" }
            if descriptors.count > 1 { notes.append("\(descriptors.count) descriptors in the archive; \(descriptor.name) is used") }
            let bytes = try archive.contents(of: descriptor, limit: options.limits.maxDescriptorBytes)
            self.machine = try OVFDescriptor.parse(bytes, file: path + "/" + descriptor.name,
                                                       configuration: options.configuration, limits: options.limits)
            let manifestMember = regular.first { $0.name == Self.dropExtension(descriptor.name) + ".mf" }
                ?? regular.first { FilePaths.fileExtension(of: $0.name) == "mf" }
            if let manifestMember {
                let manifestBytes = try archive.contents(of: manifestMember, limit: options.limits.maxDescriptorBytes)
                self.manifest = try Manifest.parse(manifestBytes, file: path + "/" + manifestMember.name)
            } else {
                self.manifest = nil
            }
            self.manifestName = manifestMember?.name
            self.certificateName = regular.first { FilePaths.fileExtension(of: $0.name) == "cert" }?.name
            self.archive = archive
            self.container = .ova
            self.descriptorName = descriptor.name
        } else {
            if FilePaths.fileExtension(of: path) == "ova" {
                throw KDCTError(.invalidFormat, "an .ova must be a tar archive, and this file does not start with a valid tar header",
                                file: path, field: "tar header")
            }
            try ImageLimits.check("OVF descriptor size", file.size, max: options.limits.maxDescriptorBytes, file: path)
            let bytes = try file.readBytes(count: Int(file.size), at: 0, what: "OVF descriptor")
            if bytes.isEmpty || bytes.allSatisfy({ $0 == 0 }) {
                throw KDCTError(.invalidFormat, "neither a tar archive (OVA) nor an XML descriptor (OVF)", file: path)
            }
            self.machine = try OVFDescriptor.parse(bytes, file: path, configuration: options.configuration,
                                                       limits: options.limits)
            // The manifest and certificate beside a descriptor share its base name (DSP0243 5.1).
            let base = Self.dropExtension(path)
            let manifestPath = base + ".mf"
            if FilePaths.isRegularFile(manifestPath) {
                let manifestFile = try ReadOnlyFile(path: manifestPath)
                try ImageLimits.check("manifest size", manifestFile.size, max: options.limits.maxDescriptorBytes,
                                      file: manifestPath)
                let manifestBytes = try manifestFile.readBytes(count: Int(manifestFile.size), at: 0, what: "manifest")
                self.manifest = try Manifest.parse(manifestBytes, file: manifestPath)
                self.manifestName = FilePaths.lastComponent(of: manifestPath)
            } else {
                self.manifest = nil
                self.manifestName = nil
            }
            let certificatePath = base + ".cert"
            self.certificateName = FilePaths.isRegularFile(certificatePath) ? FilePaths.lastComponent(of: certificatePath) : nil
            self.archive = nil
            self.container = .ovf
            self.descriptorName = FilePaths.lastComponent(of: path)
        }
        if let certificateName { notes.append("signed (\(certificateName)); the signature is not checked, only the manifest digests") }
        self.notes = notes
    }

    private static func dropExtension(_ path: String) -> String {
        let name = FilePaths.lastComponent(of: path)
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return path }
        return String(path.dropLast(name.distance(from: dot, to: name.endIndex)))
    }

    // MARK: Files

    /// Opens the appliance file named `href` (an OVA member, or a file beside the descriptor under the reference
    /// policy) as a `ReadOnlyFile`.
    func openFile(named href: String) throws -> ReadOnlyFile {
        if let archive {
            // hrefs are relative to the descriptor, which may sit in a folder of the archive.
            let folder = descriptorName.contains("/") ? FilePaths.directory(of: descriptorName) + "/" : ""
            let candidates = folder.isEmpty ? [href] : [folder + href, href]
            for name in candidates {
                if let member = archive.member(named: name) { return try archive.open(member) }
                if let other = archive.members.first(where: { $0.name == name }) { return try archive.open(other) }
            }
            throw KDCTError(.notFound, "\(href), named by the descriptor, is not in the archive", file: path, field: href)
        }
        let resolved = try ReferenceResolver.resolve(href, kind: .extent, relativeTo: path, policy: options.referencePolicy)
        return try ReadOnlyFile(path: resolved)
    }

    /// Opens `file` checked against what the descriptor says about it: compressed and chunked files are refused,
    /// and a file shorter than its `ovf:size` is `truncated`.
    func openChecked(_ file: ApplianceFile) throws -> ReadOnlyFile {
        if let compression = file.compression {
            throw KDCTError(.unsupported, "\(file.href) is stored \(compression)-compressed (ovf:compression); decompress the appliance first",
                            file: path, field: "ovf:compression")
        }
        if file.chunkSize != nil {
            throw KDCTError(.unsupported, "\(file.href) is split into chunks (ovf:chunkSize); join the chunks first",
                            file: path, field: "ovf:chunkSize")
        }
        let opened = try openFile(named: file.href)
        if let declared = file.size, opened.size < declared {
            throw KDCTError(.truncated, "\(file.href) holds \(opened.size) bytes but the descriptor says \(declared) (ovf:size)",
                            file: opened.path, field: "ovf:size")
        }
        return opened
    }

    /// Opens `disk` as a `BlockDevice` reading straight from the archive member (OVA) or the file beside the
    /// descriptor (OVF); a disk without a file is an all-zero device of its capacity. The image format must match
    /// what `ovf:format` declares. Images inside an OVA may not reference other files.
    public func openDisk(_ disk: VirtualDisk) throws -> OpenedApplianceDisk {
        var notes: [String] = []
        guard let applianceFile = disk.file else {
            guard let capacity = disk.capacity else {
                throw KDCTError(.corrupt, "disk \(disk.diskID) has neither a file nor a capacity", file: path)
            }
            try ImageLimits.check("capacity of blank disk \(disk.diskID)", capacity, max: options.limits.maxVirtualSize,
                                  file: path)
            notes.append("disk \(disk.diskID) has no file: written as an empty disk of \(capacity) bytes")
            return OpenedApplianceDisk(disk: disk, device: BlankDisk(virtualSize: capacity, name: "\(path)/\(disk.diskID)"),
                                       notes: notes)
        }
        let file = try openChecked(applianceFile)
        if let declared = applianceFile.size, file.size > declared {
            notes.append("\(applianceFile.href) holds \(file.size) bytes, more than the \(declared) of ovf:size")
        }
        var openOptions = OpenOptions(format: disk.declaredFormat)
        openOptions.limits = options.limits
        openOptions.referencePolicy = container == .ova ? .none : options.referencePolicy
        openOptions.untrusted = options.untrusted
        let device = try ImageOpener.open(file: file, options: openOptions)
        if let capacity = disk.capacity, capacity != device.virtualSize {
            notes.append("disk \(disk.diskID): the image holds \(device.virtualSize) bytes, the descriptor's capacity is \(capacity); the image's size is kept")
        }
        return OpenedApplianceDisk(disk: disk, device: device, notes: notes)
    }

    // MARK: Manifest

    /// What `verifyManifest` checked.
    public struct ManifestReport: Sendable {
        /// Files whose digest matched.
        public var verified: [String]
        /// Files the conversion uses that the manifest does not list.
        public var unlisted: [String]
        /// Remarks.
        public var notes: [String]
    }

    /// The files a conversion reads, named relative to the descriptor as the manifest names them: the
    /// descriptor and every disk file.
    public var filesUsed: [String] {
        [FilePaths.lastComponent(of: descriptorName)] + machine.disks.compactMap { $0.file?.href }
    }

    /// Bytes `verifyManifest` will hash.
    public var bytesToVerify: UInt64 {
        guard let manifest else { return 0 }
        var total: UInt64 = 0
        for name in filesUsed where manifest.entry(for: name) != nil {
            total += (try? openFile(named: name).size) ?? 0
        }
        return total
    }

    /// Checks every file a conversion uses against the manifest. Throws `checksum` on the first mismatch, and
    /// `notFound` when the manifest lists a used file the appliance lacks. Without a manifest it checks nothing.
    /// `progress` gets the bytes hashed so far across all files.
    public func verifyManifest(progress: ((UInt64) -> Void)? = nil,
                               isCancelled: (() -> Bool)? = nil) throws -> ManifestReport {
        var report = ManifestReport(verified: [], unlisted: [], notes: [])
        guard let manifest else {
            report.notes.append("no manifest: nothing to verify")
            return report
        }
        let manifestPath = archive != nil ? path + "/" + (manifestName ?? "") : FilePaths.join(FilePaths.directory(of: path), manifestName ?? "")
        var done: UInt64 = 0
        var seen = Set<String>()
        for name in filesUsed where !seen.contains(name) {
            seen.insert(name)
            guard let entry = manifest.entry(for: name) else {
                report.unlisted.append(name)
                continue
            }
            let file = name == descriptorName && archive == nil ? try ReadOnlyFile(path: path) : try openFile(named: name)  // openFile looks beside the descriptor
            let base = done
            try Manifest.verify(file, against: entry, manifestPath: manifestPath, progress: { progress?(base + $0) },
                                isCancelled: isCancelled)
            done += file.size
            report.verified.append(name)
        }
        if !report.unlisted.isEmpty {
            report.notes.append("not in the manifest, so not verified: \(report.unlisted.joined(separator: ", "))")
        }
        let others = manifest.entries.map(\.name).filter { name in !filesUsed.contains { $0 == name } }
        if !others.isEmpty {
            report.notes.append("listed in the manifest but not used by the conversion, not checked: \(others.joined(separator: ", "))")
        }
        return report
    }
}

/// A disk of an appliance opened for reading.
public struct OpenedApplianceDisk: Sendable {
    /// What the descriptor says about it.
    public var disk: VirtualDisk
    /// Its guest content.
    public var device: any BlockDevice
    /// Remarks (size differences, blank disk).
    public var notes: [String]
}

/// An all-zero disk: an OVF disk with a capacity but no file.
final class BlankDisk: BlockDevice {
    /// The disk's size in bytes.
    let virtualSize: UInt64
    private let name: String

    /// A zero disk of `virtualSize` bytes called `name` in messages.
    init(virtualSize: UInt64, name: String) {
        self.virtualSize = virtualSize
        self.name = name
    }

    var info: ImageInfo {
        ImageInfo(format: .raw, filename: name, virtualSize: virtualSize, subformat: "blank",
                  notes: ["an empty disk declared by the OVF descriptor"])
    }

    func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        Extent(offset: offset, length: min(maxLength, virtualSize - min(offset, virtualSize)), status: .zero)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }
}
