/// Grows or shrinks a QCOW2 image in place (`resize`), in the order qemu's `qcow2_co_truncate` makes crash-safe:
/// new metadata is written and flushed before the header switches to it, references are removed before the
/// refcounts they counted, so an interruption at any point leaves a consistent image, at worst with leaked
/// clusters (`check -r leaks` reclaims them).
///
/// Growing appends every new cluster after the last one in use (clusters in use are never moved or rewritten):
/// - new L2 tables and data clusters (with preallocation), a larger L1 table when the old one cannot map the new
///   size, refcount blocks for the new clusters, and a larger refcount table when the old one cannot name them;
///   written and flushed first;
/// - refcounts of the new clusters in the existing refcount blocks, then the new refcount blocks: named by the header's
///   switch to a new refcount table (one write), or entered in the table in place one by one, each after the block
///   counting it, so no block shows without its refcount: until then the new clusters are free space, after it leaks;
/// - L2 entries of preallocated clusters written into existing L2 tables (past the old end, so never read yet);
/// - the header's size, `l1_size` and `l1_table_offset`: one 24-byte write inside the first sector (bytes 24-47),
///   the switch to the new state;
/// - last, the old L1 table's and old refcount table's clusters freed (a crash before leaves them leaked).
///
/// Shrinking (`--shrink`) first switches the header to the new size (the guest no longer sees the tail), then
/// removes the L2 entries and L2 tables of the clusters past it, then lowers their refcounts, then truncates the
/// file after the last cluster in use.
///
/// Refused: a dirty (lazy refcounts) or qemu-marked-corrupt image, persistent bitmaps, internal snapshots when
/// shrinking or preallocating, a size not a multiple of 512, and growing an overlay whose backing file is larger
/// than the old size (the backing file's data would show in the new range; qemu writes zeros there).
struct QCOW2Resize {
    let path: String
    let file: WritableFile
    let image: QCOW2Image
    let header: QCOW2Header
    /// A device's size; nil for a file.
    let capacity: UInt64?
    var refcounts: QCOW2RefcountEditor

    private var clusterSize: UInt64 { header.clusterSize }

    /// Opens the image at `path` (`resolved`: symlinks followed) for resizing, after `checks` on the reader.
    init(path: String, writable file: WritableFile, image: QCOW2Image, capacity: UInt64?, limits: ImageLimits) throws {
        self.path = path
        self.file = file
        self.image = image
        header = image.header
        self.capacity = capacity
        if header.isDirty {
            throw KDCTError(.unsupported, "the image was not closed cleanly (dirty bit, lazy refcounts): its refcounts are not reliable; let qemu open it, or run qemu-img check -r all, first",
                            file: path, field: "incompatible_features")
        }
        if header.incompatibleFeatures & QCOW2Header.IncompatibleFeature.corrupt != 0 {
            throw KDCTError(.corrupt, "qemu marked this image corrupt; it is not resized", file: path,
                            field: "incompatible_features")
        }
        if header.hasBitmaps {
            throw KDCTError(.unsupported, "the image has persistent bitmaps, which resize does not rewrite; remove them first (qemu-img bitmap --remove)",
                            file: path, field: "bitmaps")
        }
        refcounts = QCOW2RefcountEditor(table: try QCOW2RefcountTable.read(from: image.file, header: header, limits: limits),
                                        file: file)
    }

    // MARK: Growing

    /// Where the appended clusters go.
    private struct GrowthPlan {
        /// First appended cluster.
        var first: UInt64
        /// New L2 tables by L1 index, and the data clusters preallocated, by guest cluster.
        var newTables: [(index: Int, cluster: UInt64)] = []
        var data: [(guest: UInt64, cluster: UInt64)] = []
        /// The new L1 table's first cluster (nil: the old table is kept).
        var l1Cluster: UInt64?
        var l1Clusters: UInt64 = 0
        /// New refcount blocks by block index, and the new refcount table (nil: the old one is kept).
        var blocks: [(index: Int, cluster: UInt64)] = []
        var tableCluster: UInt64?
        var tableClusters: UInt64 = 0
        /// Clusters appended in all.
        var count: UInt64 = 0
    }

