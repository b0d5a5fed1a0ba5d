import KDCTFormats

/// One member of a tar archive: where its data lies, read in place (never extracted).
struct TarMember: Sendable, Equatable {
    /// The member's name, after pax `path` and GNU long-name overrides, without a leading `./`.
    var name: String
    /// Data size in bytes, after a pax `size` override.
    var size: UInt64
    /// Offset of the member's first data byte in the archive.
    var dataOffset: UInt64
    /// Offset of the member's (first) header block in the archive.
    var headerOffset: UInt64
    /// The member's type.
    var kind: TarHeader.Kind
    /// Link target of a hard or symbolic link.
    var linkName: String
}

/// A tar archive (an OVA) read in place: the list of members with their data offsets, and windows onto them.
///
/// Supports POSIX ustar, pax extended headers (`path`, `size`, `linkpath`), GNU long names (`L`, `K`) and GNU
/// base-256 sizes, so members of 8 GiB and more are found whichever way the archiver wrote them. Walking the
/// archive reads one block per header: a member's data is never read here.
final class TarArchive: Sendable {
    /// The archive file.
    let file: ReadOnlyFile
    /// Members in archive order (pax and GNU metadata headers folded into the member they describe).
    let members: [TarMember]
    /// Remarks about the archive's shape (missing end-of-archive blocks, data after it).
    let notes: [String]

    /// Most members an archive may hold (an OVA holds a handful; this bounds memory and time on hostile input).
    static let maxMembers = 65_536
    /// Largest pax extended header or GNU long name read.
    static let maxMetadataBytes: UInt64 = 1 << 20

    /// Opens the archive at `path` and lists its members.
    convenience init(path: String) throws {
        try self.init(file: ReadOnlyFile(path: path))
    }

