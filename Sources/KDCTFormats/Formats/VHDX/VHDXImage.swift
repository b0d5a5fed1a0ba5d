/// A Hyper-V VHDX ([MS-VHDX]): fixed, dynamic or differencing, 512 or 4096-byte logical sectors.
///
/// Opening follows [MS-VHDX]: file identifier, the current of the two headers, log replay (in memory: the file
/// is never written), region table, metadata, BAT. Guest ranges map through the BAT; partially present blocks of
/// a differencing disk consult the sector bitmap (cached per block, bounded). A differencing disk is opened with
/// its parent as a `ChainedBlockDevice`.
public final class VHDXImage: BlockDevice {
    /// The file with any replayed log laid over it.
    public let view: VHDXFileView
    /// The current header.
    public let header: VHDXHeader
    /// Block size, sector sizes, size, flags.
    public let parameters: VHDXDiskParameters
    /// Chunk ratio and BAT layout.
    public let geometry: VHDXBATGeometry
    /// The parent locator of a differencing disk.
    public let parentLocator: VHDXParentLocator?
    /// What the image says about itself, built at open.
    public let info: ImageInfo
    /// Guest size: the virtual disk size metadata item.
    public var virtualSize: UInt64 { parameters.virtualDiskSize }

    /// Raw BAT entries.
    let bat: [UInt64]
    let blockShift: UInt64
    let presenceCache: BoundedCache<UInt64, BlockPresence>

    private init(view: VHDXFileView, header: VHDXHeader, parameters: VHDXDiskParameters, geometry: VHDXBATGeometry,
                 parentLocator: VHDXParentLocator?, bat: [UInt64], info: ImageInfo, cacheBytes: UInt64) {
        self.view = view
        self.header = header
        self.parameters = parameters
        self.geometry = geometry
        self.parentLocator = parentLocator
        self.bat = bat
        self.info = info
        self.blockShift = UInt64(parameters.blockSize.trailingZeroBitCount)
        self.presenceCache = .presenceCache(bytes: cacheBytes,
                                            bitmapBytes: Int(parameters.blockSize / parameters.logicalSectorSize / 8))
    }

    /// What a log replay did, for `info`.
    struct ReplaySummary {
        var entries: Int
        var firstSequence: UInt64
        var lastSequence: UInt64
        var writes: Int
    }

    // MARK: Opening

    /// Registry entry point.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let limits = context.limits
        let path = file.path
        let mib: UInt64 = 1 << 20
        guard file.size >= VHDXRegionTable.offsets[1] + UInt64(VHDXRegionTable.size) else {
            throw KDCTError(.truncated, "file of \(file.size) bytes is shorter than the VHDX header section", file: path)
        }
        let identifier = try VHDXFileIdentifier.decode(file.readBytes(count: VHDXFileIdentifier.size, at: 0, what: "file identifier"))
        let headers = try VHDXHeader.offsets.enumerated().map { index, offset in
            try VHDXHeader.decode(file.readBytes(count: VHDXHeader.size, at: offset, what: "header \(index + 1)"))
        }
        let current = try VHDXHeader.selectCurrent(headers, file: path)
        let header = headers[current]
        try header.validateLogFields(file: path)
        let logRange: Range<UInt64>? = header.logLength > 0 ? header.logOffset..<(header.logOffset + UInt64(header.logLength)) : nil
        var notes: [String] = []

        // Log replay, in memory ([MS-VHDX] 2.3.3), before reading anything the log may update.
        var view = VHDXFileView(file: file)
        var replay: ReplaySummary?
        if !header.logGUID.isZero, let logRange {
            try ImageLimits.check("log length", UInt64(header.logLength), max: limits.maxTableBytes, file: path)
            guard logRange.upperBound <= file.size else {
                throw KDCTError(.truncated, "the log at file offset \(logRange.lowerBound) (\(header.logLength) bytes) lies past the end of the file (\(file.size) bytes)",
                                file: path, field: "header log offset")
            }
            let log = try file.readBytes(count: Int(header.logLength), at: header.logOffset, what: "log")
            if let sequence = try VHDXLog.activeSequence(in: log, logGUID: header.logGUID, maxEntries: limits.maxLogEntries),
               let head = sequence.last, let tail = sequence.first {
                guard head.flushedFileOffset <= file.size else {
                    throw KDCTError(.truncated, "the log says the file was at least \(head.flushedFileOffset) bytes long, it is \(file.size): the file was truncated",
                                    file: path, field: "log flushed file offset")
                }
                let writes = sequence.flatMap(\.writes)
                let overlay = VHDXLogOverlay(writes: writes)
                view = VHDXFileView(file: file, overlay: overlay, size: max(head.lastFileOffset, overlay.highest))
                replay = ReplaySummary(entries: sequence.count, firstSequence: tail.sequenceNumber,
                                       lastSequence: head.sequenceNumber, writes: writes.count)
                notes.append("log replayed: \(sequence.count) \(sequence.count == 1 ? "entry" : "entries") (sequence numbers \(tail.sequenceNumber)-\(head.sequenceNumber), \(writes.count) writes), in memory; the file was not modified")
            } else {
                notes.append("the header names log \(header.logGUID) but the log holds no valid entry sequence for it; nothing was replayed")
            }
        }

