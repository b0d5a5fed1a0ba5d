/// A VMware virtual disk: a descriptor (a standalone text file, or the text embedded in a hosted sparse file) and
/// the extents it lists, laid end to end. A delta disk (`parentFileNameHint`) is returned as a `ChainedBlockDevice`
/// over its parent.
///
/// Supported: createType monolithicSparse, monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat,
/// streamOptimized, vmfs, vmfsThin, vmfsPreallocated, vmfsEagerZeroedThick, vmfsSparse, seSparse and custom; extents
/// FLAT, VMFS, SPARSE (KDMV or COWD), VMFSSPARSE, SESPARSE, ZERO (and NOACCESS, read as zeros). See FORMATS.md, "VMDK".
final class VMDKImage: MappedDevice {
    /// One extent placed in the guest.
    struct Piece: Sendable {
        /// Guest offset of the extent's first byte.
        let start: UInt64
        /// The opened extent.
        let reader: any VMDKExtentReader
        /// The file name the descriptor gives it (nil for the image file itself, or an extent without a file).
        let name: String?
    }

    /// The sum of the extents' sizes.
    let virtualSize: UInt64
    /// createType, CIDs, extents, producer hints (see `InfoBuilder`).
    let info: ImageInfo
    /// The descriptor's content ID (`CID`), which a child's `parentCID` must match.
    let cid: UInt32?
    /// The descriptor, as parsed.
    let descriptor: VMDKDescriptor
    let pieces: [Piece]
    let hostFileNames: HostFileNames

    init(file: ReadOnlyFile, virtualSize: UInt64, info: ImageInfo, descriptor: VMDKDescriptor, pieces: [Piece]) {
        self.virtualSize = virtualSize
        self.info = info
        self.cid = descriptor.cid
        self.descriptor = descriptor
        self.pieces = pieces
        var files: [(file: any HostFile, reference: String)] = [(file, "")]
        for piece in pieces {
            if let extentFile = piece.reader.file { files.append((extentFile, piece.name ?? "")) }
        }
        hostFileNames = HostFileNames(root: file.path, files: files)
    }

    // MARK: Mapping