    /// Lists the members of the archive in `file`. Throws `invalidFormat` when the first block is not a tar
    /// header, `corrupt` on a damaged header, `truncated` when a member's data runs past the end of the file,
    /// `unsupported` for GNU sparse members, and `limitExceeded` past `maxMembers`.
    init(file: ReadOnlyFile) throws {
        self.file = file
        var members: [TarMember] = []
        var notes: [String] = []
        var offset: UInt64 = 0
        var pendingPax: [(String, String)] = []
        var pendingLongName: String?
        var pendingLongLink: String?
        var pendingHeaderOffset: UInt64?
        let blockSize = UInt64(TarHeader.blockSize)
        walk: while true {
            if offset >= file.size {
                if offset == 0 {
                    throw KDCTError(.invalidFormat, "empty file, not a tar archive", file: file.path)
                }
                if pendingHeaderOffset != nil {
                    throw KDCTError(.truncated, "archive ends after an extended header, before the member it describes",
                                    file: file.path, field: "tar header")
                }
                notes.append("the archive ends without its end-of-archive blocks")
                break walk
            }
            var block = [UInt8](repeating: 0, count: TarHeader.blockSize)
            let got = try block.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: offset) }
            if got < TarHeader.blockSize {
                throw KDCTError(.truncated,
                                "tar header at archive offset \(offset) is cut off: the file ends after \(got) of its 512 bytes",
                                file: file.path, field: "tar header")
            }
            if TarHeader.isZeroBlock(block) {
                if pendingHeaderOffset != nil {
                    throw KDCTError(.corrupt, "end-of-archive block at offset \(offset) right after an extended header",
                                    file: file.path, field: "tar header")
                }
                if offset == 0 { throw KDCTError(.invalidFormat, "starts with an empty block, not a tar archive", file: file.path) }
                let after = offset + blockSize
                if after < file.size {
                    let tailCount = Int(min(file.size - after, UInt64(TarHeader.blockSize)))
                    let next = try file.readBytes(count: tailCount, at: after, what: "end-of-archive block")
                    if !TarHeader.isZeroBlock(next) {
                        notes.append("a single end-of-archive block at offset \(offset) is followed by data; the rest is ignored")
                    }
                }
                break walk
            }
            let header: TarHeader
            do {
                header = try TarHeader.decode(block, at: offset, file: file.path)
            } catch let error as KDCTError where error.code == .invalidFormat && offset > 0 {
                throw KDCTError(.corrupt, "tar header at archive offset \(offset) is damaged: \(error.message)",
                                file: file.path, field: "tar header")
            }
            var size = header.size
            let headerOffset = pendingHeaderOffset ?? offset
            if !header.kind.isMetadata {
                for (key, value) in pendingPax where key == "size" {
                    guard let parsed = UInt64(value) else {
                        throw KDCTError(.corrupt, "pax size \"\(value)\" for the member at offset \(offset) is not a number",
                                        file: file.path, field: "pax size")
                    }
                    size = parsed
                }
            }
            let dataOffset = offset + blockSize
            let (dataEnd, overflow) = dataOffset.addingReportingOverflow(size)
            if overflow || dataEnd > file.size {
                throw KDCTError(.truncated,
                                "member \"\(header.name)\" declares \(size) bytes at archive offset \(dataOffset) but the archive is \(file.size) bytes long",
                                file: file.path, field: header.name)
            }
            switch header.kind {
            case .paxExtended, .paxGlobal, .gnuLongName, .gnuLongLink:
                try ImageLimits.check("tar extended header size", size, max: Self.maxMetadataBytes, file: file.path)
                let data = try file.readBytes(count: Int(size), at: dataOffset, what: "tar extended header")
                switch header.kind {
                case .paxExtended:
                    pendingPax += try PaxRecords.decode(data, file: file.path, at: offset)
                    if pendingPax.contains(where: { $0.0.hasPrefix("GNU.sparse.") }) {
                        throw KDCTError(.unsupported, "member after offset \(offset) is a GNU sparse file (pax GNU.sparse.*); repack it without tar's --sparse",
                                        file: file.path, field: "GNU.sparse")
                    }
                    pendingHeaderOffset = pendingHeaderOffset ?? offset
                case .paxGlobal:
                    _ = try PaxRecords.decode(data, file: file.path, at: offset)  // validated, not applied
                case .gnuLongName:
                    pendingLongName = TarHeader.string(data, 0, data.count)
                    pendingHeaderOffset = pendingHeaderOffset ?? offset
                default:
                    pendingLongLink = TarHeader.string(data, 0, data.count)
                    pendingHeaderOffset = pendingHeaderOffset ?? offset
                }
            case .gnuSparse:
                throw KDCTError(.unsupported, "member \"\(header.name)\" is a GNU sparse file; repack it without tar's --sparse",
                                file: file.path, field: header.name)
            default:
                var name = pendingLongName ?? header.name
                var linkName = pendingLongLink ?? header.linkName
                for (key, value) in pendingPax {
                    if key == "path" { name = value }
                    if key == "linkpath" { linkName = value }
                }
                while name.hasPrefix("./") { name.removeFirst(2) }
                if members.count >= Self.maxMembers {
                    throw KDCTError.limit("tar member count", value: UInt64(members.count + 1),
                                          limit: UInt64(Self.maxMembers), file: file.path)
                }
                if header.kind == .regular, members.contains(where: { $0.name == name && $0.kind == .regular }) {
                    throw KDCTError(.corrupt, "member \"\(name)\" appears twice (at offsets \(members.first { $0.name == name }?.headerOffset ?? 0) and \(headerOffset)); refused as ambiguous",
                                    file: file.path, field: name)
                }
                members.append(TarMember(name: name, size: size, dataOffset: dataOffset, headerOffset: headerOffset,
                                         kind: header.kind, linkName: linkName))
                pendingPax = []
                pendingLongName = nil
                pendingLongLink = nil
                pendingHeaderOffset = nil
            }
            // The data is padded to a whole block; a last member whose padding is missing is still complete.
            let padded = (size % blockSize == 0) ? size : size + (blockSize - size % blockSize)
            let (next, nextOverflow) = dataOffset.addingReportingOverflow(padded)
            if nextOverflow { throw KDCTError(.corrupt, "member size \(size) overflows", file: file.path) }
            offset = next
        }
        self.members = members
        self.notes = notes
    }

    /// True when `bytes` (the first 512 bytes of a file) hold a tar header with a valid checksum.
    static func looksLikeTar(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= TarHeader.blockSize else { return false }
        return (try? TarHeader.decode(Array(bytes.prefix(TarHeader.blockSize)), at: 0)) != nil
    }

    /// The regular member called `name` (a leading `./` ignored), or nil.
    func member(named name: String) -> TarMember? {
        var wanted = name
        while wanted.hasPrefix("./") { wanted.removeFirst(2) }
        return members.first { $0.name == wanted && $0.kind == .regular }
    }

    /// A `ReadOnlyFile` reading exactly the data of `member` (a window onto the archive).
    func open(_ member: TarMember) throws -> ReadOnlyFile {
        guard member.kind == .regular else {
            throw KDCTError(.unsupported, "member \"\(member.name)\" is not a regular file (\(member.kind)); links are not followed",
                            file: file.path, field: member.name)
        }
        return try file.window(FileWindow(offset: member.dataOffset, length: member.size, name: member.name))
    }

    /// The whole data of a small member (descriptor, manifest), after checking its size against `limit`.
    func contents(of member: TarMember, limit: UInt64) throws -> [UInt8] {
        try ImageLimits.check("size of \(member.name)", member.size, max: limit, file: file.path)
        return try file.readBytes(count: Int(member.size), at: member.dataOffset, what: member.name)
    }
}