        // Region table: the first copy, else the second.
        var regions: VHDXRegionTable?
        var firstError: KDCTError?
        for (index, offset) in VHDXRegionTable.offsets.enumerated() {
            do {
                regions = try VHDXRegionTable.decode(view.readBytes(count: VHDXRegionTable.size, at: offset, what: "region table"),
                                                     logRange: logRange, file: path)
                if index == 1 { notes.append("the first region table is damaged (\(firstError?.message ?? "")); the copy was used") }
                break
            } catch let error as KDCTError where error.code == .checksum || error.code == .corrupt {
                if firstError == nil { firstError = error }
            }
        }
        guard let regions else { throw firstError ?? KDCTError.corrupt("no region table", file: path) }

        // Metadata.
        let metadataRegion = regions.metadata
        let table = try VHDXMetadataTable.decode(
            view.readBytes(count: VHDXMetadataTable.size, at: metadataRegion.fileOffset, what: "metadata table"),
            regionLength: metadataRegion.length, file: path)
        func item(_ id: VHDXGUID, _ name: String, minimum: Int) throws -> [UInt8]? {
            guard let entry = table.item(id) else { return nil }
            guard Int(entry.length) >= minimum else {
                throw KDCTError.corrupt("metadata item \(name) is \(entry.length) bytes, at least \(minimum) needed",
                                        file: path, field: name)
            }
            return try view.readBytes(count: Int(entry.length), at: metadataRegion.fileOffset + UInt64(entry.offset),
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
        var locator: VHDXParentLocator?
        if parameters.hasParent {
            guard let bytes = try item(.parentLocator, "parent locator", minimum: 20) else {
                throw KDCTError.corrupt("the file parameters say the disk has a parent but there is no parent locator",
                                        file: path, field: "parent locator")
            }
            let decoded = try VHDXParentLocator.decode(bytes, file: path)
            guard decoded.locatorType == VHDXGUID.vhdxParentLocatorType else {
                throw KDCTError.unsupported("parent locator type \(decoded.locatorType) (only VHDX parents are defined)",
                                            file: path, field: "parent locator type")
            }
            locator = decoded
        }

        // BAT.
        let geometry = VHDXBATGeometry(parameters)
        let (batBytes, batOverflow) = geometry.totalEntries.multipliedReportingOverflow(by: 8)
        guard !batOverflow else { throw KDCTError.corrupt("BAT size overflows", file: path, field: "BAT") }
        try ImageLimits.check("BAT size", batBytes, max: limits.maxTableBytes, file: path)
        guard batBytes <= UInt64(regions.bat.length) else {
            throw KDCTError.corrupt("the BAT region is \(regions.bat.length) bytes, \(batBytes) needed for \(geometry.totalEntries) entries",
                                    file: path, field: "BAT region length")
        }
        let batData = try view.readBytes(count: Int(batBytes), at: regions.bat.fileOffset, what: "BAT")
        var reserved: [Range<UInt64>] = [0..<mib] + regions.entries.map(\.range)
        if let logRange { reserved.append(logRange) }
        let bat = try VHDXBlockAllocationTable.decode(batData, geometry: geometry, differencing: parameters.hasParent,
                                                      virtualSize: parameters.virtualDiskSize, fileSize: view.size,
                                                      reserved: reserved, file: path)

        func makeImage(references: [ImageReference], backing: String?, notes: [String]) -> VHDXImage {
            let info = makeInfo(view: view, identifier: identifier, header: header, currentHeader: current,
                                parameters: parameters, geometry: geometry, locator: locator, replay: replay,
                                references: references, backingName: backing, notes: notes)
            return VHDXImage(view: view, header: header, parameters: parameters, geometry: geometry,
                             parentLocator: locator, bat: bat.entries, info: info, cacheBytes: limits.maxTableCacheBytes)
        }
        guard let locator else { return makeImage(references: [], backing: nil, notes: notes) }

        // Differencing: find the parent ([MS-VHDX] 2.6.2.6.3: relative, volume, then absolute path).
        let keys = ["relative_path", "volume_path", "absolute_win32_path"]
        let names = keys.compactMap { key in locator.value(key).map { (source: key, stored: $0, isPOSIX: false) } }
        var references = names.map { ImageReference(kind: .parent, name: $0.stored) }
        let parentName = names.first.map { WindowsPath.convert($0.stored).fileName } ?? ""
        guard context.options.openReferences else {
            return makeImage(references: references, backing: names.first?.stored, notes: notes)
        }
        let linkages = ["parent_linkage", "parent_linkage2"].compactMap { locator.value($0).flatMap(VHDXGUID.init) }
            .filter { !$0.isZero }
        let logical = parameters.logicalSectorSize
        let found = try ParentFinder.open(ParentCandidate.list(names), parentName: parentName, imagePath: path,
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
        if found.device.virtualSize != parameters.virtualDiskSize {
            notes.append("the parent's virtual size (\(found.device.virtualSize)) differs from the child's (\(parameters.virtualDiskSize))")
        }
        let child = makeImage(references: references, backing: names.first?.stored, notes: notes)
        return ChainedBlockDevice(top: child, base: found.device)
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

    /// Sector presence of partially present block `block`, from its chunk's sector bitmap block.
    func presence(ofBlock block: UInt64) throws -> BlockPresence {
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

    /// Status, file offset (for data) and end of the run starting at `offset` within its block.
    @inline(__always)
    func blockRun(at offset: UInt64, end: UInt64) throws -> BlockRun {
        let block = offset >> blockShift
        let blockStart = block << blockShift
        let blockEnd = min(end, blockStart + UInt64(parameters.blockSize))
        let entry = VHDXBATEntry(raw: bat[geometry.payloadIndex(block)])
        let inBlock = offset - blockStart
        switch VHDXPayloadState(rawValue: entry.state) {
        case .notPresent?, .undefined?:
            return BlockRun(status: .absent, end: blockEnd)
        case .zero?, .unmapped?:
            return BlockRun(status: .zero, end: blockEnd)
        case .fullyPresent?:
            return BlockRun(status: .data, host: entry.fileOffset + inBlock, end: blockEnd)
        case .partiallyPresent?:
            switch try presence(ofBlock: block) {
            case .all: return BlockRun(status: .data, host: entry.fileOffset + inBlock, end: blockEnd)
            case .none: return BlockRun(status: .absent, end: blockEnd)
            case let .some(bitmap):
                let sectorSize = geometry.logicalSectorSize
                let sector = Int(inBlock / sectorSize)
                let run = SectorBitmap.run(in: bitmap, from: sector, to: Int(geometry.sectorsPerBlock), order: .leastSignificantFirst)
                let runEnd = min(blockEnd, blockStart + UInt64(sector + run.count) * sectorSize)
                return run.set ? BlockRun(status: .data, host: entry.fileOffset + inBlock, end: runEnd)
                    : BlockRun(status: .absent, end: runEnd)
            }
        case nil:
            throw KDCTError.corrupt("payload block \(block) has undefined state \(entry.state)", file: view.file.path,
                                    field: "BAT entry \(geometry.payloadIndex(block))")
        }
    }

    /// The run at `offset` from the block table (and sector bitmaps), never reading guest data.
    public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        guard offset < virtualSize, maxLength > 0 else {
            throw KDCTError(.invalidArgument, "extent at guest offset \(offset) (length \(maxLength)) outside the virtual size \(virtualSize)",
                            file: info.filename)
        }
        let end = maxLength >= virtualSize - offset ? virtualSize : offset + maxLength
        return try BlockRuns.extent(at: offset, to: end) { try blockRun(at: $0, end: end) }
    }

    /// Guest bytes at `offset`: stored runs read straight into `buffer`, the rest zeros.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        try BlockRuns.read(into: buffer, at: offset, run: { try blockRun(at: $0, end: $1) }) { slice, host, guest in
            try view.read(into: slice, at: host, what: "data of block \(guest >> blockShift)")
        }
    }
}
