/// A VirtualBox Disk Image: dynamic, static, undo or differencing (snapshot), header versions 0.2 and 1.x.
///
/// The header and the whole block map are read and validated at open (every allocated block inside the disk
/// must lie inside the file); afterwards a read is a map lookup and a positional read into the caller's buffer.
/// A differencing image is opened as a `ChainedBlockDevice` over its parent, found by UUID (`VDIParentLocator`).
final class VDIImage: MappedDevice {
    /// The image file.
    let file: ReadOnlyFile
    /// The decoded header.
    let header: VDIHeader
    /// The decoded block map.
    let blockMap: VDIBlockMap
    let virtualSize: UInt64
    let info: ImageInfo
    let hostFileNames: HostFileNames
    private let blocks: BlockTable

    /// Decodes and validates the image in `file`. `parentReference` describes the parent of a differencing image
    /// for `info` (the caller opens the parent).
    convenience init(file: ReadOnlyFile, limits: ImageLimits, parentReference: ImageReference? = nil) throws {
        let header = try VDIImage.readHeader(file, limits: limits)
        let blockMap = try VDIImage.readBlockMap(file, header: header)
        self.init(file: file, header: header, blockMap: blockMap, parentReference: parentReference)
    }

    /// Wraps an already validated header and block map.
    init(file: ReadOnlyFile, header: VDIHeader, blockMap: VDIBlockMap, parentReference: ImageReference?) {
        self.file = file
        self.header = header
        self.blockMap = blockMap
        virtualSize = header.virtualSize
        blocks = BlockTable(file: file, blockShift: UInt64(header.blockSize.trailingZeroBitCount),
                            sectorBytes: UInt64(header.blockSize), bitOrder: .leastSignificantFirst)
        info = VDIImage.makeInfo(file: file, header: header, blockMap: blockMap, parentReference: parentReference)
        hostFileNames = HostFileNames(file)
    }

    /// Reads the block map of `file`, whose validated header is `header`, and checks every entry against the file.
    static func readBlockMap(_ file: ReadOnlyFile, header: VDIHeader) throws -> VDIBlockMap {
        let mapBytes = try file.readBytes(count: Int(header.blockCount) * 4, at: header.blocksOffset, what: "VDI block map")
        let blockMap = VDIBlockMap(bytes: mapBytes, header: header)
        try blockMap.validate(virtualSize: header.virtualSize, blockSize: UInt64(header.blockSize), fileSize: file.size)
        return blockMap
    }

    /// Reads, decodes and validates the header of `file`.
    static func readHeader(_ file: ReadOnlyFile, limits: ImageLimits) throws -> VDIHeader {
        let count = Int(min(UInt64(VDIHeader.readSize), file.size))
        let header = try VDIHeader.decode(try file.readBytes(count: count, at: 0, what: "VDI header"))
        try header.validate(fileSize: file.size, limits: limits)
        return header
    }

