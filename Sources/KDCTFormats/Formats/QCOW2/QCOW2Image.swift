/// A QCOW2 image (versions 2 and 3), read-only: the active layer, with zero clusters, compressed clusters
/// (deflate and zstd), extended L2 subclusters and a backing chain. Encrypted images and external data files are
/// refused at open.
///
/// The L1 table is read at open; L2 tables are read on demand into a bounded cache. Every mapping is checked
/// (alignment, end of file) before it is used, so a damaged table is an error naming the guest offset, never zeros.
public final class QCOW2Image: BlockDevice {
    /// The image file.
    public let file: ReadOnlyFile
    /// The decoded header.
    public let header: QCOW2Header
    /// The backing file name, if the image has one.
    public let backingFileName: String?
    /// Internal snapshots (listed only).
    public let snapshots: [QCOW2Snapshot]
    private let l1: [UInt64]
    private let l2Cache: BoundedCache<UInt64, [UInt64]>
    private let references: [ImageReference]

    /// Registry entry point: opens the image and, when it has a backing file, the chain below it.
    @Sendable static func open(_ file: ReadOnlyFile, _ context: OpenContext) throws -> any BlockDevice {
        let image = try QCOW2Image(file: file, limits: context.limits)
        guard let backing = image.backingFileName else { return image }
        let declared = image.header.backingFormat.flatMap { ImageFormat(name: $0) }
        if image.header.backingFormat != nil && declared == nil {
            throw KDCTError.unsupported("backing file format \"\(image.header.backingFormat ?? "")\" is not supported",
                                        file: file.path, field: "backing format")
        }
        guard let base = try context.openReference(backing, kind: .backingFile, from: file.path, format: declared) else {
            return image
        }
        let opened = QCOW2Image(image, referenceOpened: true)
        return ChainedBlockDevice(top: opened, base: base)
    }

    /// Opens `file` as a QCOW2 image (without its backing file).
    public init(file: ReadOnlyFile, limits: ImageLimits = ImageLimits()) throws {
        self.file = file
        let headBytes = try QCOW2Header.readFirstCluster(of: file)
        let header = try QCOW2Header.decode(headBytes, fileSize: file.size, limits: limits)
        self.header = header
        backingFileName = try header.backingFileName(from: headBytes)
        l1 = try Self.readL1(file: file, header: header)
        if header.snapshotCount > 0 {
            let length = QCOW2Snapshot.tableReadLength(count: Int(header.snapshotCount), fileSize: file.size,
                                                       offset: header.snapshotsOffset)
            let bytes = try file.readBytes(count: length, at: header.snapshotsOffset, what: "qcow2 snapshot table")
            snapshots = try QCOW2Snapshot.decodeTable(bytes, count: Int(header.snapshotCount))
        } else {
            snapshots = []
        }
        let cacheEntries = max(16, Int(limits.maxTableCacheBytes / header.clusterSize))
        l2Cache = BoundedCache(capacity: cacheEntries)
        references = backingFileName.map { [ImageReference(kind: .backingFile, name: $0)] } ?? []
    }

    private init(_ other: QCOW2Image, referenceOpened: Bool) {
        file = other.file
        header = other.header
        backingFileName = other.backingFileName
        snapshots = other.snapshots
        l1 = other.l1
        l2Cache = other.l2Cache
        references = other.references.map {
            var reference = $0
            reference.opened = referenceOpened
            return reference
        }
    }

    private static func readL1(file: ReadOnlyFile, header: QCOW2Header) throws -> [UInt64] {
        guard header.l1Size > 0 else { return [] }
        let bytes = try file.readBytes(count: Int(header.l1Size) * 8, at: header.l1TableOffset, what: "qcow2 L1 table")
        return TableDecoding.uint64BigEndian(bytes)
    }

    public var virtualSize: UInt64 { header.size }

