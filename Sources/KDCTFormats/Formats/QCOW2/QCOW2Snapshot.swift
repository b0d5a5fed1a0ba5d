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

    /// Decodes `count` snapshot entries from `bytes` (the table as read from the file); also returns the table's
    /// length in bytes (entries are padded to 8 bytes).
    static func decodeTable(_ bytes: [UInt8], count: Int) throws -> (entries: [QCOW2Snapshot], length: Int) {
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
        return (snapshots, offset)
    }

    /// The snapshot `selector` names among `snapshots`, as qemu-img convert's `-l` finds it: by id and/or name
    /// when it says which, else by id first, then by name. Throws `notFound` naming the snapshot.
    static func find(_ selector: SnapshotSelector, in snapshots: [QCOW2Snapshot], file: String) throws -> QCOW2Snapshot {
        let match: QCOW2Snapshot?
        switch (selector.id, selector.name) {
        case let (id?, name?): match = snapshots.first { $0.id == id && $0.name == name }
        case let (id?, nil): match = snapshots.first { $0.id == id }
        case let (nil, name?): match = snapshots.first { $0.name == name }
        case (nil, nil): match = nil
        }
        if let match { return match }
        if let either = selector.idOrName {
            if let byID = snapshots.first(where: { $0.id == either }) { return byID }
            if let byName = snapshots.first(where: { $0.name == either }) { return byName }
        }
        let known = snapshots.map { "\($0.id) \"\($0.name)\"" }.joined(separator: ", ")
        throw KDCTError(.notFound, "no internal snapshot \(selector) (the image has \(known.isEmpty ? "none" : known))",
                        file: file, field: "snapshot")
    }

    /// Bytes to read for a table of `count` entries: an upper bound from the largest entry size, capped.
    static func tableReadLength(count: Int, fileSize: UInt64, offset: UInt64) -> Int {
        let bound = UInt64(count) * (40 + 1024 + 2 * 65535 + 8)
        return Int(min(bound, maximumTableBytes, fileSize > offset ? fileSize - offset : 0))
    }
}

/// Which internal snapshot to read (`convert -l`), in qemu-img's syntax: `snapshot.id=ID`, `snapshot.name=NAME`,
/// both separated by a comma, or a bare `ID_OR_NAME` (an id first, then a name).
public struct SnapshotSelector: Sendable, Equatable, CustomStringConvertible {
    /// The snapshot's id (`snapshot.id=`).
    public var id: String?
    /// The snapshot's name (`snapshot.name=`).
    public var name: String?
    /// A bare argument: an id, or else a name.
    public var idOrName: String?

    /// A selector by id and/or name.
    public init(id: String? = nil, name: String? = nil) {
        self.id = id
        self.name = name
    }

    /// Parses qemu-img's `-l` argument. Throws `invalidArgument` for an empty argument, an unknown `snapshot.` key
    /// or an empty value.
    public init(qemuSyntax text: String) throws {
        guard !text.isEmpty else { throw KDCTError(.invalidArgument, "the snapshot name is empty", field: "snapshot") }
        guard text.hasPrefix("snapshot.") else {
            idOrName = text
            return
        }
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[1].isEmpty else {
                throw KDCTError(.invalidArgument, "'\(item)' is not snapshot.id=ID or snapshot.name=NAME", field: "snapshot")
            }
            switch parts[0] {
            case "snapshot.id": id = parts[1]
            case "snapshot.name": name = parts[1]
            default:
                throw KDCTError(.invalidArgument, "unknown snapshot option '\(parts[0])' (snapshot.id or snapshot.name)",
                                field: "snapshot")
            }
        }
    }

    /// The selector as messages show it (`"name"`, `id 2, name "x"`).
    public var description: String {
        if let idOrName { return "\"\(idOrName)\"" }
        return [id.map { "id \($0)" }, name.map { "name \"\($0)\"" }].compactMap { $0 }.joined(separator: ", ")
    }
}
