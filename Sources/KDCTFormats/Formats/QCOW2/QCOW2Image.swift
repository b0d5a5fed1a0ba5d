/// A QCOW2 image (versions 2 and 3), read-only: the active layer, with zero clusters, compressed clusters
/// (deflate and zstd), extended L2 subclusters and a backing chain. Encrypted images and external data files are
/// refused at open.
///
/// The L1 table is read at open; L2 tables are read on demand through the shared `TwoLevelTable`. Every mapping is
/// checked (reserved bits, alignment, end of file) before it is used, so a damaged table is an error naming the L2
/// entry and the guest offset, never zeros.
final class QCOW2Image: MappedDevice {
    /// The image file.
    let file: ReadOnlyFile
    /// The decoded header.
    let header: QCOW2Header
    /// The backing file name, if the image has one.
    let backingFileName: String?
    /// Internal snapshots (listed only).
    let snapshots: [QCOW2Snapshot]
    let info: ImageInfo
    let hostFileNames: HostFileNames
    private let tables: TwoLevelTable
    private let clusterBits: UInt64

    /// Registry entry point: opens the image and, when it has a backing file, the chain below it.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let head = try QCOW2Header.readFirstCluster(of: file)
        let header = try QCOW2Header.decode(head, fileSize: file.size, limits: context.limits)
        guard let backing = try header.backingFileName(from: head) else {
            return try QCOW2Image(file: file, header: header, backingFileName: nil, limits: context.limits)
        }
        let declared = header.backingFormat.flatMap { ImageFormat(name: $0) }
        if header.backingFormat != nil && declared == nil {
            throw KDCTError.unsupported("backing file format \"\(header.backingFormat ?? "")\" is not supported",
                                        file: file.path, field: "backing format")
        }
        guard let base = try context.openReference(backing, kind: .backingFile, from: file.path, format: declared) else {
            return try QCOW2Image(file: file, header: header, backingFileName: backing, limits: context.limits)
        }
        let top = try QCOW2Image(file: file, header: header, backingFileName: backing, limits: context.limits,
                                 backingOpened: true)
        return try ChainedBlockDevice(top: top, opened: base, reference: backing)
    }

    /// Opens `file` as a QCOW2 image (without its backing file).
    convenience init(file: ReadOnlyFile, limits: ImageLimits = ImageLimits()) throws {
        let head = try QCOW2Header.readFirstCluster(of: file)
        let header = try QCOW2Header.decode(head, fileSize: file.size, limits: limits)
        try self.init(file: file, header: header, backingFileName: try header.backingFileName(from: head), limits: limits)
    }

    /// Reads the L1 and snapshot tables of `file`, whose validated header is `header`.
    init(file: ReadOnlyFile, header: QCOW2Header, backingFileName: String?, limits: ImageLimits,
         backingOpened: Bool = false) throws {
        self.file = file
        self.header = header
        self.backingFileName = backingFileName
        clusterBits = UInt64(header.clusterBits)
        snapshots = try Self.readSnapshots(file: file, header: header)
        tables = try Self.openTables(file: file, header: header, limits: limits)
        let references = backingFileName.map { [ImageReference(kind: .backingFile, name: $0, opened: backingOpened)] } ?? []
        info = Self.makeInfo(file: file, header: header, snapshots: snapshots, backingFileName: backingFileName,
                             references: references)
        hostFileNames = HostFileNames(file)
    }

    private static func readSnapshots(file: ReadOnlyFile, header: QCOW2Header) throws -> [QCOW2Snapshot] {
        guard header.snapshotCount > 0 else { return [] }
        let length = QCOW2Snapshot.tableReadLength(count: Int(header.snapshotCount), fileSize: file.size,
                                                   offset: header.snapshotsOffset)
        let bytes = try file.readBytes(count: length, at: header.snapshotsOffset, what: "qcow2 snapshot table")
        return try QCOW2Snapshot.decodeTable(bytes, count: Int(header.snapshotCount))
    }

    /// The L1 table (read now) and the L2 lookup through it. L1 entries are checked when used, so `info` (which
    /// reads no L2 table) describes an image whose tables are damaged.
    private static func openTables(file: ReadOnlyFile, header: QCOW2Header, limits: ImageLimits) throws -> TwoLevelTable {
        var l1: [UInt64] = []
        if header.l1Size > 0 {
            let bytes = try file.readBytes(count: Int(header.l1Size) * 8, at: header.l1TableOffset, what: "qcow2 L1 table")
            l1 = TableDecoding.uint64BigEndian(bytes)
        }
        let layout = TwoLevelTable.Layout(unitBytes: header.clusterSize, entriesPerTable: header.l2Entries,
                                          entryBytes: Int(header.l2EntrySize), byteOrder: .bigEndian,
                                          tableName: "qcow2 L2 table", directoryName: "L1 table")
        let (path, fileSize, clusterSize) = (file.path, file.size, header.clusterSize)
        return TwoLevelTable(file: file, layout: layout, directory: l1, cacheBytes: limits.maxTableCacheBytes) { entry, index in
            if entry & QCOW2Entry.l1ReservedMask != 0 {
                throw KDCTError.corrupt("L1 entry \(index) (0x\(String(entry, radix: 16))) has reserved bits 0x\(String(entry & QCOW2Entry.l1ReservedMask, radix: 16)) set",
                                        file: path, field: "L1 entry \(index)")
            }
            let offset = entry & QCOW2Entry.offsetMask
            guard offset != 0 else { return nil }
            if offset % clusterSize != 0 {
                throw KDCTError.corrupt("L1 entry \(index) points to an unaligned L2 table at 0x\(String(offset, radix: 16))",
                                        file: path, field: "L1 entry \(index)")
            }
            if offset > fileSize || clusterSize > fileSize - offset {
                throw KDCTError.corrupt("L1 entry \(index) points to an L2 table at 0x\(String(offset, radix: 16)) past the end of the file (\(fileSize) bytes)",
                                        file: path, field: "L1 entry \(index)")
            }
            return offset
        }
    }

    var virtualSize: UInt64 { header.size }

    private static func makeInfo(file: ReadOnlyFile, header: QCOW2Header, snapshots: [QCOW2Snapshot],
                                 backingFileName: String?, references: [ImageReference]) -> ImageInfo {
        var specific: [(String, InfoValue)] = [
            ("compat", .string(header.version == 3 ? "1.1" : "0.10")),
            ("compression-type", .string(header.compressionType == .zstd ? "zstd" : "zlib")),
        ]
        if header.version == 3 {
            specific.append(("lazy-refcounts", .bool(header.compatibleFeatures & 1 != 0)))
            specific.append(("refcount-bits", .unsigned(1 << UInt64(header.refcountOrder))))
            specific.append(("corrupt", .bool(header.incompatibleFeatures & QCOW2Header.IncompatibleFeature.corrupt != 0)))
            specific.append(("extended-l2", .bool(header.extendedL2)))
        }
        if header.hasBitmaps { specific.append(("bitmaps", .bool(true))) }
        if !snapshots.isEmpty {
            specific.append(("snapshots", .array(snapshots.map {
                .object([("id", .string($0.id)), ("name", .string($0.name)),
                         ("vm-state-size", .unsigned($0.vmStateSize)), ("date-sec", .unsigned(UInt64($0.dateSeconds)))])
            })))
        }
        var notes: [String] = []
        if !snapshots.isEmpty { notes.append("\(snapshots.count) internal snapshot(s); the active layer is read") }
        if header.incompatibleFeatures & QCOW2Header.IncompatibleFeature.corrupt != 0 {
            notes.append("qemu marked this image corrupt; it is read as is")
        }
        return ImageInfo(format: .qcow2, filename: file.path, virtualSize: header.size,
                         subformat: header.version == 3 ? "v3" : "v2", clusterSize: header.clusterSize,
                         dirty: header.isDirty, backingFilename: backingFileName, backingFormat: header.backingFormat,
                         references: references, formatSpecific: .object(specific), notes: notes,
                         actualSize: file.allocatedSize)
    }

    // MARK: Mapping

    func mapping(at offset: UInt64, upTo end: UInt64) throws -> MappedRun {
        try tables.mapping(at: offset, upTo: end) { entry, unit in try mapping(entry, unit, offset: offset) }
    }

    /// The run an allocated L2 entry maps from guest `offset`: to the end of the cluster, or of the run of
    /// subclusters in the same state.
    private func mapping(_ entry: TwoLevelTable.Entry, _ unit: TwoLevelTable.Unit, offset: UInt64) throws -> MappedRun {
        let (clusterStart, within) = (unit.start, unit.within)
        let location = QCOW2Entry.Location(file: file.path, table: entry.table, index: entry.index, guestOffset: offset)
        let decoded: QCOW2ClusterMapping
        var runEnd = offset + unit.length
        var inMapping = within
        if header.extendedL2 {
            let subclusterBytes = header.clusterSize / 32
            let first = Int(within / subclusterBytes)
            let subclusters = try QCOW2Entry.decodeSubclusters(entry.raw, bitmap: entry.bitmap, from: first,
                                                               header: header, at: location)
            decoded = subclusters.mapping
            runEnd = min(runEnd, clusterStart + UInt64(first + subclusters.count) * subclusterBytes)
            // Subcluster host offsets are those of the subcluster's start; a compressed cluster has none.
            if case .compressed = decoded {} else { inMapping = within % subclusterBytes }
        } else {
            decoded = try QCOW2Entry.decodeStandard(entry.raw, header: header, at: location)
        }
        return try mappedRun(decoded, offset: offset, length: runEnd - offset, inMapping: inMapping, location: location)
    }

    /// The run of `length` bytes at guest `offset`, `inMapping` bytes into what `mapping` describes.
    private func mappedRun(_ mapping: QCOW2ClusterMapping, offset: UInt64, length: UInt64, inMapping: UInt64,
                     location: QCOW2Entry.Location) throws -> MappedRun {
        switch mapping {
        case .unallocated:
            return .absent(length)
        case let .zero(host):
            return MappedRun(length: length, mapping: .zero(host.map { HostLocation(file: file, offset: $0 + inMapping) }))
        case let .data(host):
            guard host < file.size else {
                throw location.corrupt("data cluster at 0x\(String(host, radix: 16)) lies past the end of the file (\(file.size) bytes)")
            }
            return .data(length, file, host + inMapping)
        case let .compressed(host, size):
            guard host < file.size else {
                throw location.corrupt("compressed cluster at 0x\(String(host, radix: 16)) lies past the end of the file (\(file.size) bytes)")
            }
            let cluster = offset >> clusterBits
            let unit = CompressedUnit(file: file, hostOffset: host, framing: .bounded(size),
                                      codec: header.compressionType == .zstd ? .zstd : .deflate,
                                      unitBytes: Int(header.clusterSize), shortUnitBytes: nil, within: Int(inMapping),
                                      label: .cluster(index: cluster, guestOffset: cluster << clusterBits))
            return MappedRun(length: length, mapping: .compressed(unit))
        }
    }
}