    /// The run at guest `offset` inside the extent holding it; the driver merges runs across extents.
    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        let index = pieceIndex(for: offset)
        let piece = pieces[index]
        let pieceEnd = index + 1 < pieces.count ? pieces[index + 1].start : virtualSize
        return try piece.reader.mapping(at: offset - piece.start, upTo: min(end, pieceEnd) - piece.start)
    }

    /// Index of the piece holding guest `offset` (< virtualSize).
    private func pieceIndex(for offset: UInt64) -> Int {
        var low = 0
        var high = pieces.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if pieces[middle].start <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    // MARK: Opening

    /// Registry entry point: opens a descriptor file or a hosted sparse file with an embedded descriptor, its
    /// extents and its parent chain.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let head = try file.readBytes(count: Int(min(file.size, UInt64(VMDKSparseHeader.size))), at: 0, what: "header")
        let parts: Parts
        switch VMDKFileKind(head) {
        case .hostedSparse:
            parts = try openHostedSparse(file, head: head, context: context)
        case .cowd:
            throw extentWithoutDescriptor(file, kind: "COWD (vmfsSparse)")
        case .seSparse:
            throw extentWithoutDescriptor(file, kind: "seSparse")
        case .text:
            parts = try openDescriptorFile(file, context: context)
        }
        let parent = try openParent(parts.descriptor, file: file, context: context)
        var reference: ImageReference?
        if let hint = parts.descriptor.parentFileNameHint, !hint.isEmpty {
            reference = ImageReference(kind: .parent, name: hint, resolvedPath: parent?.info.filename, opened: parent != nil)
        }
        let image = VMDKImage(file: file, virtualSize: parts.virtualSize,
                              info: parts.builder.build(virtualSize: parts.virtualSize, parent: reference),
                              descriptor: parts.descriptor, pieces: parts.pieces)
        guard let parent, let hint = parts.descriptor.parentFileNameHint else { return image }
        return try ChainedBlockDevice(top: image, opened: parent, reference: hint)
    }

    /// A disk's descriptor and opened extents, before the parent is attached.
    struct Parts {
        var descriptor: VMDKDescriptor
        var pieces: [Piece]
        var virtualSize: UInt64
        var builder: InfoBuilder
    }

    /// The error for an extent file opened on its own. Rule (FORMATS.md, "VMDK"): a file is a disk only with a
    /// descriptor. A hosted sparse file whose header has no descriptor (or an empty descriptor area, as qemu writes
    /// in split pieces) is one slice of a split or snapshot disk, and COWD and seSparse files are always extents of
    /// a descriptor: opened alone they would give a disk of the wrong size or a delta without its parent.
    static func extentWithoutDescriptor(_ file: ReadOnlyFile, kind: String) -> KDCTError {
        var hint = ""
        let name = FilePaths.lastComponent(of: file.path)
        if let stem = splitStem(of: name) {
            let candidate = FilePaths.join(FilePaths.directory(of: file.path), stem + ".vmdk")
            if FilePaths.isRegularFile(candidate) { hint = " (probably \(stem).vmdk)" }
        }
        return KDCTError(.invalidFormat,
                         "extent without descriptor: this \(kind) file is one extent of a VMware disk and has no descriptor of its own; open the descriptor .vmdk that lists it\(hint)",
                         file: file.path, field: "descriptor")
    }

    /// `disk` for VMware's extent names `disk-s001.vmdk`, `disk-f001.vmdk`, `disk-flat.vmdk`, `disk-delta.vmdk`,
    /// `disk-sesparse.vmdk`.
    static func splitStem(of name: String) -> String? {
        guard name.lowercased().hasSuffix(".vmdk") else { return nil }
        let base = String(name.dropLast(5))
        guard let dash = base.lastIndex(of: "-") else { return nil }
        let suffix = base[base.index(after: dash)...]
        let isSlice = suffix.count == 4 && (suffix.first == "s" || suffix.first == "f") && suffix.dropFirst().allSatisfy(\.isNumber)
        guard isSlice || ["flat", "delta", "sesparse"].contains(suffix) else { return nil }
        return String(base[..<dash])
    }

    /// A hosted sparse file opened directly: its embedded descriptor gives createType, CID and parent; the file
    /// itself is the only extent (the descriptor's extent line is not followed, as in qemu and VMware).
    static func openHostedSparse(_ file: ReadOnlyFile, head: [UInt8], context: OpenContext) throws -> Parts {
        let limits = context.limits
        let header = try VMDKSparseHeader.decode(head)
        guard header.capacity <= UInt64.max / 512 else {
            throw KDCTError(.corrupt, "capacity \(header.capacity) sectors overflows a byte count", file: file.path, field: "capacity")
        }
        guard let text = try embeddedDescriptor(file, header: header, limits: limits) else {
            throw extentWithoutDescriptor(file, kind: "hosted sparse (KDMV)")
        }
        var descriptor = try VMDKDescriptor.parse(text, limits: limits, file: file.path)
        let extent = try openHostedSparseExtent(file, header: header, byteCount: nil, guestBase: 0,
                                                budget: VMDKTableBudget(limits: limits, sparseExtents: 1))
        if descriptor.createType == nil { descriptor.createType = extent.isCompressed ? "streamOptimized" : "monolithicSparse" }
        let createType = descriptor.createType ?? "monolithicSparse"
        if context.options.untrusted, createType != "monolithicSparse", createType != "streamOptimized" {
            throw KDCTError(.unsupported, "strict mode accepts VMDK only as monolithicSparse or streamOptimized, not \(createType)",
                            file: file.path, field: "createType")
        }
        var builder = InfoBuilder(file: file, descriptor: descriptor)
        builder.addSparse(extent, header: header, name: FilePaths.lastComponent(of: file.path),
                          access: descriptor.extents.first?.access.rawValue ?? "RW", type: "SPARSE", file: nil)
        return Parts(descriptor: descriptor, pieces: [Piece(start: 0, reader: extent, name: nil)], virtualSize: extent.byteCount,
                     builder: builder)
    }

    /// The embedded descriptor's bytes, or nil when the header has none or its area is blank (qemu's split pieces
    /// reserve 20 sectors and leave them zero).
    static func embeddedDescriptor(_ file: ReadOnlyFile, header: VMDKSparseHeader, limits: ImageLimits) throws -> [UInt8]? {
        guard header.descriptorSize > 0 else { return nil }
        // Bounds first: a descriptor that does not fit in the file is corruption, whatever its size.
        let fileSectors = file.size / 512
        guard header.descriptorOffset > 0, header.descriptorOffset <= fileSectors,
              header.descriptorSize <= fileSectors - header.descriptorOffset else {
            throw KDCTError(.corrupt,
                            "the embedded descriptor (\(header.descriptorSize) sectors at sector \(header.descriptorOffset)) lies outside the file (\(fileSectors) sectors)",
                            file: file.path, field: "descriptorOffset")
        }
        guard header.descriptorSize <= limits.maxDescriptorBytes / 512 else {
            throw KDCTError.limit("embedded descriptor size", value: header.descriptorSize.multipliedReportingOverflow(by: 512).partialValue,
                                  limit: limits.maxDescriptorBytes, file: file.path)
        }
        let bytes = try file.readBytes(count: Int(header.descriptorSize * 512), at: header.descriptorOffset * 512,
                                       what: "embedded descriptor")
        let used = bytes.prefix { $0 != 0 }
        if used.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return nil }
        return Array(used)
    }

    /// Opens the grain map of a hosted sparse file whose first sector decoded to `header`; a streamOptimized file
    /// with its grain directory at the end has its footer read and used in place of the header (as qemu does).
    /// `byteCount` is the descriptor's extent size (nil: the header's capacity).
    static func openHostedSparseExtent(_ file: ReadOnlyFile, header: VMDKSparseHeader, byteCount: UInt64?,
                                       guestBase: UInt64, budget: VMDKTableBudget) throws -> VMDKSparseExtent {
        let limits = budget.limits
        var effective = header
        if header.grainDirectoryInFooter {
            let end = file.size / 512 * 512
            guard end >= UInt64(VMDKSparseHeader.size + VMDKStreamMarkers.trailerSize) else {
                throw KDCTError(.truncated, "the grain directory is in the footer but the file is too short to hold one",
                                file: file.path, field: "footer")
            }
            let trailer = try file.readBytes(count: VMDKStreamMarkers.trailerSize,
                                             at: end - UInt64(VMDKStreamMarkers.trailerSize), what: "streamOptimized footer")
            effective = try VMDKStreamMarkers.footer(fromTrailer: trailer, file: file.path)
        }
        let layout = try effective.layout(fileSize: file.size, limits: limits, file: file.path)
        let count = byteCount ?? layout.capacityBytes
        if count > layout.capacityBytes {
            throw KDCTError(.corrupt, "the descriptor gives the extent \(count / 512) sectors but its header holds \(effective.capacity)",
                            file: file.path, field: "capacity")
        }
        return try VMDKSparseExtent(file: file, layout: layout,
                                    encoding: .hosted(zeroedGrainEntries: effective.hasZeroedGrainEntries,
                                                      compressed: effective.isCompressed),
                                    hasMarkers: effective.hasMarkers, byteCount: count, guestBase: guestBase,
                                    budget: budget)
    }

    /// createType values this reader accepts in a descriptor file.
    static let knownCreateTypes: Set<String> = [
        "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized",
        "vmfs", "vmfsThin", "vmfsPreallocated", "vmfsEagerZeroedThick", "vmfsSparse", "seSparse", "custom",
    ]
    /// createType values naming physical or raw devices, which cannot be converted from files.
    static let deviceCreateTypes: Set<String> = [
        "vmfsRaw", "vmfsRawDeviceMap", "vmfsPassthroughRawDeviceMap", "fullDevice", "partitionedDevice",
    ]

    /// A standalone descriptor: parse it, then open each extent under the reference policy.
    static func openDescriptorFile(_ file: ReadOnlyFile, context: OpenContext) throws -> Parts {
        let limits = context.limits
        if file.size > limits.maxDescriptorBytes {
            throw KDCTError.limit("descriptor size", value: file.size, limit: limits.maxDescriptorBytes, file: file.path)
        }
        let text = try file.readBytes(count: Int(file.size), at: 0, what: "descriptor")
        let descriptor = try VMDKDescriptor.parse(text, limits: limits, file: file.path)
        guard let createType = descriptor.createType else {
            throw KDCTError(.corrupt, "the descriptor has no createType", file: file.path, field: "createType")
        }
        if deviceCreateTypes.contains(createType) {
            throw KDCTError(.unsupported, "createType \(createType) maps a physical or raw device, which cannot be read from files",
                            file: file.path, field: "createType")
        }
        guard knownCreateTypes.contains(createType) else {
            throw KDCTError(.unsupported, "unknown createType \"\(createType.prefix(60))\"", file: file.path, field: "createType")
        }
        if context.options.untrusted {
            throw KDCTError(.unsupported,
                            "strict mode accepts VMDK only as a single monolithicSparse or streamOptimized file, not a \(createType) descriptor",
                            file: file.path, field: "createType")
        }
        guard !descriptor.extents.isEmpty else {
            throw KDCTError(.corrupt, "the descriptor lists no extent", file: file.path, field: "extents")
        }
        // Total size first: refuse an impossible disk before opening anything.
        var total: UInt64 = 0
        for line in descriptor.extents {
            let (bytes, overflow1) = line.sectors.multipliedReportingOverflow(by: 512)
            let (sum, overflow2) = total.addingReportingOverflow(bytes)
            if overflow1 || overflow2 {
                throw KDCTError(.corrupt, "the extents add up to more than 2^64 bytes (line \(line.lineNumber))",
                                file: file.path, field: "extent line \(line.lineNumber)")
            }
            total = sum
            try ImageLimits.check("virtual size", total, max: limits.maxVirtualSize, file: file.path)
        }
        let sparseTypes: Set<VMDKDescriptor.ExtentType> = [.sparse, .vmfsSparse, .seSparse]
        let budget = VMDKTableBudget(limits: limits, sparseExtents: descriptor.extents.filter {
            sparseTypes.contains($0.type) && $0.access != .noAccess
        }.count)
        var builder = InfoBuilder(file: file, descriptor: descriptor)
        var pieces: [Piece] = []
        var start: UInt64 = 0
        for line in descriptor.extents {
            let byteCount = line.sectors * 512
            let reader = try openExtent(line, byteCount: byteCount, guestBase: start, descriptorFile: file,
                                        context: context, budget: budget, builder: &builder)
            pieces.append(Piece(start: start, reader: reader, name: line.fileName))
            start += byteCount
        }
        return Parts(descriptor: descriptor, pieces: pieces, virtualSize: total, builder: builder)
    }

    /// Opens the extent of one descriptor line.
    static func openExtent(_ line: VMDKDescriptor.ExtentLine, byteCount: UInt64, guestBase: UInt64,
                           descriptorFile: ReadOnlyFile, context: OpenContext,
                           budget: VMDKTableBudget, builder: inout InfoBuilder) throws -> any VMDKExtentReader {
        let where_ = "extent line \(line.lineNumber)"
        guard let name = line.fileName else {
            builder.addPlain(line, file: nil)
            return VMDKZeroExtent(byteCount: byteCount)
        }
        if line.access == .noAccess {
            // NOACCESS: the range is not readable by the guest; it reads as zeros and its file is not opened.
            builder.addReference(name, resolved: nil, opened: false)
            builder.addPlain(line, file: nil)
            return VMDKZeroExtent(byteCount: byteCount)
        }
        if line.type == .vmfsRDM || line.type == .vmfsRaw {
            throw KDCTError(.unsupported, "\(where_) is a raw device mapping (\(line.type.rawValue) \"\(name)\"), which cannot be read from a file",
                            file: descriptorFile.path, field: where_)
        }
        guard let extentFile = try context.openComponentFile(name, from: descriptorFile.path) else {
            builder.addReference(name, resolved: nil, opened: false)
            builder.addPlain(line, file: nil)
            return VMDKUnopenedExtent(byteCount: byteCount, name: name)
        }
        builder.addReference(name, resolved: extentFile.path, opened: true)
        do {
            return try openExtentFile(extentFile, line: line, name: name, byteCount: byteCount, guestBase: guestBase,
                                      descriptorPath: descriptorFile.path, limits: context.limits, budget: budget,
                                      builder: &builder)
        } catch let error as KDCTError {
            throw error.inFile(extentFile.path)
        }
    }

    /// Opens `file`, named `name` by descriptor line `line`, as the extent type the line says.
    static func openExtentFile(_ file: ReadOnlyFile, line: VMDKDescriptor.ExtentLine, name: String, byteCount: UInt64,
                               guestBase: UInt64, descriptorPath: String, limits: ImageLimits, budget: VMDKTableBudget,
                               builder: inout InfoBuilder) throws -> any VMDKExtentReader {
        let where_ = "extent line \(line.lineNumber)"
        switch line.type {
        case .flat, .vmfs:
            let (offset, overflow) = line.offset.multipliedReportingOverflow(by: 512)
            if overflow {
                throw KDCTError(.corrupt, "\(where_): offset \(line.offset) sectors overflows", file: descriptorPath, field: where_)
            }
            let flat = try VMDKFlatExtent(file: file, startOffset: offset, byteCount: byteCount,
                                          lineNumber: line.lineNumber, descriptorPath: descriptorPath)
            builder.addPlain(line, file: file)
            return flat
        case .sparse, .vmfsSparse:
            let head = try file.readBytes(count: Int(min(file.size, UInt64(VMDKCOWDHeader.size))), at: 0,
                                          what: "sparse extent header")
            switch VMDKFileKind(head) {
            case .hostedSparse:
                let header = try VMDKSparseHeader.decode(Array(head.prefix(VMDKSparseHeader.size)))
                let extent = try openHostedSparseExtent(file, header: header, byteCount: byteCount, guestBase: guestBase,
                                                        budget: budget)
                builder.addSparse(extent, header: header, name: name, access: line.access.rawValue,
                                  type: line.type.rawValue, file: file)
                return extent
            case .cowd:
                let header = try VMDKCOWDHeader.decode(head)
                let layout = try header.layout(fileSize: file.size, limits: limits, file: file.path)
                try checkCapacity(layout, byteCount: byteCount, file: file)
                let extent = try VMDKSparseExtent(file: file, layout: layout, encoding: .cowd, hasMarkers: false,
                                                  byteCount: byteCount, guestBase: guestBase, budget: budget)
                builder.addCOWD(extent, header: header, name: name, line: line, file: file)
                return extent
            default:
                throw KDCTError(.corrupt, "\(where_) names \"\(name)\" as \(line.type.rawValue) but it is not a sparse (KDMV or COWD) file",
                                file: descriptorPath, field: where_)
            }
        case .seSparse:
            guard VMDKFileKind(Array(try file.readBytes(count: Int(min(file.size, 8)), at: 0, what: "seSparse header"))) == .seSparse else {
                throw KDCTError(.corrupt, "\(where_) names \"\(name)\" as SESPARSE but it is not a seSparse file",
                                file: descriptorPath, field: where_)
            }
            let extent = try openSESparseExtent(file, byteCount: byteCount, guestBase: guestBase, budget: budget)
            builder.addSESparse(extent, name: name, line: line, file: file)
            return extent
        case .zero, .vmfsRDM, .vmfsRaw:
            throw KDCTError(.corrupt, "\(where_): unexpected file for \(line.type.rawValue)", file: descriptorPath, field: where_)
        }
    }

    /// The sparse header must cover the descriptor's extent size.
    static func checkCapacity(_ layout: VMDKSparseLayout, byteCount: UInt64, file: ReadOnlyFile) throws {
        if byteCount > layout.capacityBytes {
            throw KDCTError(.corrupt,
                            "the descriptor gives the extent \(byteCount / 512) sectors but its header holds \(layout.capacityBytes / 512)",
                            file: file.path, field: "capacity")
        }
    }

    /// Opens a seSparse extent: constant header, volatile header (no journal to replay), grain directory.
    static func openSESparseExtent(_ file: ReadOnlyFile, byteCount: UInt64, guestBase: UInt64,
                                   budget: VMDKTableBudget) throws -> VMDKSparseExtent {
        let limits = budget.limits
        let header = try VMDKSESparseHeader.decode(try file.readBytes(count: 512, at: 0, what: "seSparse constant header"),
                                                   file: file.path)
        let fileSectors = file.size / 512
        guard header.volatileHeaderOffset > 0, header.volatileHeaderOffset < fileSectors else {
            throw KDCTError(.corrupt, "the seSparse volatile header (sector \(header.volatileHeaderOffset)) lies outside the file",
                            file: file.path, field: "volatile_header_offset")
        }
        try VMDKSESparseHeader.checkVolatileHeader(
            try file.readBytes(count: 512, at: header.volatileHeaderOffset * 512, what: "seSparse volatile header"),
            file: file.path)
        let layout = try header.layout(fileSize: file.size, limits: limits, file: file.path)
        try checkCapacity(layout, byteCount: byteCount, file: file)
        guard header.grainTablesOffset > 0, header.grainTablesOffset <= fileSectors,
              header.grainsOffset > 0, header.grainsOffset <= fileSectors else {
            throw KDCTError(.corrupt, "the seSparse grain table area (sector \(header.grainTablesOffset)) or grain area (sector \(header.grainsOffset)) lies outside the file",
                            file: file.path, field: "grain_tables_offset")
        }
        let tablesOffset = header.grainTablesOffset * 512
        let tablesBytes = min(header.grainTablesSize, fileSectors) * 512
        return try VMDKSparseExtent(file: file, layout: layout,
                                    encoding: .seSparse(grainTablesOffset: tablesOffset, grainTablesBytes: tablesBytes,
                                                        grainsOffset: header.grainsOffset * 512),
                                    hasMarkers: false, byteCount: byteCount, guestBase: guestBase, budget: budget)
    }

    // MARK: Delta chains

    /// Opens the parent named by `parentFileNameHint` (under the reference policy, as VMDK) and checks that its
    /// CID is the child's `parentCID`: a parent written after the snapshot was taken no longer holds the data the
    /// child's unallocated grains stand for. Nil when there is no parent or references are only reported.
    static func openParent(_ descriptor: VMDKDescriptor, file: ReadOnlyFile, context: OpenContext) throws -> (any BlockDevice)? {
        guard let hint = descriptor.parentFileNameHint, !hint.isEmpty else {
            if let parentCID = descriptor.parentCID, parentCID != VMDKDescriptor.noParentCID {
                throw KDCTError(.corrupt,
                                "the descriptor says this is a delta disk (parentCID=\(hex(parentCID))) but names no parent (parentFileNameHint missing)",
                                file: file.path, field: "parentFileNameHint")
            }
            return nil
        }
        guard let parent = try context.openReference(hint, kind: .parent, from: file.path, format: .vmdk) else {
            return nil
        }
        guard let parentCID = cid(of: parent) else {
            throw KDCTError(.corrupt, "parent \"\(hint)\" has no CID to check against parentCID", file: file.path, field: "parentCID")
        }
        guard descriptor.parentCID == parentCID else {
            let expected = descriptor.parentCID.map(hex) ?? "missing"
            throw KDCTError(.corrupt,
                            "parent CID mismatch: this delta disk expects parentCID=\(expected) but parent \"\(hint)\" has CID=\(hex(parentCID)); the parent was modified after the snapshot was taken",
                            file: file.path, field: "parentCID")
        }
        return parent
    }

    /// The CID of an opened VMDK disk (the top of a chain).
    static func cid(of device: any BlockDevice) -> UInt32? {
        if let image = device as? VMDKImage { return image.cid }
        if let chain = device as? ChainedBlockDevice { return cid(of: chain.top) }
        return nil
    }

    /// 8-digit lower-case hex, as VMware writes CIDs.
    static func hex(_ value: UInt32) -> String { String(value, radix: 16).leftPadded(to: 8) }
}

/// What the first bytes of a `.vmdk` file are.
enum VMDKFileKind: Equatable {
    case hostedSparse
    case cowd
    case seSparse
    case text

    init(_ head: [UInt8]) {
        if head.count >= 4, Array(head[0..<4]) == VMDKSparseHeader.magic {
            self = .hostedSparse
        } else if head.count >= 4, Array(head[0..<4]) == VMDKCOWDHeader.magic {
            self = .cowd
        } else if head.count >= 8, (try? ByteReader(head, structure: "header").u64le(0)) == VMDKSESparseHeader.constMagic {
            self = .seSparse
        } else {
            self = .text
        }
    }
}
