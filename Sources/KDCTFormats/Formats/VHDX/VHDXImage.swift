/// A Hyper-V VHDX ([MS-VHDX]): fixed, dynamic or differencing, 512 or 4096-byte logical sectors.
///
/// Opening follows [MS-VHDX]: file identifier, the current of the two headers, log replay (in memory: the file
/// is never written), region table, metadata, BAT. Guest ranges map through the BAT; partially present blocks of
/// a differencing disk consult the sector bitmap (cached per block, bounded). A differencing disk is opened with
/// its parent as a `ChainedBlockDevice`.
final class VHDXImage: MappedDevice {
    /// The file with any replayed log laid over it.
    let view: VHDXFileView
    /// The current header.
    let header: VHDXHeader
    /// Block size, sector sizes, size, flags.
    let parameters: VHDXDiskParameters
    /// Chunk ratio and BAT layout.
    let geometry: VHDXBATGeometry
    /// The parent locator of a differencing disk.
    let parentLocator: VHDXParentLocator?
    /// What the image says about itself, built at open.
    let info: ImageInfo
    let hostFileNames: HostFileNames
    /// Guest size: the virtual disk size metadata item.
    var virtualSize: UInt64 { parameters.virtualDiskSize }

    /// Raw BAT entries.
    let bat: [UInt64]
    private let blocks: BlockTable
    private let presenceCache: BoundedCache<UInt64, BlockPresence>

    private init(_ opened: Opened, info: ImageInfo, cacheBytes: UInt64) {
        view = opened.view
        header = opened.header
        parameters = opened.parameters
        geometry = opened.geometry
        parentLocator = opened.locator
        bat = opened.bat
        self.info = info
        hostFileNames = HostFileNames(opened.view)
        blocks = BlockTable(file: opened.view, blockShift: UInt64(opened.parameters.blockSize.trailingZeroBitCount),
                            sectorBytes: UInt64(opened.parameters.logicalSectorSize), bitOrder: .leastSignificantFirst)
        presenceCache = .presenceCache(bytes: cacheBytes,
                                       bitmapBytes: Int(opened.parameters.blockSize / opened.parameters.logicalSectorSize / 8))
    }

    /// What a log replay did, for `info`.
    struct ReplaySummary {
        var entries: Int
        var firstSequence: UInt64
        var lastSequence: UInt64
        var writes: Int
    }

    // MARK: Opening

    /// Everything read while opening, in the order [MS-VHDX] prescribes.
    private struct Opened {
        var identifier: VHDXFileIdentifier
        var header: VHDXHeader
        var currentHeader: Int
        var logRange: Range<UInt64>?
        var view: VHDXFileView
        var replay: ReplaySummary?
        var notes: [String] = []
        var parameters: VHDXDiskParameters
        var locator: VHDXParentLocator?
        var geometry: VHDXBATGeometry
        var bat: [UInt64]

        func image(references: [ImageReference], backingName: String?, cacheBytes: UInt64) -> VHDXImage {
            let info = VHDXImage.makeInfo(view: view, identifier: identifier, header: header, currentHeader: currentHeader,
                                          parameters: parameters, geometry: geometry, locator: locator, replay: replay,
                                          references: references, backingName: backingName, notes: notes)
            return VHDXImage(self, info: info, cacheBytes: cacheBytes)
        }
    }

