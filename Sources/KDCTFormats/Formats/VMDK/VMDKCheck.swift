extension VMDKImage: CheckableImage {
    /// Checks each sparse extent (hosted sparse, streamOptimized, COWD, seSparse; flat and zero extents have no
    /// metadata beyond the size checked while opening). qemu's `vmdk_co_check` only reports grains that point past
    /// the end of their file; this check does that and more.
    func check(into log: CheckLog, limits: ImageLimits) throws {
        for piece in pieces {
            guard let extent = piece.reader as? VMDKSparseExtent else { continue }
            try extent.check(into: log, limits: limits, name: piece.name ?? FilePaths.lastComponent(of: info.filename))
        }
    }
}

extension VMDKSparseExtent {
    /// Grain directory entries that do not name a grain table inside the file were recorded while opening. Here
    /// every grain table entry is decoded as a read decodes it (a grain pointing past the end of the file, an
    /// unknown seSparse type, a zeroed-grain marker the header does not enable); a streamOptimized grain's marker
    /// must name the grain's own sector and a size inside the file; then the header sector, the grain directory,
    /// the grain tables and the grains must not overlap (two entries naming one grain, a grain over a table).
    func check(into log: CheckLog, limits: ImageLimits, name: String) throws {
        var ranges = HostRanges(limit: Int(limits.maxTableBytes / 24))
        try ranges.add(0, length: 512, label: TableRangeLabel.header.value)
        try ranges.add(layout.directoryOffset * 512, length: UInt64(layout.directoryEntries * layout.entryWidth),
                       label: TableRangeLabel.directory.value)
        let grainBytes = layout.grainBytes
        for table in 0..<tables.directoryCount {
            // Bad grain directory entries were recorded and left out while opening.
            guard let offset = try? tables.tableOffset(table) else { continue }
            try ranges.add(offset, length: UInt64(layout.tableBytes), label: TableRangeLabel.table(table).value)
            try tables.forEachEntry(ofTable: table, at: offset) { entry in
                let grain = UInt64(table) * UInt64(layout.entriesPerTable) + entry.index
                let grainStart = grain * grainBytes
                guard grainStart < layout.capacityBytes else { return }
                let needed = min(grainBytes, layout.capacityBytes - grainStart)
                let location: VMDKGrain
                do {
                    location = try encoding.grain(entry.raw, grainBytes: grainBytes, needed: needed,
                                                  fileSize: sparseFile.size, file: name) {
                        "grain table \(table) entry \(entry.index) (guest offset \(guestBase + grainStart))"
                    }
                } catch let error as KDCTError where error.code == .corrupt {
                    log.corrupt(error)
                    return
                }
                switch location {
                case .unallocated, .zero:
                    return
                case let .data(host):
                    try ranges.add(host, length: needed, label: TableRangeLabel.unit(grain).value)
                case let .compressed(host):
                    guard hasMarkers else {
                        try ranges.add(host, length: 1, label: TableRangeLabel.unit(grain).value)
                        return
                    }
                    let length = try markedGrainLength(at: host, sector: grainStart / 512, log: log, name: name)
                    try ranges.add(host, length: length, label: TableRangeLabel.unit(grain).value)
                }
            }
        }
        ranges.reportOverlaps(into: log) {
            "\(name): " + TableRangeLabel(value: $0).name(directory: "the grain directory", table: "grain table", unit: "grain")
        }
    }

    /// The bytes of the streamOptimized grain at `host` (its marker and compressed data, to a whole sector), after
    /// checking that its marker names `sector` and a size inside the file; 1 when the marker is unusable (reported).
    private func markedGrainLength(at host: UInt64, sector: UInt64, log: CheckLog, name: String) throws -> UInt64 {
        let headerSize = VMDKStreamMarkers.grainMarkerHeaderSize
        guard host <= sparseFile.size, UInt64(headerSize) <= sparseFile.size - host else {
            log.corrupt("\(name): the grain marker at file offset \(host) lies past the end of the file")
            return 1
        }
        let bytes = try sparseFile.readBytes(count: headerSize, at: host, what: "grain marker")
        guard let marker = bytes.withUnsafeBytes({ VMDKStreamMarkers.grainMarker($0) }) else { return 1 }
        if marker.lba != sector {
            log.corrupt("\(name): the grain marker at file offset \(host) is for sector \(marker.lba), the grain table entry for sector \(sector)")
        }
        let length = UInt64(headerSize) + UInt64(marker.size)
        guard length <= sparseFile.size - host else {
            log.corrupt("\(name): the compressed grain at file offset \(host) (\(marker.size) bytes) runs past the end of the file")
            return 1
        }
        return (length + 511) / 512 * 512
    }
}
