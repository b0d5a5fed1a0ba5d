extension VHDXImage: CheckableImage {
    /// What opening checked, as qemu's `vhdx_check_bat_entries` and more: every BAT entry of a block inside the disk
    /// with a defined state, present blocks aligned past the 1 MiB header section, inside the file, clear of the
    /// regions and the log and of each other, sector bitmap blocks likewise (each problem recorded). Here: both region
    /// table copies valid (the reader uses the second when the first is damaged, so only a check shows it), and
    /// notes for a damaged header copy and for a log to replay (qemu-img check replays it into the file, and counts
    /// that as a fixed corruption, when it may write; here it is replayed in memory and the file is not changed).
    func check(into log: CheckLog, limits: ImageLimits) throws {
        let logRange: Range<UInt64>? = header.logLength > 0 ? header.logOffset..<(header.logOffset + UInt64(header.logLength)) : nil
        for (index, offset) in VHDXRegionTable.offsets.enumerated() {
            do {
                _ = try VHDXRegionTable.decode(view.readBytes(count: VHDXRegionTable.size, at: offset, what: "region table"),
                                               logRange: logRange, file: view.path)
            } catch let error as KDCTError where error.code != .io {
                log.corrupt("region table copy \(index + 1) at file offset \(offset) is damaged: \(error.message)")
            }
        }
        for (index, offset) in VHDXHeader.offsets.enumerated() {
            let copy = try VHDXHeader.decode(view.file.readBytes(count: VHDXHeader.size, at: offset, what: "header \(index + 1)"))
            if !copy.isValid {
                log.note("header copy \(index + 1) is not valid (signature, checksum or version); the other one is current, as after an interrupted header update")
            }
        }
        if !header.logGUID.isZero {
            log.note("the log holds writes to replay (not closed cleanly): replayed in memory for this check, the file was not changed")
        }
    }
}
