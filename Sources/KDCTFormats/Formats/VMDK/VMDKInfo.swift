/// Collects what `info` shows about a VMDK disk while its extents are opened: the extents, the files referenced,
/// the grain size, dirty flags, and producer hints from the descriptor's disk database.
struct InfoBuilder {
    let file: ReadOnlyFile
    let descriptor: VMDKDescriptor
    private(set) var extents: [InfoValue] = []
    private(set) var references: [ImageReference] = []
    private(set) var dirty = false
    private(set) var clusterSize: UInt64?
    private(set) var compressed = false
    private(set) var sparseVersion: UInt32?
    private var allocated: [FileIdentity: UInt64] = [:]
    var notes: [String] = []

    init(file: ReadOnlyFile, descriptor: VMDKDescriptor) {
        self.file = file
        self.descriptor = descriptor
        allocated[file.identity] = file.allocatedSize
        for (line, text) in descriptor.ignoredLines {
            notes.append("descriptor line \(line) ignored (neither a key = value pair nor an extent line): \(text)")
        }
    }

    private mutating func count(_ extentFile: ReadOnlyFile?) {
        if let extentFile { allocated[extentFile.identity] = extentFile.allocatedSize }
    }

    private func common(_ line: VMDKDescriptor.ExtentLine?, name: String?, access: String, type: String,
                        bytes: UInt64) -> [(String, InfoValue)] {
        var fields: [(String, InfoValue)] = [("type", .string(type)), ("access", .string(access)),
                                            ("virtual-size", .unsigned(bytes))]
        if let name { fields.append(("filename", .string(name))) }
        if let line, line.type == .flat || line.type == .vmfs {
            // Not yet checked in `info` mode (the file is not opened): report sectors when bytes would overflow.
            let (bytes, overflow) = line.offset.multipliedReportingOverflow(by: 512)
            fields.append(overflow ? ("offset-sectors", .unsigned(line.offset)) : ("offset", .unsigned(bytes)))
        }
        return fields
    }

    /// Records a file named by the descriptor.
    mutating func addReference(_ name: String, resolved: String?, opened: Bool) {
        references.append(ImageReference(kind: .extent, name: name, resolvedPath: resolved, opened: opened))
    }

    /// A ZERO, NOACCESS, flat or unopened extent.
    mutating func addPlain(_ line: VMDKDescriptor.ExtentLine, file extentFile: ReadOnlyFile?) {
        count(extentFile)
        var fields = common(line, name: line.fileName, access: line.access.rawValue, type: line.type.rawValue,
                            bytes: line.sectors &* 512)  // the extent sizes were summed with overflow checks
        if line.access == .noAccess { fields.append(("note", .string("NOACCESS: reads as zeros"))) }
        extents.append(.object(fields))
    }

    private mutating func noteSparse(_ extent: VMDKSparseExtent) {
        if clusterSize == nil { clusterSize = extent.layout.grainBytes }
        if extent.isCompressed { compressed = true }
    }

    private func tableFields(_ extent: VMDKSparseExtent) -> [(String, InfoValue)] {
        [("cluster-size", .unsigned(extent.layout.grainBytes)),
         ("grain-tables", .unsigned(UInt64(extent.allocatedTables))),
         ("grain-tables-loaded-at-open", .bool(extent.tablesLoadedAtOpen))]
    }

    /// A hosted sparse (KDMV) extent; `file` is nil when it is the image file itself.
    mutating func addSparse(_ extent: VMDKSparseExtent, header: VMDKSparseHeader, name: String, access: String,
                            type: String, file extentFile: ReadOnlyFile?) {
        count(extentFile)
        noteSparse(extent)
        if sparseVersion == nil { sparseVersion = header.version }
        if header.uncleanShutdown {
            dirty = true
            notes.append("\(name): the unclean-shutdown flag is set (the disk was in use when it was copied)")
        }
        var fields = common(nil, name: name, access: access, type: type, bytes: extent.byteCount)
        fields.append(("format", .string(extent.hasMarkers ? "KDMV stream" : "KDMV")))
        fields.append(("version", .unsigned(UInt64(header.version))))
        fields.append(("compressed", .bool(extent.isCompressed)))
        fields.append(("zeroed-grain-entries", .bool(header.hasZeroedGrainEntries)))
        fields.append(("grain-directory-in-footer", .bool(header.grainDirectoryInFooter)))
        if header.flags & VMDKSparseHeader.flagRedundantGrainDirectory != 0 {
            fields.append(("redundant-grain-directory-sector", .unsigned(header.redundantGrainDirectoryOffset)))
        }
        fields += tableFields(extent)
        extents.append(.object(fields))
    }

