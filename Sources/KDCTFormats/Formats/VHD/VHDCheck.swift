extension VHDImage: CheckableImage {
    /// What opening checked (every BAT entry clear of the footer copy, the dynamic header and the BAT, inside the
    /// file, blocks not overlapping each other; each problem recorded), plus, for a dynamic or differencing disk:
    /// the footer at the end of the file present, with a valid checksum, and identical to the copy at offset 0
    /// (the reader falls back to one when the other is damaged, so only a check shows it); parent locator data
    /// inside the file and clear of the blocks. qemu-img has no check for VHD (`vpc`).
    func check(into log: CheckLog, limits: ImageLimits) throws {
        guard let header else { return }
        let head = try file.readBytes(count: 512, at: 0, what: "footer copy")
        let headFooter = VHDFooter.hasCookie(head) ? try VHDFooter.decode(head) : nil
        if headFooter?.checksumIsValid != true {
            log.corrupt("the footer copy at offset 0 is damaged (no cookie or a bad checksum)")
        }
        if file.size >= 1024 {
            let tail = try file.readBytes(count: 512, at: file.size - 512, what: "footer")
            if !VHDFooter.hasCookie(tail) {
                log.corrupt("there is no footer at the end of the file (\(file.size) bytes): the file may be truncated")
            } else if try !VHDFooter.decode(tail).checksumIsValid {
                log.corrupt("the footer at the end of the file has a bad checksum")
            } else if headFooter?.checksumIsValid == true && head != tail {
                log.corrupt("the footer copy at offset 0 differs from the footer at the end of the file")
            }
        }
        let span = bitmapSize + UInt64(header.blockSize)
        for (index, locator) in header.parentLocators.enumerated() where locator.dataLength > 0 {
            let (end, overflow) = locator.dataOffset.addingReportingOverflow(UInt64(locator.dataLength))
            guard !overflow, end <= file.size else {
                log.corrupt("parent locator \(index) (\(locator.platformText)) places its data at file offset \(locator.dataOffset) (+\(locator.dataLength)), past the end of the file")
                continue
            }
            for (block, entry) in bat.enumerated() where entry != VHDBlockAllocationTable.unallocated {
                let start = UInt64(entry) * 512
                if start < end && locator.dataOffset < start + span {
                    log.corrupt("parent locator \(index) (\(locator.platformText)) data at file offset \(locator.dataOffset) overlaps block \(block) at \(start)")
                }
            }
        }
    }
}