    /// Grows the guest to `newSize` (a multiple of 512), preallocating the new range as `preallocation` says.
    mutating func grow(to newSize: UInt64, preallocation: MeasureOptions.Preallocation,
                       backingSize: UInt64?) throws {
        if let backingSize, backingSize > header.size {
            throw KDCTError(.unsupported,
                            "the backing file (\(backingSize) bytes) is larger than the image (\(header.size) bytes): its data would show in the new range; resize the backing file's overlay with qemu-img",
                            file: path, field: "backing file")
        }
        if preallocation != .off && !image.snapshots.isEmpty {
            throw KDCTError(.unsupported, "preallocation is not done in an image with internal snapshots (their L2 tables may be shared)",
                            file: path, field: "preallocation")
        }
        if preallocation != .off && capacity != nil {
            throw KDCTError(.invalidArgument, "preallocation applies to files; a device is written in place",
                            file: path, field: "preallocation")
        }
        let perTable = header.l2Entries
        let newL1Size = ((newSize + clusterSize - 1) / clusterSize + perTable - 1) / perTable
        try ImageLimits.check("l1_size * 8", newL1Size * 8, max: QCOW2Writer.maxL1Bytes, file: path)
        let toAllocate = preallocation == .off ? [] : try unallocatedClusters(from: header.size, to: newSize)
        var plan = try planGrowth(newL1Size: newL1Size, preallocate: toAllocate)
        let end = (plan.first + plan.count) * clusterSize
        if let capacity, end > capacity {
            throw KDCTError(.invalidArgument, "the device is \(capacity) bytes; the grown image's metadata needs \(end)",
                            file: path, field: "device size")
        }
        try writeNewClusters(&plan, newL1Size: newL1Size, preallocation: preallocation)
        try commitRefcounts(plan)
        try writePreallocatedEntries(plan)
        try switchHeader(size: newSize, l1Size: plan.l1Cluster == nil ? UInt64(header.l1Size) : newL1Size,
                         l1Offset: plan.l1Cluster.map { $0 * clusterSize } ?? header.l1TableOffset)
        // The replaced tables are free now: a crash before this line only leaks them.
        if plan.l1Cluster != nil && header.l1Size > 0 {
            try release(offset: header.l1TableOffset, length: UInt64(header.l1Size) * 8)
        }
        if plan.tableCluster != nil {
            try release(offset: header.refcountTableOffset, length: UInt64(header.refcountTableClusters) * clusterSize)
        }
        try refcounts.writeChangedBlocks()
        try file.sync()
    }

    /// The guest clusters in the range `[from, to)` (from the cluster holding `from`) that are not allocated.
    private func unallocatedClusters(from: UInt64, to: UInt64) throws -> [UInt64] {
        var result: [UInt64] = []
        var cluster = from / clusterSize
        let end = (to + clusterSize - 1) / clusterSize
        while cluster < end {
            let table = Int(cluster / header.l2Entries)
            guard table < image.tables.directoryCount, try image.tables.tableOffset(table) != nil else {
                let next = min(end, UInt64(table + 1) * header.l2Entries)
                result += Array(cluster..<next)
                cluster = next
                continue
            }
            switch try image.tables.lookup(unit: cluster) {
            case let .unallocated(units):
                let next = min(end, cluster + units)
                result += Array(cluster..<next)
                cluster = next
            case .entry:
                cluster += 1
            }
        }
        return result
    }