    public var info: ImageInfo {
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

    /// A run of guest bytes with one mapping, inside one L2 table.
    private struct Run {
        var length: UInt64
        var mapping: QCOW2ClusterMapping
    }

    private var bytesPerL2: UInt64 { header.clusterSize * header.l2Entries }

    /// The L2 table (decoded entries; interleaved entry/bitmap pairs with extended L2) for L1 index `index`,
    /// or nil when unallocated.
    private func l2Table(_ index: Int) throws -> [UInt64]? {
        guard index < l1.count else { return nil }
        let entry = l1[index]
        if entry & QCOW2Entry.l1ReservedMask != 0 {
            throw KDCTError.corrupt("L1 entry \(index) (0x\(String(entry, radix: 16))) has reserved bits 0x\(String(entry & QCOW2Entry.l1ReservedMask, radix: 16)) set",
                                    file: file.path, field: "L1 entry \(index)")
        }
        let offset = entry & QCOW2Entry.offsetMask
        guard offset != 0 else { return nil }
        if offset % header.clusterSize != 0 {
            throw KDCTError.corrupt("L1 entry \(index) points to an unaligned L2 table at 0x\(String(offset, radix: 16))",
                                    file: file.path, field: "L1 entry \(index)")
        }
        let (end, overflow) = offset.addingReportingOverflow(header.clusterSize)
        if overflow || end > file.size {
            throw KDCTError.corrupt("L1 entry \(index) points to an L2 table at 0x\(String(offset, radix: 16)) past the end of the file (\(file.size) bytes)",
                                    file: file.path, field: "L1 entry \(index)")
        }
        return try l2Cache.value(for: offset) {
            let bytes = try file.readBytes(count: Int(header.clusterSize), at: offset, what: "qcow2 L2 table \(index)")
            return TableDecoding.uint64BigEndian(bytes)
        }
    }

    /// The mapping of the run starting at guest `offset` (< `end`), at most to the end of its L2 table.
    /// Uncompressed data runs are merged while host offsets are contiguous; each compressed cluster is its own run.
    private func run(at offset: UInt64, end: UInt64) throws -> Run {
        let l1Index = Int(offset / bytesPerL2)
        let tableEnd = min(end, (UInt64(l1Index) + 1) * bytesPerL2)
        guard let table = try l2Table(l1Index) else {
            return Run(length: tableEnd - offset, mapping: .unallocated)
        }
        let unit = header.extendedL2 ? header.clusterSize / 32 : header.clusterSize
        let first = try mappingOfUnit(at: offset, table: table, l1Index: l1Index)
        var position = min(tableEnd, (offset / unit + 1) * unit)
        switch first {
        case .compressed:
            let clusterEnd = min(tableEnd, (offset / header.clusterSize + 1) * header.clusterSize)
            return Run(length: clusterEnd - offset, mapping: first)
        case let .data(host):
            var expected = host + unit
            while position < tableEnd,
                  case let .data(next) = try mappingOfUnit(at: position, table: table, l1Index: l1Index), next == expected {
                expected += unit
                position = min(tableEnd, position + unit)
            }
            return Run(length: position - offset, mapping: .data(host: host + offset % unit))
        case .zero, .unallocated:
            while position < tableEnd, try mappingOfUnit(at: position, table: table, l1Index: l1Index) == first {
                position = min(tableEnd, position + unit)
            }
            return Run(length: position - offset, mapping: first)
        }
    }

    private func mappingOfUnit(at position: UInt64, table: [UInt64], l1Index: Int) throws -> QCOW2ClusterMapping {
        let clusterIndex = Int((position % bytesPerL2) / header.clusterSize)
        do {
            let mapping: QCOW2ClusterMapping
            if header.extendedL2 {
                let sub = Int((position % header.clusterSize) / (header.clusterSize / 32))
                mapping = try QCOW2Entry.decodeSubcluster(table[clusterIndex * 2], bitmap: table[clusterIndex * 2 + 1],
                                                          index: sub, header: header)
            } else {
                mapping = try QCOW2Entry.decodeStandard(table[clusterIndex], header: header)
            }
            switch mapping {
            case let .data(host) where host >= file.size:
                throw KDCTError.corrupt("data cluster at 0x\(String(host, radix: 16)) lies past the end of the file (\(file.size) bytes)",
                                        field: "L2 entry")
            case let .compressed(host, _) where host >= file.size:
                throw KDCTError.corrupt("compressed cluster at 0x\(String(host, radix: 16)) lies past the end of the file (\(file.size) bytes)",
                                        field: "L2 entry")
            default:
                return mapping
            }
        } catch var error as KDCTError {
            error.file = file.path
            error.field = "L2 table \(l1Index) entry \(clusterIndex)"
            error.message += " at guest offset \(position)"
            throw error
        }
    }

    public func extent(at offset: UInt64, maxLength: UInt64) throws -> Extent {
        let end = min(virtualSize, offset + maxLength)
        var result: Extent?
        var position = offset
        while position < end {
            let run = try self.run(at: position, end: end)
            let next = Self.extent(of: run, at: position)
            if var current = result {
                guard current.canMerge(with: next) else { break }
                current.length += next.length
                result = current
            } else {
                result = next
            }
            position += run.length
        }
        return result ?? Extent(offset: offset, length: end - offset, status: .absent)
    }

    private static func extent(of run: Run, at offset: UInt64) -> Extent {
        switch run.mapping {
        case .unallocated: return Extent(offset: offset, length: run.length, status: .absent)
        case .zero: return Extent(offset: offset, length: run.length, status: .zero)
        case let .data(host): return Extent(offset: offset, length: run.length, status: .data, hostOffset: host)
        case .compressed: return Extent(offset: offset, length: run.length, status: .data, compressed: true)
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try checkRange(offset, buffer.count)
        let end = offset + UInt64(buffer.count)
        var position = offset
        while position < end {
            let run = try self.run(at: position, end: end)
            let start = Int(position - offset)
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + Int(run.length))])
            switch run.mapping {
            case .unallocated, .zero:
                slice.initializeMemory(as: UInt8.self, repeating: 0)
            case let .data(host):
                try file.read(into: slice, at: host, what: "data cluster for guest offset \(position)")
            case let .compressed(host, size):
                try readCompressed(into: slice, guestOffset: position, host: host, size: size)
            }
            position += run.length
        }
    }

    private static let scratchPool = ObjectPool<ScratchBuffers>(maxKept: 64) { ScratchBuffers() }

    /// Inflates the compressed cluster holding `guestOffset` and copies the requested part into `slice`.
    private func readCompressed(into slice: UnsafeMutableRawBufferPointer, guestOffset: UInt64, host: UInt64,
                                size: UInt64) throws {
        let clusterSize = Int(header.clusterSize)
        let within = Int(guestOffset % header.clusterSize)
        let available = min(size, file.size - host)
        try Self.scratchPool.with { scratch in
            let input = scratch.input(Int(available))
            let got = try file.readAvailable(into: input, at: host)
            let whole = within == 0 && slice.count == clusterSize
            let output = whole ? slice : scratch.output(clusterSize)
            let ok = try ClusterDecompression.decompress(header.compressionType,
                                                         UnsafeRawBufferPointer(rebasing: input[0..<got]), into: output)
            guard ok else {
                throw KDCTError.corrupt("compressed cluster at host offset 0x\(String(host, radix: 16)) (\(size) bytes) does not inflate to exactly \(clusterSize) bytes",
                                        file: file.path, field: "compressed cluster for guest offset \(guestOffset - UInt64(within))")
            }
            if !whole {
                slice.copyMemory(from: UnsafeRawBufferPointer(rebasing: output[within..<(within + slice.count)]))
            }
        }
    }
}

/// Reusable input/output buffers for decompressing clusters, grown on demand.
final class ScratchBuffers: @unchecked Sendable {
    private var inputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)
    private var outputBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 0, alignment: 64)

    deinit {
        inputBuffer.deallocate()
        outputBuffer.deallocate()
    }

    /// A buffer of at least `count` bytes for compressed input.
    func input(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if inputBuffer.count < count {
            inputBuffer.deallocate()
            inputBuffer = .allocate(byteCount: count, alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: inputBuffer[0..<count])
    }

    /// A buffer of exactly `count` bytes for decompressed output.
    func output(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if outputBuffer.count < count {
            outputBuffer.deallocate()
            outputBuffer = .allocate(byteCount: count, alignment: 64)
        }
        return UnsafeMutableRawBufferPointer(rebasing: outputBuffer[0..<count])
    }
}
