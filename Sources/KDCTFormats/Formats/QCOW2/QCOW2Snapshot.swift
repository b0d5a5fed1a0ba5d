/// One internal snapshot (qcow2.txt, "Snapshots"): listed by `info`; the reader always reads the active layer.
struct QCOW2Snapshot: Sendable, Equatable {
    var id: String
    var name: String
    var l1TableOffset: UInt64
    var l1Size: UInt32
    var vmStateSize: UInt64
    var dateSeconds: UInt32
    var virtualSize: UInt64?

    /// Bytes of the snapshot table read at most (qemu's QCOW_MAX_SNAPSHOTS_SIZE, 64 MiB).
    static let maximumTableBytes: UInt64 = 64 << 20

    /// Decodes `count` snapshot entries from `bytes` (the table as read from the file).
    static func decodeTable(_ bytes: [UInt8], count: Int) throws -> [QCOW2Snapshot] {
        let r = ByteReader(bytes, structure: "qcow2 snapshot table")
        var offset = 0
        var snapshots: [QCOW2Snapshot] = []
        snapshots.reserveCapacity(min(count, 4096))
        for index in 0..<count {
            // Entries are 8-byte aligned; fixed part is 40 bytes.
            let l1Offset = try r.u64be(offset)
            let l1Size = try r.u32be(offset + 8)
            let idSize = Int(try r.u16be(offset + 12))
            let nameSize = Int(try r.u16be(offset + 14))
            let date = try r.u32be(offset + 16)
            let vmState32 = try r.u32be(offset + 32)
            let extraSize = Int(try r.u32be(offset + 36))
            guard extraSize <= 1024 else {
                throw KDCTError.corrupt("snapshot \(index) has \(extraSize) bytes of extra data (above 1024)", field: "snapshot table")
            }
            var vmState = UInt64(vmState32)
            var virtualSize: UInt64?
            if extraSize >= 8 { vmState = try r.u64be(offset + 40) }
            if extraSize >= 16 { virtualSize = try r.u64be(offset + 48) }
            let idStart = offset + 40 + extraSize
            let id = String(decoding: try r.slice(idStart, idSize), as: UTF8.self)
            let name = String(decoding: try r.slice(idStart + idSize, nameSize), as: UTF8.self)
            snapshots.append(QCOW2Snapshot(id: id, name: name, l1TableOffset: l1Offset, l1Size: l1Size,
                                           vmStateSize: vmState, dateSeconds: date, virtualSize: virtualSize))
            offset = (idStart + idSize + nameSize + 7) / 8 * 8
        }
        return snapshots
    }

    /// Bytes to read for a table of `count` entries: an upper bound from the largest entry size, capped.
    static func tableReadLength(count: Int, fileSize: UInt64, offset: UInt64) -> Int {
        let bound = UInt64(count) * (40 + 1024 + 2 * 65535 + 8)
        return Int(min(bound, maximumTableBytes, fileSize > offset ? fileSize - offset : 0))
    }
}