    /// Places the appended clusters: new L2 tables and data, a new L1 table, then as many refcount blocks (and a
    /// refcount table) as they all need, found as a fixed point.
    private mutating func planGrowth(newL1Size: UInt64, preallocate guestClusters: [UInt64]) throws -> GrowthPlan {
        var lastUsed = try refcounts.lastUsedCluster() ?? 0
        if capacity == nil {
            let fileClusters = (try file.length() + clusterSize - 1) / clusterSize
            lastUsed = max(lastUsed, fileClusters == 0 ? 0 : fileClusters - 1)
        }
        var plan = GrowthPlan(first: lastUsed + 1)
        var cursor = plan.first
        var tablesNeeded: [Int] = []
        for guest in guestClusters {
            let index = Int(guest / header.l2Entries)
            let hasTable = try index < image.tables.directoryCount && image.tables.tableOffset(index) != nil
            if !hasTable && tablesNeeded.last != index { tablesNeeded.append(index) }
        }
        for index in tablesNeeded {
            plan.newTables.append((index, cursor))
            cursor += 1
        }
        for guest in guestClusters {
            plan.data.append((guest, cursor))
            cursor += 1
        }
        if newL1Size > UInt64(header.l1Size) {
            plan.l1Cluster = cursor
            plan.l1Clusters = (newL1Size * 8 + clusterSize - 1) / clusterSize
            cursor += plan.l1Clusters
        }
        guard cursor > plan.first else { return plan }
        // Refcount blocks and table for everything appended, themselves included.
        let perBlock = refcounts.table.refcountsPerBlock
        let tableCapacity = refcounts.table.tableClusters * clusterSize / 8
        var (blockCount, tableClusters): (UInt64, UInt64) = (0, 0)
        while true {
            let end = cursor + blockCount + tableClusters
            let missing = (plan.first / perBlock...((end - 1) / perBlock)).filter { refcounts.table.blockOffset(Int($0)) == nil }
            let entries = (end - 1) / perBlock + 1
            let neededTable = entries > tableCapacity ? (entries * 8 + clusterSize - 1) / clusterSize : 0
            var table = neededTable
            if table == 0 && !missing.isEmpty {
                // Blocks that cannot be named one by one, each after the one counting it, come with a new table.
                let placed = missing.enumerated().map { (Int($0.element), cursor + UInt64($0.offset)) }
                if visibilityOrder(of: placed) == nil {
                    table = (max(entries, tableCapacity) * 8 + clusterSize - 1) / clusterSize
                }
            }
            if UInt64(missing.count) == blockCount && table == tableClusters {
                for (i, index) in missing.enumerated() { plan.blocks.append((Int(index), cursor + UInt64(i))) }
                break
            }
            (blockCount, tableClusters) = (UInt64(missing.count), table)
        }
        cursor += blockCount
        if tableClusters > 0 {
            plan.tableCluster = cursor
            plan.tableClusters = tableClusters
            cursor += tableClusters
        }
        plan.count = cursor - plan.first
        return plan
    }

    /// Writes what nothing references yet: new L2 tables, preallocated data, the new L1 table, the new refcount
    /// blocks (counting every appended cluster they cover) and the new refcount table; then flushes.
    private mutating func writeNewClusters(_ plan: inout GrowthPlan, newL1Size: UInt64,
                                           preallocation: MeasureOptions.Preallocation) throws {
        let cs = clusterSize
        let entrySize = header.l2EntrySize
        var tableOf: [Int: UInt64] = [:]
        for table in plan.newTables { tableOf[table.index] = table.cluster }
        var newTableBytes: [Int: ByteWriter] = [:]
        for (guest, cluster) in plan.data {
            let index = Int(guest / header.l2Entries)
            guard tableOf[index] != nil else { continue }
            var table = newTableBytes[index] ?? ByteWriter(count: Int(cs))
            // Extended L2: the host offset with an empty subcluster bitmap, as qemu preallocates them.
            table.u64be(cluster * cs | QCOW2Entry.copiedFlag, at: Int((guest % header.l2Entries) * entrySize))
            newTableBytes[index] = table
        }
        for (index, cluster) in plan.newTables {
            let bytes = newTableBytes[index]?.bytes ?? [UInt8](repeating: 0, count: Int(cs))
            try bytes.withUnsafeBytes { try file.write($0, at: cluster * cs) }
        }
        if let first = plan.data.first?.cluster, let last = plan.data.last?.cluster {
            let (offset, length) = (first * cs, (last + 1 - first) * cs)
            switch preallocation {
            case .falloc: try file.allocate(offset: offset, length: length)
            case .full: try ZeroBuffer.shared.forEachChunk(of: length) { chunk, done in try file.write(chunk, at: offset + done) }
            case .off, .metadata: break
            }
        }
        if let l1Cluster = plan.l1Cluster {
            // To the end of its entries, as qemu writes it (a whole sector on a device, which reads no zeros).
            let bytes = capacity == nil ? newL1Size * 8 : (newL1Size * 8 + 511) / 512 * 512
            var l1 = ByteWriter(count: Int(bytes))
            for index in 0..<image.tables.directoryCount { l1.u64be(image.tables.directoryEntry(index), at: index * 8) }
            for table in plan.newTables { l1.u64be(table.cluster * cs | QCOW2Entry.copiedFlag, at: table.index * 8) }
            try l1.bytes.withUnsafeBytes { try file.write($0, at: l1Cluster * cs) }
        }
        for block in plan.blocks { refcounts.addBlock(block.index, at: block.cluster * cs) }
        for cluster in plan.first..<(plan.first + plan.count) { try refcounts.add(1, to: cluster) }
        try refcounts.writeChangedBlocks(only: Set(plan.blocks.map(\.index)))
        if let tableCluster = plan.tableCluster {
            refcounts.relocateTable(to: tableCluster * cs, clusters: plan.tableClusters)
            try refcounts.table.encodedTable().withUnsafeBytes { try file.write($0, at: tableCluster * cs) }
        }
        // Preallocated data clusters are not written (metadata): the file must still reach past the last one.
        if let last = plan.data.last?.cluster, capacity == nil, try file.length() < (last + 1) * cs {
            try file.truncate(to: (last + 1) * cs)
        }
        try file.sync()
    }

