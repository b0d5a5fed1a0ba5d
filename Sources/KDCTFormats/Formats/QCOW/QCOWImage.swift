/// A QCOW version 1 image (qemu's original copy-on-write format): two-level L1/L2 tables, uncompressed and
/// raw-deflate compressed clusters, an optional backing file. Encrypted images are refused.
///
/// The header and L1 table are read and validated at open; L2 entries come through a bounded cache and are
/// checked when used (alignment, inside the file). A read is a table lookup, then a positional read into the
/// caller's buffer (or an inflate, for a compressed cluster).
public final class QCOWImage: BlockDevice {
    /// The image file.
    public let file: ReadOnlyFile
    /// The decoded header.
    public let header: QCOWHeader
    /// The L1 table: file offsets of the L2 tables (0: not allocated).
    public let l1Table: [UInt64]
    public let virtualSize: UInt64
    public let info: ImageInfo
    private let tables: TwoLevelTable
    private let clusterBits: UInt64
    private let clusterSize: UInt64

    /// Reads and validates the header and L1 table of `file`. `backingReference` describes the backing file
    /// for `info` (the caller opens it).
    public convenience init(file: ReadOnlyFile, limits: ImageLimits, backingReference: ImageReference? = nil) throws {
        try self.init(file: file, header: try QCOWImage.readHeader(file, limits: limits), limits: limits,
                      backingReference: backingReference)
    }

    /// Reads and validates the L1 table of `file`, whose validated header is `header`.
    init(file: ReadOnlyFile, header: QCOWHeader, limits: ImageLimits, backingReference: ImageReference?) throws {
        self.file = file
        self.header = header
        clusterBits = UInt64(header.clusterBits)
        clusterSize = header.clusterSize
        let l2Bytes = UInt64(header.l2Entries) * 8
        virtualSize = header.virtualSize
        let l1Bytes = try file.readBytes(count: Int(header.l1Entries) * 8, at: header.l1TableOffset, what: "QCOW L1 table")
        l1Table = TableDecoding.uint64BigEndian(l1Bytes)
        for (index, l2Offset) in l1Table.enumerated() where l2Offset != 0 {
            if l2Offset % header.clusterSize != 0 {
                throw KDCTError.corrupt("L1 entry \(index) points to an L2 table at offset \(l2Offset), not aligned to the cluster size \(header.clusterSize)",
                                        file: file.path, field: "L1 entry \(index)")
            }
            if l2Offset > file.size || l2Bytes > file.size - l2Offset {
                throw KDCTError.corrupt("L1 entry \(index) points to an L2 table at offset \(l2Offset), past the end of the file (\(file.size) bytes)",
                                        file: file.path, field: "L1 entry \(index)")
            }
        }
        let l2Cache = TableChunkCache(file: file, tableBytes: Int(l2Bytes), cacheBytes: limits.maxTableCacheBytes,
                                      byteOrder: .bigEndian, tableName: "QCOW L2 table")
        tables = TwoLevelTable(l1Table: l1Table, l2Cache: l2Cache, clusterBits: clusterBits, l2Bits: UInt64(header.l2Bits))
        info = QCOWImage.makeInfo(file: file, header: header, l1Table: l1Table, backingReference: backingReference)
    }

    static func readHeader(_ file: ReadOnlyFile, limits: ImageLimits) throws -> QCOWHeader {
        let bytes = try file.readBytes(count: Int(min(UInt64(QCOWHeader.size), file.size)), at: 0, what: "QCOW header")
        let header = try QCOWHeader.decode(bytes)
        try header.validate(fileSize: file.size, limits: limits)
        return header
    }

    /// The backing file name stored in the image, or nil when it has none.
    static func backingName(_ file: ReadOnlyFile, header: QCOWHeader) throws -> String? {
        guard header.backingFileOffset != 0, header.backingFileSize > 0 else { return nil }
        let bytes = try file.readBytes(count: Int(header.backingFileSize), at: header.backingFileOffset,
                                       what: "backing file name")
        let name = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        return name.isEmpty ? nil : name
    }

