import KDCTFormats

/// Guesses the firmware a disk boots with from its partition table, for VMs whose description says nothing.
///
/// A GPT disk (UEFI spec 2.x, chapter 5) with an EFI System Partition and no BIOS boot partition boots with UEFI
/// (Windows cannot boot GPT from BIOS at all); a GPT disk with a BIOS boot partition, or an MBR disk, boots with
/// BIOS. Anything else gives no answer.
enum BootFirmwareProbe {
    /// EFI System Partition type C12A7328-F81F-11D2-BA4B-00A0C93EC93B, as stored (mixed-endian).
    static let espType: [UInt8] = [0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11,
                                   0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]
    /// BIOS boot partition type 21686148-6449-6E6F-744E-656564454649 ("Hah!IdontNeedEFI"), as stored.
    static let biosBootType: [UInt8] = Array("Hah!IdontNeedEFI".utf8)
    /// Most partition entry bytes read (128 entries of 128 bytes is the usual table; 1 MiB allows odd ones).
    static let maxEntryBytes = 1 << 20

    /// The firmware `device`'s partition table implies, or nil.
    static func guess(_ device: any BlockDevice) throws -> Firmware? {
        guard device.virtualSize >= 1024 else { return nil }
        let mbr = try device.readBytes(at: 0, count: 512)
        guard mbr[510] == 0x55, mbr[511] == 0xAA else { return nil }
        let protective = (0..<4).contains { mbr[446 + $0 * 16 + 4] == 0xEE }
        guard protective else {
            // Plain MBR: an 0xEF (EFI system) partition without an active one points to UEFI.
            let types = (0..<4).map { mbr[446 + $0 * 16 + 4] }
            let active = (0..<4).contains { mbr[446 + $0 * 16] == 0x80 }
            if types.contains(0xEF) && !active { return .efi }
            return types.contains(where: { $0 != 0 }) ? .bios : nil
        }
        for sectorSize in [UInt64(512), 4096] where device.virtualSize >= sectorSize * 2 {
            let header = try device.readBytes(at: sectorSize, count: 92)
            guard let table = try? decodeGPTHeader(header) else { continue }
            let (entriesBytes, overflow) = UInt64(table.count).multipliedReportingOverflow(by: UInt64(table.entrySize))
            guard !overflow, entriesBytes <= UInt64(maxEntryBytes) else { return nil }
            let (start, startOverflow) = table.entriesLBA.multipliedReportingOverflow(by: sectorSize)
            let (end, endOverflow) = start.addingReportingOverflow(entriesBytes)
            guard !startOverflow, !endOverflow, end <= device.virtualSize else { return nil }
            let entries = try device.readBytes(at: start, count: Int(entriesBytes))
            return classify(entries: entries, entrySize: Int(table.entrySize))
        }
        return nil
    }

    /// The fields of a GPT header needed to find the partition entries.
    struct GPTHeader: Equatable {
        var entriesLBA: UInt64
        var count: UInt32
        var entrySize: UInt32
    }

    /// Decodes a GPT header ("EFI PART" at 0, entries LBA at 72, count at 80, entry size at 84).
    static func decodeGPTHeader(_ bytes: [UInt8]) throws -> GPTHeader {
        let reader = ByteReader(bytes, structure: "GPT header")
        guard try reader.slice(0, 8) == Array("EFI PART".utf8) else {
            throw KDCTError.invalidFormat("no GPT signature", field: "GPT header")
        }
        let header = GPTHeader(entriesLBA: try reader.u64le(72), count: try reader.u32le(80), entrySize: try reader.u32le(84))
        guard header.entrySize >= 128, header.entrySize % 8 == 0, header.count > 0 else {
            throw KDCTError.corrupt("GPT entry size \(header.entrySize) / count \(header.count) invalid", field: "GPT header")
        }
        return header
    }

    /// UEFI when an ESP is present and no BIOS boot partition is, BIOS when a BIOS boot partition is present.
    static func classify(entries: [UInt8], entrySize: Int) -> Firmware? {
        var hasESP = false
        var hasBIOSBoot = false
        var offset = 0
        while offset + 16 <= entries.count {
            let type = Array(entries[offset..<(offset + 16)])
            if type == espType { hasESP = true }
            if type == biosBootType { hasBIOSBoot = true }
            offset += entrySize
        }
        if hasBIOSBoot { return .bios }
        return hasESP ? .efi : nil
    }
}