    /// Makes the appended clusters counted: the existing blocks' refcounts for them, then the new blocks: the
    /// header's switch to the new refcount table naming them all (one 12-byte write of `refcount_table_offset` and
    /// `refcount_table_clusters`), or, in the table in place, one entry at a time (an 8-byte write each, flushed),
    /// each block only once the block counting its own cluster is named (itself, or one named before), so no block
    /// is ever visible without its refcount. Flushed after each step.
    private mutating func commitRefcounts(_ plan: GrowthPlan) throws {
        try refcounts.writeChangedBlocks()
        try file.sync()
        if let tableCluster = plan.tableCluster {
            var fields = ByteWriter(count: 12)
            fields.u64be(tableCluster * clusterSize, at: 0)
            fields.u32be(UInt32(plan.tableClusters), at: 8)
            try fields.bytes.withUnsafeBytes { try file.write($0, at: 48) }
            try file.sync()
            return
        }
        guard let order = visibilityOrder(of: plan.blocks) else {
            throw KDCTError.corrupt("the new refcount blocks cannot be named one by one (planned with a new table)",
                                    file: path, field: "refcount table")
        }
        for block in order {
            var entry = ByteWriter(count: 8)
            entry.u64be(block.cluster * clusterSize, at: 0)
            try entry.bytes.withUnsafeBytes { try file.write($0, at: header.refcountTableOffset + UInt64(block.index) * 8) }
            try file.sync()
        }
    }

    /// An order in which the new refcount `blocks` can be named in the table one by one, each after the block
    /// counting its own cluster (itself, an existing block, or one named before); nil when there is none (then the
    /// table is moved instead).
    private func visibilityOrder(of blocks: [(index: Int, cluster: UInt64)]) -> [(index: Int, cluster: UInt64)]? {
        let perBlock = refcounts.table.refcountsPerBlock
        let newIndexes = Set(blocks.map(\.index))
        var named = Set(refcounts.table.entries.indices.filter {
            refcounts.table.blockOffset($0) != nil && !newIndexes.contains($0)
        })
        var pending = blocks
        var order: [(index: Int, cluster: UInt64)] = []
        while !pending.isEmpty {
            guard let next = pending.firstIndex(where: { block in
                let counter = Int(block.cluster / perBlock)
                return counter == block.index || named.contains(counter)
            }) else { return nil }
            let block = pending.remove(at: next)
            order.append(block)
            named.insert(block.index)
        }
        return order
    }

    /// The L2 entries of preallocated clusters that go into existing L2 tables (all past the old end); and, when the
    /// L1 table stays, its entries for the new L2 tables. Flushed.
    private func writePreallocatedEntries(_ plan: GrowthPlan) throws {
        let cs = clusterSize
        var newTables = Set<Int>()
        for table in plan.newTables { newTables.insert(table.index) }
        for (guest, cluster) in plan.data {
            let index = Int(guest / header.l2Entries)
            guard !newTables.contains(index), let table = try image.tables.tableOffset(index) else { continue }
            var entry = ByteWriter(count: 8)
            entry.u64be(cluster * cs | QCOW2Entry.copiedFlag, at: 0)
            try entry.bytes.withUnsafeBytes { try file.write($0, at: table + (guest % header.l2Entries) * header.l2EntrySize) }
        }
        if plan.l1Cluster == nil {
            for table in plan.newTables {
                var entry = ByteWriter(count: 8)
                entry.u64be(table.cluster * cs | QCOW2Entry.copiedFlag, at: 0)
                try entry.bytes.withUnsafeBytes { try file.write($0, at: header.l1TableOffset + UInt64(table.index) * 8) }
            }
        }
        try file.sync()
    }