    /// Registry entry point: the image alone, or a chain over its backing file (opened under the reference
    /// policy; its format is probed, as QCOW v1 does not record it).
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let header = try readHeader(file, limits: context.limits)
        guard let name = try backingName(file, header: header) else {
            return try QCOWImage(file: file, header: header, limits: context.limits, backingReference: nil)
        }
        guard let path = try context.resolveReference(name, kind: .backingFile, from: file.path) else {
            return try QCOWImage(file: file, header: header, limits: context.limits,
                                 backingReference: ImageReference(kind: .backingFile, name: name))
        }
        let top = try QCOWImage(file: file, header: header, limits: context.limits,
                                backingReference: ImageReference(kind: .backingFile, name: name, resolvedPath: path, opened: true))
        let base = try context.openResolved(path, kind: .backingFile, from: file.path)
        return ChainedBlockDevice(top: top, base: base)
    }

    // MARK: Mapping

    /// The L2 entry of cluster `cluster`, checked against the file.
    private func entry(_ cluster: UInt64) throws -> QCOWClusterEntry {
        guard let (raw, location) = try tables.rawEntry(cluster) else { return .unallocated }
        return try checked(raw, location)
    }

    /// The decoded entry if its data lies inside the file (for the part of the cluster inside the guest),
    /// else `corrupt` naming the entry.
    private func checked(_ raw: UInt64, _ location: TwoLevelTable.Location) throws -> QCOWClusterEntry {
        let entry = QCOWClusterEntry(raw: raw, clusterBits: header.clusterBits)
        let fileSize = file.size
        let cluster = location.cluster
        let what = "L2 entry \(location.index) of the table at offset \(location.l2Offset) (cluster \(cluster), guest offset \(cluster << clusterBits))"
        switch entry {
        case .unallocated:
            return entry
        case let .data(offset):
            let needed = min(clusterSize, virtualSize - min(virtualSize, cluster << clusterBits))
            if offset % clusterSize != 0 {
                throw KDCTError.corrupt("\(what) points to offset \(offset), not aligned to the cluster size \(clusterSize)",
                                        file: file.path, field: "L2 entry")
            }
            if offset > fileSize || needed > fileSize - offset {
                throw KDCTError.corrupt("\(what) points to offset \(offset), past the end of the file (\(fileSize) bytes)",
                                        file: file.path, field: "L2 entry")
            }
            return entry
        case let .compressed(offset, size):
            if size == 0 {
                throw KDCTError.corrupt("\(what): compressed cluster at offset \(offset) has size 0",
                                        file: file.path, field: "L2 entry")
            }
            if offset > fileSize || UInt64(size) > fileSize - offset {
                throw KDCTError.corrupt("\(what): compressed cluster of \(size) bytes at offset \(offset) goes past the end of the file (\(fileSize) bytes)",
                                        file: file.path, field: "L2 entry")
            }
            return entry
        }
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
            case let .data(host):
                return ClusterRun.extend(&run, status: .data, host: host + (position & (clusterSize - 1)),
                                         at: position, length: length)
            case .compressed:
                return ClusterRun.extend(&run, status: .data, compressed: true, at: position, length: length)
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
            case .unallocated:
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)])
                    .initializeMemory(as: UInt8.self, repeating: 0)
            case let .data(host):
                // Extend over following clusters stored right after this one.
                var next = cluster + 1
                var expected = host + clusterSize
                while done + count < buffer.count, case let .data(nextHost) = try entry(next), nextHost == expected {
                    count += Int(min(clusterSize, UInt64(buffer.count - done - count)))
                    next += 1
                    expected += clusterSize
                }
                try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + count)]),
                              at: host + within, what: "QCOW cluster \(cluster)")
            case let .compressed(host, size):
                // qemu writes compressed clusters back to back: gather the following whole clusters stored right
                // after this one and fetch them with one read.
                var pieces = [(cluster: cluster, size: size, count: count)]
                var total = size
                var next = cluster + 1
                var end = done + count
                while buffer.count - end >= Int(clusterSize), pieces.count < 1024,
                      case let .compressed(nextHost, nextSize) = try entry(next), nextHost == host + UInt64(total) {
                    pieces.append((next, nextSize, Int(clusterSize)))
                    total += nextSize
                    end += Int(clusterSize)
                    next += 1
                }
                let compressed = try file.readBytes(count: total, at: host, what: "compressed QCOW cluster \(cluster)")
                try compressed.withUnsafeBytes { source in
                    var consumed = 0
                    var position = done
                    for (index, piece) in pieces.enumerated() {
                        let input = UnsafeRawBufferPointer(rebasing: source[consumed..<(consumed + piece.size)])
                        try inflate(input, cluster: piece.cluster, host: host + UInt64(consumed),
                                    within: index == 0 ? Int(within) : 0,
                                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + piece.count)]))
                        consumed += piece.size
                        position += piece.count
                    }
                }
                count = end - done
            }
            done += count
        }
    }

    /// Inflates compressed cluster `cluster` (its compressed bytes `input`, read from `host`) and copies
    /// `output.count` bytes from offset `within` of it; a whole-cluster read inflates straight into the caller's
    /// buffer.
    private func inflate(_ input: UnsafeRawBufferPointer, cluster: UInt64, host: UInt64, within: Int,
                         into output: UnsafeMutableRawBufferPointer) throws {
        let ok: Bool
        if within == 0 && UInt64(output.count) == clusterSize {
            ok = try ClusterDecompression.inflate(input, into: output, wrapping: .raw)
        } else {
            var whole = [UInt8](repeating: 0, count: Int(clusterSize))
            ok = try whole.withUnsafeMutableBytes { try ClusterDecompression.inflate(input, into: $0, wrapping: .raw) }
            if ok {
                whole.withUnsafeBytes { output.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[within..<(within + output.count)])) }
            }
        }
        if !ok {
            throw KDCTError.corrupt("compressed cluster \(cluster) (guest offset \(cluster << clusterBits); \(input.count) bytes at offset \(host)) does not inflate to \(clusterSize) bytes",
                                    file: file.path, field: "compressed cluster")
        }
    }

    // MARK: Info

    static func makeInfo(file: ReadOnlyFile, header: QCOWHeader, l1Table: [UInt64],
                         backingReference: ImageReference?) -> ImageInfo {
        let fields: [(String, InfoValue)] = [
            ("version", .unsigned(1)),
            ("cluster-bits", .unsigned(UInt64(header.clusterBits))),
            ("l2-bits", .unsigned(UInt64(header.l2Bits))),
            ("l1-entries", .unsigned(UInt64(l1Table.count))),
            ("l1-table-offset", .unsigned(header.l1TableOffset)),
            ("encrypted", .bool(false)),
            ("mtime", .unsigned(UInt64(header.mtime))),
        ]
        var notes: [String] = []
        if header.size != header.virtualSize {
            notes.append("size \(header.size) is not a multiple of 512; the last partial sector is dropped as qemu does")
        }
        return ImageInfo(format: .qcow, filename: file.path, virtualSize: header.virtualSize,
                         clusterSize: header.clusterSize, backingFilename: backingReference?.name,
                         references: backingReference.map { [$0] } ?? [],
                         formatSpecific: .object(fields), notes: notes, actualSize: file.allocatedSize)
    }
}