    /// A COWD (vmfsSparse) extent.
    mutating func addCOWD(_ extent: VMDKSparseExtent, header: VMDKCOWDHeader, name: String,
                          line: VMDKDescriptor.ExtentLine, file extentFile: ReadOnlyFile) {
        count(extentFile)
        noteSparse(extent)
        if header.inconsistent {
            dirty = true
            notes.append("\(name): the COWD inconsistent flag is set (the disk was in use when it was copied)")
        }
        var fields = common(line, name: name, access: line.access.rawValue, type: line.type.rawValue, bytes: extent.byteCount)
        fields.append(("format", .string("COWD")))
        fields.append(("version", .unsigned(UInt64(header.version))))
        fields += tableFields(extent)
        extents.append(.object(fields))
    }

    /// A seSparse extent.
    mutating func addSESparse(_ extent: VMDKSparseExtent, name: String, line: VMDKDescriptor.ExtentLine,
                              file extentFile: ReadOnlyFile) {
        count(extentFile)
        noteSparse(extent)
        var fields = common(line, name: name, access: line.access.rawValue, type: line.type.rawValue, bytes: extent.byteCount)
        fields.append(("format", .string("seSparse")))
        fields += tableFields(extent)
        extents.append(.object(fields))
    }

    /// The finished record. `parent` describes the parent reference, when the descriptor names one.
    func build(virtualSize: UInt64, parent: ImageReference?) -> ImageInfo {
        var references = self.references
        if let parent { references.append(parent) }
        let createType = descriptor.createType ?? "monolithicSparse"
        var specific: [(String, InfoValue)] = [("create-type", .string(createType))]
        if let cid = descriptor.cid { specific.append(("cid", .unsigned(UInt64(cid)))) }
        if let parentCID = descriptor.parentCID { specific.append(("parent-cid", .unsigned(UInt64(parentCID)))) }
        specific.append(("descriptor-version", .unsigned(UInt64(descriptor.version))))
        if let version = sparseVersion { specific.append(("version", .unsigned(UInt64(version)))) }
        specific.append(("compressed", .bool(compressed)))
        for (key, label) in [("ddb.adapterType", "adapter-type"), ("ddb.virtualHWVersion", "hardware-version"),
                             ("ddb.toolsVersion", "tools-version"), ("ddb.uuid", "uuid"),
                             ("ddb.longContentID", "long-content-id"), ("ddb.encoding", "encoding")] {
            if let value = descriptor[key] { specific.append((label, .string(value))) }
        }
        if let hint = descriptor.parentFileNameHint { specific.append(("parent-file-name-hint", .string(hint))) }
        specific.append(("extents", .array(extents)))
        let actual = allocated.values.reduce(0, +)
        return ImageInfo(format: .vmdk, filename: file.path, virtualSize: virtualSize, subformat: createType,
                         clusterSize: clusterSize, dirty: dirty, backingFilename: descriptor.parentFileNameHint,
                         backingFormat: descriptor.parentFileNameHint == nil ? nil : "vmdk", references: references,
                         producer: Self.producer(descriptor), formatSpecific: .object(specific), notes: notes,
                         actualSize: actual)
    }

    /// Who probably wrote the disk, from the disk database: VirtualBox writes `ddb.uuid.image`; qemu-img writes
    /// `ddb.toolsVersion = "2147483647"`; VMware Workstation and ESXi write `ddb.longContentID`; ESXi writes VMFS
    /// create types. The virtual hardware and tools versions are added when present.
    static func producer(_ descriptor: VMDKDescriptor) -> String? {
        let hardware = descriptor["ddb.virtualHWVersion"]
        let tools = descriptor["ddb.toolsVersion"]
        let createType = descriptor.createType ?? ""
        var creator: String?
        if descriptor["ddb.uuid.image"] != nil {
            creator = "VirtualBox"
        } else if tools == "2147483647" {
            creator = "QEMU (qemu-img)"
        } else if createType.hasPrefix("vmfs") || createType == "seSparse" {
            creator = "VMware ESXi"
        } else if descriptor["ddb.longContentID"] != nil {
            creator = "VMware Workstation/Fusion"
        }
        var hints: [String] = []
        if let hardware { hints.append("virtual hardware version \(hardware)") }
        if let tools, tools != "2147483647", tools != "0" { hints.append("VMware Tools \(tools)") }
        if creator == nil && hints.isEmpty { return nil }
        let name = creator ?? "VMware-compatible writer"
        return hints.isEmpty ? name : "\(name) (\(hints.joined(separator: ", ")))"
    }
}
