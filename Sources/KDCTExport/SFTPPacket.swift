import KDCTFormats

/// SFTP protocol version 3 constants (draft-ietf-secsh-filexfer-02, the version OpenSSH speaks) and the
/// OpenSSH extensions we use (PROTOCOL in the OpenSSH sources, sections 4.x).
enum SFTPProtocol {
    // Packet types (section 3).
    static let initRequest: UInt8 = 1
    static let version: UInt8 = 2
    static let open: UInt8 = 3
    static let close: UInt8 = 4
    static let read: UInt8 = 5
    static let write: UInt8 = 6
    static let lstat: UInt8 = 7
    static let fstat: UInt8 = 8
    static let fsetstat: UInt8 = 10
    static let remove: UInt8 = 13
    static let realpath: UInt8 = 16
    static let stat: UInt8 = 17
    static let rename: UInt8 = 18
    static let status: UInt8 = 101
    static let handle: UInt8 = 102
    static let data: UInt8 = 103
    static let name: UInt8 = 104
    static let attributes: UInt8 = 105
    static let extended: UInt8 = 200
    static let extendedReply: UInt8 = 201

    // SSH_FXF_* open flags (section 6.3).
    static let openRead: UInt32 = 0x01
    static let openWrite: UInt32 = 0x02
    static let openCreate: UInt32 = 0x08
    static let openExclusive: UInt32 = 0x20

    // SSH_FILEXFER_ATTR_* (section 5).
    static let attrSize: UInt32 = 0x01
    static let attrOwner: UInt32 = 0x02
    static let attrPermissions: UInt32 = 0x04
    static let attrTimes: UInt32 = 0x08
    static let attrExtended: UInt32 = 0x8000_0000

    // SSH_FX_* status codes (section 7; 9 and up are from later drafts, sent by some servers).
    static let ok: UInt32 = 0
    static let endOfFile: UInt32 = 1
    static let noSuchFile: UInt32 = 2
    static let permissionDenied: UInt32 = 3
    static let failure: UInt32 = 4
    static let unsupported: UInt32 = 8
    static let noSuchPath: UInt32 = 10
    static let fileAlreadyExists: UInt32 = 11

    /// The largest reply we accept (OpenSSH's server sends at most 256 KiB; a bigger length is a broken stream).
    static let maximumPacket = 1 << 20

    /// Words for a status code.
    static func statusName(_ status: UInt32) -> String {
        let names: [UInt32: String] = [
            1: "end of file", 2: "no such file", 3: "permission denied", 4: "failure",
            5: "bad message", 6: "no connection", 7: "connection lost", 8: "operation not supported by the server",
            9: "invalid handle", 10: "no such path", 11: "file already exists", 12: "write protected", 13: "no media",
            14: "no space left on the file system", 15: "quota exceeded",
        ]
        return names[status] ?? "SFTP status \(status)"
    }
}

/// Builds one SFTP packet: `uint32 length`, `byte type`, then the fields (big-endian, strings length-prefixed).
struct SFTPPacketWriter {
    private(set) var bytes: [UInt8] = [0, 0, 0, 0]

    init(type: UInt8, id: UInt32?) {
        bytes.append(type)
        if let id { u32(id) }
    }

    mutating func u8(_ value: UInt8) { bytes.append(value) }

    mutating func u32(_ value: UInt32) {
        bytes.append(contentsOf: [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)])
    }

    mutating func u64(_ value: UInt64) {
        u32(UInt32(value >> 32))
        u32(UInt32(value & 0xffff_ffff))
    }

    mutating func string(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ value: String) { string(Array(value.utf8)) }

    /// The packet with its length filled in.
    var finished: [UInt8] {
        var copy = bytes
        let length = UInt32(copy.count - 4)
        copy[0] = UInt8(length >> 24); copy[1] = UInt8(length >> 16 & 0xff)
        copy[2] = UInt8(length >> 8 & 0xff); copy[3] = UInt8(length & 0xff)
        return copy
    }

    /// The header of an SSH_FXP_WRITE request carrying `count` data bytes (the data follows it on the wire):
    /// length, type, id, handle, offset, data length.
    static func writeHeader(id: UInt32, handle: [UInt8], offset: UInt64, count: Int) -> [UInt8] {
        var writer = SFTPPacketWriter(type: SFTPProtocol.write, id: id)
        writer.string(handle)
        writer.u64(offset)
        writer.u32(UInt32(count))
        var header = writer.bytes
        let length = UInt32(header.count - 4 + count)
        header[0] = UInt8(length >> 24); header[1] = UInt8(length >> 16 & 0xff)
        header[2] = UInt8(length >> 8 & 0xff); header[3] = UInt8(length & 0xff)
        return header
    }
}

/// Reads the fields of a received SFTP packet body; every read is bounds-checked (a short or malformed reply is
/// an error naming the field, never a trap).
struct SFTPPacketReader {
    let bytes: [UInt8]
    private(set) var position: Int
    let host: String

    init(_ bytes: [UInt8], from position: Int = 0, host: String) {
        self.bytes = bytes
        self.position = position
        self.host = host
    }

    var isAtEnd: Bool { position >= bytes.count }

    private func malformed(_ field: String) -> KDCTError {
        KDCTError(.io, "the SFTP server sent a malformed reply (\(field) runs past the end of the packet)", file: host,
                  field: field)
    }

    mutating func u8(_ field: String) throws -> UInt8 {
        guard position < bytes.count else { throw malformed(field) }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32(_ field: String) throws -> UInt32 {
        guard position + 4 <= bytes.count else { throw malformed(field) }
        defer { position += 4 }
        return UInt32(bytes[position]) << 24 | UInt32(bytes[position + 1]) << 16
            | UInt32(bytes[position + 2]) << 8 | UInt32(bytes[position + 3])
    }

    mutating func u64(_ field: String) throws -> UInt64 {
        let high = try u32(field)
        return UInt64(high) << 32 | UInt64(try u32(field))
    }

    mutating func string(_ field: String) throws -> ArraySlice<UInt8> {
        let length = Int(try u32(field))
        guard length <= bytes.count - position else { throw malformed(field) }
        defer { position += length }
        return bytes[position..<(position + length)]
    }

    /// An ATTRS structure (section 5).
    mutating func attributes() throws -> RemoteFileStatus {
        let flags = try u32("attribute flags")
        var status = RemoteFileStatus()
        if flags & SFTPProtocol.attrSize != 0 { status.size = try u64("size") }
        if flags & SFTPProtocol.attrOwner != 0 {
            _ = try u32("uid")
            _ = try u32("gid")
        }
        if flags & SFTPProtocol.attrPermissions != 0 { status.mode = try u32("permissions") }
        if flags & SFTPProtocol.attrTimes != 0 {
            _ = try u32("atime")
            status.modificationTime = try u32("mtime")
        }
        if flags & SFTPProtocol.attrExtended != 0 {
            let count = try u32("extended count")
            for _ in 0..<count {
                _ = try string("extended type")
                _ = try string("extended data")
            }
        }
        return status
    }
}