    /// The switch: size, crypt method (kept), `l1_size` and `l1_table_offset` in one write of bytes 24-47.
    private func switchHeader(size: UInt64, l1Size: UInt64, l1Offset: UInt64) throws {
        var fields = ByteWriter(count: 24)
        fields.u64be(size, at: 0)
        fields.u32be(header.cryptMethod, at: 8)
        fields.u32be(UInt32(l1Size), at: 12)
        fields.u64be(l1Offset, at: 16)
        try fields.bytes.withUnsafeBytes { try file.write($0, at: 24) }
        try file.sync()
    }

    /// Lowers by one the refcount of every cluster of `[offset, offset + length)`.
    private mutating func release(offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        for cluster in (offset / clusterSize)...((offset + length - 1) / clusterSize) { try refcounts.add(-1, to: cluster) }
    }

    // MARK: Shrinking

    /// Shrinks the guest to `newSize` (a multiple of 512): the clusters wholly past it are dropped.
    mutating func shrink(to newSize: UInt64) throws {
        if !image.snapshots.isEmpty {
            throw KDCTError(.unsupported, "shrinking an image with internal snapshots is not done (their L2 tables and clusters may be shared); delete the snapshots first",
                            file: path, field: "snapshots")
        }
        // Everything to drop is read and decoded first: a damaged entry stops the shrink before any write.
        let cs = clusterSize
        let firstDropped = (newSize + cs - 1) / cs
        var released: [UInt64] = []
        var droppedTables: [Int] = []
        var trimmedTables: [(offset: UInt64, from: UInt64)] = []
        for index in Int(firstDropped / header.l2Entries)..<image.tables.directoryCount {
            guard let table = try image.tables.tableOffset(index) else { continue }
            let firstGuest = UInt64(index) * header.l2Entries
            try image.tables.forEachEntry(ofTable: index, at: table) { entry in
                guard firstGuest + entry.index >= firstDropped else { return }
                let location = QCOW2Entry.Location(file: path, table: entry.table, index: entry.index,
                                                   guestOffset: (firstGuest + entry.index) * cs)
                switch try QCOW2Entry.decodeStandard(entry.raw, header: header, at: location) {
                case .unallocated, .zero(host: nil):
                    break
                case let .data(host), let .zero(host?):
                    released.append(host / cs)
                case let .compressed(host, size):
                    let range = QCOW2Entry.compressedRange(host: host, size: size, fileSize: image.file.size)
                    if range.length > 0 {
                        released += Array((range.start / cs)...((range.start + range.length - 1) / cs))
                    }
                }
            }
            if firstGuest >= firstDropped {
                droppedTables.append(index)
                released.append(table / cs)
            } else {
                trimmedTables.append((table, firstDropped - firstGuest))
            }
        }
        // Refcounts are lowered in memory now (a refcount that cannot go lower stops the shrink before any
        // write) and written last. The guest shrinks first; then the references go, then the refcounts.
        for cluster in released { try refcounts.add(-1, to: cluster) }
        try switchHeader(size: newSize, l1Size: UInt64(header.l1Size), l1Offset: header.l1TableOffset)
        for index in droppedTables {
            try ByteWriter(count: 8).bytes.withUnsafeBytes { try file.write($0, at: header.l1TableOffset + UInt64(index) * 8) }
        }
        for table in trimmedTables {
            let zeros = [UInt8](repeating: 0, count: Int((header.l2Entries - table.from) * header.l2EntrySize))
            try zeros.withUnsafeBytes { try file.write($0, at: table.offset + table.from * header.l2EntrySize) }
        }
        try file.sync()
        try refcounts.writeChangedBlocks()
        try file.sync()
        if capacity == nil, let last = try refcounts.lastUsedCluster() {
            let end = (last + 1) * cs
            if try file.length() > end {
                try file.truncate(to: end)
                try file.sync()
            }
        }
    }
}
