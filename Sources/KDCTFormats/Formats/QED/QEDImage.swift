/// A QED image (QEMU Enhanced Disk): L1/L2 tables of `table_size` clusters, zero clusters, an optional backing
/// file (raw when the "backing format no probe" feature says so).
///
/// Read-only use never repairs: an image with the need-check flag set (not closed cleanly) is opened and read
/// as it is, as qemu does for read-only opens, and `info` reports it as dirty. Every offset taken from the
/// tables is checked (cluster-aligned, after the header, inside the file) before it is used.
public final class QEDImage: BlockDevice {
    /// The image file.
    public let file: ReadOnlyFile
    /// The decoded header.
    public let header: QEDHeader
    public let virtualSize: UInt64
    public let info: ImageInfo
    private let tables: TwoLevelTable
    private let clusterBits: UInt64
    private let clusterSize: UInt64

    /// Reads and validates the header and L1 table of `file`. `backingReference` describes the backing file for
    /// `info` (the caller opens it).
    public convenience init(file: ReadOnlyFile, limits: ImageLimits, backingReference: ImageReference? = nil) throws {
        try self.init(file: file, header: try QEDImage.readHeader(file, limits: limits), limits: limits,
                      backingReference: backingReference)
    }

    /// Reads and validates the L1 table of `file`, whose validated header is `header`.
    init(file: ReadOnlyFile, header: QEDHeader, limits: ImageLimits, backingReference: ImageReference?) throws {
        self.file = file
        self.header = header
        clusterSize = UInt64(header.clusterSize)
        clusterBits = UInt64(header.clusterSize.trailingZeroBitCount)
        virtualSize = header.imageSize
        let l1Bytes = try file.readBytes(count: Int(header.tableBytes), at: header.l1TableOffset, what: "QED L1 table")
        let l1Table = TableDecoding.uint64LittleEndian(l1Bytes)
        for (index, l2Offset) in l1Table.enumerated() where l2Offset != 0 {
            try QEDImage.checkTableOffset(l2Offset, header: header, fileSize: file.size, what: "L1 entry \(index)", path: file.path)
        }
        let cache = TableChunkCache(file: file, tableBytes: Int(header.tableBytes), cacheBytes: limits.maxTableCacheBytes,
                                    byteOrder: .littleEndian, tableName: "QED L2 table")
        tables = TwoLevelTable(l1Table: l1Table, l2Cache: cache, clusterBits: clusterBits,
                               l2Bits: UInt64(header.tableEntries.trailingZeroBitCount))
        info = QEDImage.makeInfo(file: file, header: header, backingReference: backingReference)
    }

    static func readHeader(_ file: ReadOnlyFile, limits: ImageLimits) throws -> QEDHeader {
        let bytes = try file.readBytes(count: Int(min(UInt64(QEDHeader.size), file.size)), at: 0, what: "QED header")
        let header = try QEDHeader.decode(bytes)
        try header.validate(fileSize: file.size, limits: limits)
        return header
    }

    /// An L2 table offset must be cluster-aligned, after the header, with the whole table inside the file.
    static func checkTableOffset(_ offset: UInt64, header: QEDHeader, fileSize: UInt64, what: String, path: String) throws {
        if offset % UInt64(header.clusterSize) != 0 || offset < header.headerBytes {
            throw KDCTError.corrupt("\(what) points to an L2 table at offset \(offset), not a cluster-aligned offset after the header",
                                    file: path, field: what)
        }
        if offset > fileSize || header.tableBytes > fileSize - offset {
            throw KDCTError.corrupt("\(what) points to an L2 table at offset \(offset), past the end of the file (\(fileSize) bytes)",
                                    file: path, field: what)
        }
    }

    /// The backing file name, or nil when the image has none.
    static func backingName(_ file: ReadOnlyFile, header: QEDHeader) throws -> String? {
        guard header.hasBackingFile, header.backingFilenameSize > 0 else { return nil }
        let bytes = try file.readBytes(count: Int(header.backingFilenameSize), at: UInt64(header.backingFilenameOffset),
                                       what: "backing file name")
        let name = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }

    /// Registry entry point: the image alone, or a chain over its backing file (opened under the reference
    /// policy, as raw when the header says so, probed otherwise).
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let header = try readHeader(file, limits: context.limits)
        guard let name = try backingName(file, header: header) else {
            return try QEDImage(file: file, header: header, limits: context.limits, backingReference: nil)
        }
        guard let path = try context.resolveReference(name, kind: .backingFile, from: file.path) else {
            return try QEDImage(file: file, header: header, limits: context.limits,
                                backingReference: ImageReference(kind: .backingFile, name: name))
        }
        let top = try QEDImage(file: file, header: header, limits: context.limits,
                               backingReference: ImageReference(kind: .backingFile, name: name, resolvedPath: path, opened: true))
        let base = try context.openResolved(path, kind: .backingFile, from: file.path,
                                            format: header.backingIsRaw ? .raw : nil)
        return ChainedBlockDevice(top: top, base: base)
    }

    // MARK: Mapping

    /// The decoded entry if its offset is valid, else `corrupt` naming the entry.
    private func checked(_ raw: UInt64, _ location: TwoLevelTable.Location) throws -> QEDClusterEntry {
        let entry = QEDClusterEntry(raw: raw)
        guard case let .data(offset) = entry else { return entry }
        let what = "L2 entry \(location.index) of the table at offset \(location.l2Offset) (cluster \(location.cluster), guest offset \(location.cluster << clusterBits))"
        // The low bits of an offset are reserved and must be zero; cluster alignment covers them.
        if offset % clusterSize != 0 || offset < header.headerBytes {
            throw KDCTError.corrupt("\(what) is \(offset), not a cluster-aligned offset after the header",
                                    file: file.path, field: "L2 entry")
        }
        if offset > file.size || clusterSize > file.size - offset {
            throw KDCTError.corrupt("\(what) points to offset \(offset), past the end of the file (\(file.size) bytes)",
                                    file: file.path, field: "L2 entry")
        }
        return entry
    }

    private func entry(_ cluster: UInt64) throws -> QEDClusterEntry {
        guard let (raw, location) = try tables.rawEntry(cluster) else { return .unallocated }
        return try checked(raw, location)
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        guard offset < virtualSize, maxLength > 0 else {
            throw KDCTError(.invalidArgument, "extent at \(offset) outside the disk (\(virtualSize) bytes)", file: file.path)
        }
        let end = virtualSize - offset > maxLength ? offset + maxLength : virtualSize
        var run: ClusterRun?
        try tables.walk(from: offset, to: end) { raw, location, position, length in
            guard let raw else { return ClusterRun.extend(&run, status: .absent, at: position, length: length) }
            switch try checked(raw, location) {
            case .unallocated:
                return ClusterRun.extend(&run, status: .absent, at: position, length: length)
            case .zero:
                return ClusterRun.extend(&run, status: .zero, at: position, length: length)
            case let .data(host):
                return ClusterRun.extend(&run, status: .data, host: host + (position & (clusterSize - 1)),
                                         at: position, length: length)
            }
        }
        guard let run else { throw KDCTError.corrupt("no mapping for guest offset \(offset)", file: file.path) }
        return run.extent
    }

    // MARK: Reading

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        var done = 0
        while done < buffer.count {
            let guest = offset + UInt64(done)
            let cluster = guest >> clusterBits
            let within = guest & (clusterSize - 1)
            var count = Int(min(clusterSize - within, UInt64(buffer.count - done)))
            switch try entry(cluster) {
            case .unallocated, .zero:
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                    .initializeMemory(as: UInt8.self, repeating: 0)
            case let .data(host):
                var next = cluster + 1
                var expected = host + clusterSize
                while done + count < buffer.count, case let .data(nextHost) = try entry(next), nextHost == expected {
                    count += Int(min(clusterSize, UInt64(buffer.count - done - count)))
                    next += 1
                    expected += clusterSize
                }
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)]),
                              at: host + within, what: "QED cluster \(cluster)")
            }
            done += count
        }
    }

    // MARK: Info

    static func makeInfo(file: ReadOnlyFile, header: QEDHeader, backingReference: ImageReference?) -> ImageInfo {
        let fields: [(String, InfoValue)] = [
            ("cluster-size", .unsigned(UInt64(header.clusterSize))),
            ("table-size", .unsigned(UInt64(header.tableSize))),
            ("header-size", .unsigned(UInt64(header.headerSize))),
            ("features", .unsigned(header.features)),
            ("compat-features", .unsigned(header.compatFeatures)),
            ("autoclear-features", .unsigned(header.autoclearFeatures)),
            ("l1-table-offset", .unsigned(header.l1TableOffset)),
            ("need-check", .bool(header.needsCheck)),
            ("backing-is-raw", .bool(header.backingIsRaw)),
        ]
        var notes: [String] = []
        if header.needsCheck {
            notes.append("need-check flag set: the image was not closed cleanly; read as it is, never repaired")
        }
        if header.compatFeatures != 0 {
            notes.append("unknown compatible feature bits 0x\(String(header.compatFeatures, radix: 16)) ignored")
        }
        if header.autoclearFeatures != 0 {
            notes.append("unknown autoclear feature bits 0x\(String(header.autoclearFeatures, radix: 16)) ignored (a read-only reader does not clear them)")
        }
        if header.backingIsRaw && !header.hasBackingFile {
            notes.append("the backing-is-raw feature is set without a backing file")
        }
        return ImageInfo(format: .qed, filename: file.path, virtualSize: header.imageSize,
                         clusterSize: UInt64(header.clusterSize), dirty: header.needsCheck,
                         backingFilename: backingReference?.name,
                         backingFormat: header.hasBackingFile && header.backingIsRaw ? "raw" : nil,
                         references: backingReference.map { [$0] } ?? [],
                         formatSpecific: .object(fields), notes: notes, actualSize: file.allocatedSize)
    }
}