    /// Registry entry point: the image alone, or a chain over its parent when it is a differencing image and
    /// references are opened.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let header = try readHeader(file, limits: context.limits)
        let blockMap = try readBlockMap(file, header: header)
        guard header.hasParent else {
            return VDIImage(file: file, header: header, blockMap: blockMap, parentReference: nil)
        }
        let parentName = "creation UUID \(header.linkUUID)"
        guard context.options.openReferences else {
            let reference = ImageReference(kind: .parent, name: parentName)
            return VDIImage(file: file, header: header, blockMap: blockMap, parentReference: reference)
        }
        let parentPath = try VDIParentLocator.locate(for: header, childPath: file.path, childIdentity: file.identity,
                                                     context: context)
        let parent = try context.openResolved(parentPath, kind: .parent, from: file.path, format: .vdi)
        // Check again on what was actually opened (the file may have changed since the search read it).
        guard let parentImage = VDIImage.topImage(of: parent) else {
            throw KDCTError.corrupt("parent \(parentPath) did not open as a VDI image", file: file.path, field: "parent")
        }
        if parentImage.header.creationUUID != header.linkUUID {
            throw KDCTError.corrupt(
                "parent \(parentPath) has creation UUID \(parentImage.header.creationUUID), but this image's link UUID is \(header.linkUUID)",
                file: file.path, field: "link UUID")
        }
        if let expected = header.parentModificationUUID, !expected.isNull,
           parentImage.header.modificationUUID != expected {
            throw KDCTError.corrupt(
                "parent \(parentPath) has modification UUID \(parentImage.header.modificationUUID), but this image's parent UUID is \(expected): the parent was modified after the snapshot was taken",
                file: file.path, field: "parent UUID")
        }
        let reference = ImageReference(kind: .parent, name: parentName, resolvedPath: parentPath, opened: true)
        let top = VDIImage(file: file, header: header, blockMap: blockMap, parentReference: reference)
        return try ChainedBlockDevice(top: top, opened: parent, reference: parentPath)
    }

    /// The VDI image on top of `device` (itself, or the top of a chain), if it is one.
    static func topImage(of device: any BlockDevice) -> VDIImage? {
        if let image = device as? VDIImage { return image }
        if let chain = device as? ChainedBlockDevice { return topImage(of: chain.top) }
        return nil
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try blocks.mapping(at: offset, upTo: end) { block in
            guard block < UInt64(blockMap.entries.count) else {
                throw KDCTError.corrupt("block \(block) lies beyond the block map (\(blockMap.entries.count) entries)",
                                        file: file.path, field: "block map")
            }
            switch blockMap.block(Int(block)) {
            case .free: return .absent
            case .zero: return .zero
            case let .data(host): return .data(host)
            }
        }
    }

    // MARK: Info

    static func makeInfo(file: ReadOnlyFile, header: VDIHeader, blockMap: VDIBlockMap,
                         parentReference: ImageReference?) -> ImageInfo {
        var fields: [(String, InfoValue)] = [
            ("version", .string("\(header.majorVersion).\(header.minorVersion)")),
            ("image-type", .string(header.imageType?.name ?? "\(header.imageTypeValue)")),
        ]
        if let headerSize = header.headerSize { fields.append(("header-size", .unsigned(UInt64(headerSize)))) }
        fields += [
            ("flags", .unsigned(UInt64(header.flags))),
            ("block-size", .unsigned(UInt64(header.blockSize))),
            ("block-extra", .unsigned(UInt64(header.blockExtra))),
            ("blocks", .unsigned(UInt64(header.blockCount))),
            ("blocks-allocated", .unsigned(UInt64(header.blocksAllocated))),
            ("blocks-offset", .unsigned(header.blocksOffset)),
            ("data-offset", .unsigned(header.dataOffset)),
            ("creation-uuid", .string(header.creationUUID.description)),
            ("modification-uuid", .string(header.modificationUUID.description)),
            ("link-uuid", .string(header.linkUUID.description)),
        ]
        if let parent = header.parentModificationUUID {
            fields.append(("parent-uuid", .string(parent.description)))
        }
        if !header.comment.isEmpty { fields.append(("comment", .string(header.comment))) }
        if let lchs = header.lchsGeometry {
            fields.append(("lchs-geometry", .object([
                ("cylinders", .unsigned(UInt64(lchs.cylinders))), ("heads", .unsigned(UInt64(lchs.heads))),
                ("sectors", .unsigned(UInt64(lchs.sectors))),
            ])))
        }
        var notes: [String] = []
        if header.diskSize != header.virtualSize {
            notes.append("disk size \(header.diskSize) is not a multiple of 512; rounded down to \(header.virtualSize) as VirtualBox does")
        }
        let subformat: String
        switch header.imageType {
        case .undo? where header.hasParent: subformat = "differencing"
        case .undo?: subformat = "dynamic"
        case let type?: subformat = type.name
        case nil: subformat = "unknown"
        }
        return ImageInfo(format: .vdi, filename: file.path, virtualSize: header.virtualSize, subformat: subformat,
                         clusterSize: UInt64(header.blockSize), dirty: false,
                         backingFilename: parentReference?.resolvedPath,
                         references: parentReference.map { [$0] } ?? [],
                         producer: header.fileInfo.isEmpty ? nil : header.fileInfo,
                         formatSpecific: .object(fields), notes: notes, actualSize: file.allocatedSize)
    }
}