    /// Registry entry point.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let limits = context.limits
        let (identifier, header, current) = try readHeaders(file)
        let logRange: Range<UInt64>? = header.logLength > 0 ? header.logOffset..<(header.logOffset + UInt64(header.logLength)) : nil
        var notes: [String] = []
        // The log is replayed, in memory ([MS-VHDX] 2.3.3), before anything it may update is read.
        let (view, replay) = try replayLog(file, header: header, logRange: logRange, limits: limits, notes: &notes)
        let regions = try readRegionTable(view, logRange: logRange, notes: &notes)
        let (parameters, locator) = try readMetadata(view, region: regions.metadata, limits: limits)
        let (geometry, bat) = try readBAT(view, regions: regions, parameters: parameters, logRange: logRange, limits: limits)
        let opened = Opened(identifier: identifier, header: header, currentHeader: current, logRange: logRange, view: view,
                            replay: replay, notes: notes, parameters: parameters, locator: locator, geometry: geometry,
                            bat: bat)
        guard let locator else {
            return opened.image(references: [], backingName: nil, cacheBytes: limits.maxTableCacheBytes)
        }
        return try openDifferencing(opened, locator: locator, context: context)
    }

    /// The file identifier and the current of the two headers ([MS-VHDX] 2.2).
    private static func readHeaders(_ file: ReadOnlyFile) throws -> (VHDXFileIdentifier, VHDXHeader, Int) {
        guard file.size >= VHDXRegionTable.offsets[1] + UInt64(VHDXRegionTable.size) else {
            throw KDCTError(.truncated, "file of \(file.size) bytes is shorter than the VHDX header section", file: file.path)
        }
        let identifier = try VHDXFileIdentifier.decode(file.readBytes(count: VHDXFileIdentifier.size, at: 0, what: "file identifier"))
        let headers = try VHDXHeader.offsets.enumerated().map { index, offset in
            try VHDXHeader.decode(file.readBytes(count: VHDXHeader.size, at: offset, what: "header \(index + 1)"))
        }
        let current = try VHDXHeader.selectCurrent(headers, file: file.path)
        try headers[current].validateLogFields(file: file.path)
        return (identifier, headers[current], current)
    }

    /// The file with the active log sequence, if any, replayed over it in memory.
    private static func replayLog(_ file: ReadOnlyFile, header: VHDXHeader, logRange: Range<UInt64>?, limits: ImageLimits,
                                  notes: inout [String]) throws -> (VHDXFileView, ReplaySummary?) {
        guard !header.logGUID.isZero, let logRange else { return (VHDXFileView(file: file), nil) }
        let path = file.path
        try ImageLimits.check("log length", UInt64(header.logLength), max: limits.maxTableBytes, file: path)
        guard logRange.upperBound <= file.size else {
            throw KDCTError(.truncated, "the log at file offset \(logRange.lowerBound) (\(header.logLength) bytes) lies past the end of the file (\(file.size) bytes)",
                            file: path, field: "header log offset")
        }
        let log = try file.readBytes(count: Int(header.logLength), at: header.logOffset, what: "log")
        guard let sequence = try VHDXLog.activeSequence(in: log, logGUID: header.logGUID, maxEntries: limits.maxLogEntries),
              let head = sequence.last, let tail = sequence.first else {
            notes.append("the header names log \(header.logGUID) but the log holds no valid entry sequence for it; nothing was replayed")
            return (VHDXFileView(file: file), nil)
        }
        guard head.flushedFileOffset <= file.size else {
            throw KDCTError(.truncated, "the log says the file was at least \(head.flushedFileOffset) bytes long, it is \(file.size): the file was truncated",
                            file: path, field: "log flushed file offset")
        }
        let writes = sequence.flatMap(\.writes)
        let overlay = VHDXLogOverlay(writes: writes)
        notes.append("log replayed: \(sequence.count) \(sequence.count == 1 ? "entry" : "entries") (sequence numbers \(tail.sequenceNumber)-\(head.sequenceNumber), \(writes.count) writes), in memory; the file was not modified")
        return (VHDXFileView(file: file, overlay: overlay, size: max(head.lastFileOffset, overlay.highest)),
                ReplaySummary(entries: sequence.count, firstSequence: tail.sequenceNumber, lastSequence: head.sequenceNumber,
                              writes: writes.count))
    }

    /// The region table: the first copy, else the second.
    private static func readRegionTable(_ view: VHDXFileView, logRange: Range<UInt64>?,
                                        notes: inout [String]) throws -> VHDXRegionTable {
        var firstError: KDCTError?
        for (index, offset) in VHDXRegionTable.offsets.enumerated() {
            do {
                let regions = try VHDXRegionTable.decode(view.readBytes(count: VHDXRegionTable.size, at: offset, what: "region table"),
                                                         logRange: logRange, file: view.path)
                if index == 1 { notes.append("the first region table is damaged (\(firstError?.message ?? "")); the copy was used") }
                return regions
            } catch let error as KDCTError where error.code == .checksum || error.code == .corrupt {
                if firstError == nil { firstError = error }
            }
        }
        throw firstError ?? KDCTError.corrupt("no region table", file: view.path)
    }

    /// The metadata items: disk parameters, and the parent locator of a differencing disk.
    private static func readMetadata(_ view: VHDXFileView, region: VHDXRegionTable.Entry,
                                     limits: ImageLimits) throws -> (VHDXDiskParameters, VHDXParentLocator?) {
        let path = view.path
        let table = try VHDXMetadataTable.decode(
            view.readBytes(count: VHDXMetadataTable.size, at: region.fileOffset, what: "metadata table"),
            regionLength: region.length, file: path)
        func item(_ id: VHDXGUID, _ name: String, minimum: Int) throws -> [UInt8]? {
            guard let entry = table.item(id) else { return nil }
            guard Int(entry.length) >= minimum else {
                throw KDCTError.corrupt("metadata item \(name) is \(entry.length) bytes, at least \(minimum) needed",
                                        file: path, field: name)
            }
            return try view.readBytes(count: Int(entry.length), at: region.fileOffset + UInt64(entry.offset),
                                      what: "metadata item \(name)")
        }
        func required(_ id: VHDXGUID, _ name: String, minimum: Int) throws -> [UInt8] {
            guard let bytes = try item(id, name, minimum: minimum) else {
                throw KDCTError.corrupt("required metadata item \(name) is missing", file: path, field: name)
            }
            return bytes
        }
        let parameters = try VHDXDiskParameters.decode(
            fileParameters: required(.fileParameters, "file parameters", minimum: 8),
            virtualDiskSize: required(.virtualDiskSize, "virtual disk size", minimum: 8),
            virtualDiskID: required(.virtualDiskID, "virtual disk id", minimum: 16),
            logicalSectorSize: required(.logicalSectorSize, "logical sector size", minimum: 4),
            physicalSectorSize: required(.physicalSectorSize, "physical sector size", minimum: 4), file: path)
        try ImageLimits.check("virtual disk size", parameters.virtualDiskSize, max: limits.maxVirtualSize, file: path)
        try ImageLimits.check("block size", UInt64(parameters.blockSize), max: limits.maxClusterSize, file: path)
        guard parameters.hasParent else { return (parameters, nil) }
        guard let bytes = try item(.parentLocator, "parent locator", minimum: 20) else {
            throw KDCTError.corrupt("the file parameters say the disk has a parent but there is no parent locator",
                                    file: path, field: "parent locator")
        }
        let locator = try VHDXParentLocator.decode(bytes, file: path)
        guard locator.locatorType == VHDXGUID.vhdxParentLocatorType else {
            throw KDCTError.unsupported("parent locator type \(locator.locatorType) (only VHDX parents are defined)",
                                        file: path, field: "parent locator type")
        }
        return (parameters, locator)
    }

    /// The BAT, every entry that matters checked against the file (see `VHDXBlockAllocationTable.decode`).
    private static func readBAT(_ view: VHDXFileView, regions: VHDXRegionTable, parameters: VHDXDiskParameters,
                                logRange: Range<UInt64>?, limits: ImageLimits) throws -> (VHDXBATGeometry, [UInt64]) {
        let path = view.path
        let geometry = VHDXBATGeometry(parameters)
        let (batBytes, batOverflow) = geometry.totalEntries.multipliedReportingOverflow(by: 8)
        guard !batOverflow else { throw KDCTError.corrupt("BAT size overflows", file: path, field: "BAT") }
        try ImageLimits.check("BAT size", batBytes, max: limits.maxTableBytes, file: path)
        guard batBytes <= UInt64(regions.bat.length) else {
            throw KDCTError.corrupt("the BAT region is \(regions.bat.length) bytes, \(batBytes) needed for \(geometry.totalEntries) entries",
                                    file: path, field: "BAT region length")
        }
        let batData = try view.readBytes(count: Int(batBytes), at: regions.bat.fileOffset, what: "BAT")
        var reserved: [Range<UInt64>] = [0..<(1 << 20)] + regions.entries.map(\.range)
        if let logRange { reserved.append(logRange) }
        let bat = try VHDXBlockAllocationTable.decode(batData, geometry: geometry, differencing: parameters.hasParent,
                                                      virtualSize: parameters.virtualDiskSize, fileSize: view.size,
                                                      reserved: reserved, file: path)
        return (geometry, bat.entries)
    }

    /// A differencing disk over its parent, found from the locator ([MS-VHDX] 2.6.2.6.3: relative, volume, then
    /// absolute path) and checked: same logical sector size, and a data write GUID the child was made from.
    private static func openDifferencing(_ opened: Opened, locator: VHDXParentLocator,
                                         context: OpenContext) throws -> any BlockDevice {
        var opened = opened
        let cacheBytes = context.limits.maxTableCacheBytes
        let keys = ["relative_path", "volume_path", "absolute_win32_path"]
        let names = keys.compactMap { key in locator.value(key).map { (source: key, stored: $0, isPOSIX: false) } }
        var references = names.map { ImageReference(kind: .parent, name: $0.stored) }
        let parentName = names.first.map { WindowsPath.convert($0.stored).fileName } ?? ""
        guard context.options.openReferences else {
            return opened.image(references: references, backingName: names.first?.stored, cacheBytes: cacheBytes)
        }
        let linkages = ["parent_linkage", "parent_linkage2"].compactMap { locator.value($0).flatMap(VHDXGUID.init) }
            .filter { !$0.isZero }
        let logical = opened.parameters.logicalSectorSize
        let found = try ParentFinder.open(ParentCandidate.list(names), parentName: parentName, imagePath: opened.view.path,
                                          context: context, format: .vhdx) { device in
            guard let parent = vhdxLayer(of: device) else { return "not a VHDX" }
            if parent.parameters.logicalSectorSize != logical {
                return "its logical sector size is \(parent.parameters.logicalSectorSize), the child's \(logical)"
            }
            if !linkages.isEmpty && !linkages.contains(parent.header.dataWriteGUID) {
                return "its data write GUID is \(parent.header.dataWriteGUID), the child was made from \(linkages.map(\.description).joined(separator: " or "))"
            }
            return nil
        }
        for index in references.indices where references[index].name == found.candidate.stored {
            references[index].resolvedPath = found.resolvedPath
            references[index].opened = true
        }
        if found.device.virtualSize != opened.parameters.virtualDiskSize {
            opened.notes.append("the parent's virtual size (\(found.device.virtualSize)) differs from the child's (\(opened.parameters.virtualDiskSize))")
        }
        let child = opened.image(references: references, backingName: names.first?.stored, cacheBytes: cacheBytes)
        return try ChainedBlockDevice(top: child, opened: found.device, reference: found.candidate.path ?? found.resolvedPath)
    }

    /// The VHDX layer on top of `device`, if it is one.
    static func vhdxLayer(of device: any BlockDevice) -> VHDXImage? {
        if let image = device as? VHDXImage { return image }
        if let chain = device as? ChainedBlockDevice { return chain.top as? VHDXImage }
        return nil
    }

    static func makeInfo(view: VHDXFileView, identifier: VHDXFileIdentifier, header: VHDXHeader, currentHeader: Int,
                         parameters: VHDXDiskParameters, geometry: VHDXBATGeometry, locator: VHDXParentLocator?,
                         replay: ReplaySummary?, references: [ImageReference], backingName: String?,
                         notes: [String]) -> ImageInfo {
        let subformat = parameters.hasParent ? "differencing" : parameters.leaveBlocksAllocated ? "fixed" : "dynamic"
        var fields: [(String, InfoValue)] = [
            ("creator", .string(identifier.creator)),
            ("current-header", .unsigned(UInt64(currentHeader + 1))),
            ("sequence-number", .unsigned(header.sequenceNumber)),
            ("file-write-guid", .string(header.fileWriteGUID.description)),
            ("data-write-guid", .string(header.dataWriteGUID.description)),
            ("log-guid", .string(header.logGUID.description)),
            ("log-offset", .unsigned(header.logOffset)),
            ("log-length", .unsigned(UInt64(header.logLength))),
            ("block-size", .unsigned(UInt64(parameters.blockSize))),
            ("logical-sector-size", .unsigned(UInt64(parameters.logicalSectorSize))),
            ("physical-sector-size", .unsigned(UInt64(parameters.physicalSectorSize))),
            ("virtual-disk-id", .string(parameters.virtualDiskID.description)),
            ("leave-blocks-allocated", .bool(parameters.leaveBlocksAllocated)),
            ("has-parent", .bool(parameters.hasParent)),
            ("chunk-ratio", .unsigned(geometry.chunkRatio)),
            ("bat-entries", .unsigned(geometry.totalEntries)),
        ]
        if let locator {
            fields.append(("parent-locator", .object(locator.entries.map { ($0.key, .string($0.value)) })))
        }
        if let replay {
            fields.append(("log-replay", .object([("entries", .unsigned(UInt64(replay.entries))),
                                                  ("first-sequence-number", .unsigned(replay.firstSequence)),
                                                  ("last-sequence-number", .unsigned(replay.lastSequence)),
                                                  ("writes", .unsigned(UInt64(replay.writes)))])))
        }
        return ImageInfo(format: .vhdx, filename: view.file.path, virtualSize: parameters.virtualDiskSize,
                         subformat: subformat, clusterSize: UInt64(parameters.blockSize),
                         dirty: !header.logGUID.isZero, backingFilename: backingName,
                         backingFormat: backingName == nil ? nil : "vhdx", references: references,
                         producer: identifier.creator.isEmpty ? nil : identifier.creator,
                         formatSpecific: .object(fields), notes: notes, actualSize: view.file.allocatedSize)
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try blocks.mapping(at: offset, upTo: end) { block in
            let entry = VHDXBATEntry(raw: bat[geometry.payloadIndex(block)])
            switch VHDXPayloadState(rawValue: entry.state) {
            case .notPresent?, .undefined?: return .absent
            case .zero?, .unmapped?: return .zero
            case .fullyPresent?: return .data(entry.fileOffset)
            case .partiallyPresent?: return .partial(entry.fileOffset, try presence(ofBlock: block))
            case nil:
                throw KDCTError.corrupt("payload block \(block) has undefined state \(entry.state)", file: view.path,
                                        field: "BAT entry \(geometry.payloadIndex(block))")
            }
        }
    }

    /// Sector presence of partially present block `block`, from its chunk's sector bitmap block (read once, cached).
    private func presence(ofBlock block: UInt64) throws -> BlockPresence {
        try presenceCache.value(for: block) {
            let chunk = block / geometry.chunkRatio
            let bitmapEntry = VHDXBATEntry(raw: bat[geometry.bitmapIndex(chunk: chunk)])
            let firstBit = (block % geometry.chunkRatio) * geometry.sectorsPerBlock
            let bytes = Int(geometry.sectorsPerBlock / 8)
            let bitmap = try view.readBytes(count: bytes, at: bitmapEntry.fileOffset + firstBit / 8,
                                            what: "sector bitmap of block \(block)")
            return SectorBitmap.presence(of: bitmap, bits: Int(geometry.sectorsPerBlock), order: .leastSignificantFirst)
        }
    }
}
