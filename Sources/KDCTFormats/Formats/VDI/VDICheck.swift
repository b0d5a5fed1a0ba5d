extension VDIImage: CheckableImage {
    /// The block map against itself and the header, as qemu's `vdi_check` does (entries past the end of the file
    /// were reported while opening): each block slot used by one block only, no slot number at or past the
    /// header's block count, and the header's `blocks_allocated` equal to the allocated entries. Zero-block entries
    /// (`0xFFFFFFFE`) count as unallocated, as in qemu.
    func check(into log: CheckLog, limits: ImageLimits) throws {
        let blockCount = Int(header.blockCount)
        // For each slot, the first block using it (UInt32.max: none).
        var owner = [UInt32](repeating: .max, count: blockCount)
        var allocated: UInt64 = 0
        for (block, slot) in blockMap.entries.enumerated() where slot < VDIBlockMap.zero {
            guard Int(slot) < blockCount else {
                log.corrupt("block map entry \(block) names block slot \(slot), past the \(blockCount) blocks of the image")
                continue
            }
            allocated += 1
            if owner[Int(slot)] == .max {
                owner[Int(slot)] = UInt32(block)
            } else {
                log.corrupt("block map entry \(block) names block slot \(slot), already used by entry \(owner[Int(slot)])")
            }
        }
        if allocated != UInt64(header.blocksAllocated) {
            log.corrupt("allocated blocks mismatch: the block map allocates \(allocated), the header says \(header.blocksAllocated) (blocks_allocated)")
        }
    }
}
