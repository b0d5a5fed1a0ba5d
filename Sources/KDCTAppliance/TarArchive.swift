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
        var pending = PendingExtendedHeaders()
        let blockSize = UInt64(TarHeader.blockSize)
        walk: while true {
            if offset >= file.size {
                if offset == 0 {
                    throw KDCTError(.invalidFormat, "empty file, not a tar archive", file: file.path)
                }
                if pending.headerOffset != nil {
                    throw KDCTError(.truncated, "archive ends after an extended header, before the member it describes",
                                    file: file.path, field: "tar header")
                }
                notes.append("the archive ends without its end-of-archive blocks")
                break walk
            }
            let block = try Self.headerBlock(file, at: offset)
            if TarHeader.isZeroBlock(block) {
                if pending.headerOffset != nil {
                    throw KDCTError(.corrupt, "end-of-archive block at offset \(offset) right after an extended header",
                                    file: file.path, field: "tar header")
                }
                if offset == 0 { throw KDCTError(.invalidFormat, "starts with an empty block, not a tar archive", file: file.path) }
                if let note = try Self.trailingDataNote(file, endBlockAt: offset) { notes.append(note) }
                break walk
            }
            let header: TarHeader
            do {
                header = try TarHeader.decode(block, at: offset, file: file.path)
            } catch let error as KDCTError where error.code == .invalidFormat && offset > 0 {
                throw KDCTError(.corrupt, "tar header at archive offset \(offset) is damaged: \(error.message)",
                                file: file.path, field: "tar header")
            }
            let size = try header.kind.isMetadata ? header.size : pending.size(default: header.size, file: file.path, at: offset)
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
                try pending.record(header.kind, data: data, file: file.path, at: offset)
            case .gnuSparse:
                throw KDCTError(.unsupported, "member \"\(header.name)\" is a GNU sparse file; repack it without tar's --sparse",
                                file: file.path, field: header.name)
            default:
                let headerOffset = pending.headerOffset ?? offset
                let (name, linkName) = pending.names(for: header)
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
                pending = PendingExtendedHeaders()
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

    /// The 512-byte header block at `offset`; a block cut off by the end of the file is `truncated`.
    private static func headerBlock(_ file: ReadOnlyFile, at offset: UInt64) throws -> [UInt8] {
        var block = [UInt8](repeating: 0, count: TarHeader.blockSize)
        let got = try block.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: offset) }
        if got < TarHeader.blockSize {
            throw KDCTError(.truncated,
                            "tar header at archive offset \(offset) is cut off: the file ends after \(got) of its 512 bytes",
                            file: file.path, field: "tar header")
        }
        return block
    }

    /// A note when the zero block at `offset` (POSIX wants two) is followed by data, which is then ignored.
    private static func trailingDataNote(_ file: ReadOnlyFile, endBlockAt offset: UInt64) throws -> String? {
        let after = offset + UInt64(TarHeader.blockSize)
        guard after < file.size else { return nil }
        let tailCount = Int(min(file.size - after, UInt64(TarHeader.blockSize)))
        let next = try file.readBytes(count: tailCount, at: after, what: "end-of-archive block")
        return TarHeader.isZeroBlock(next) ? nil
            : "a single end-of-archive block at offset \(offset) is followed by data; the rest is ignored"
    }

    /// What pax extended headers and GNU long-name/long-link members said about the member that follows them
    /// (POSIX.1-2001 pax; GNU tar's `L`/`K` types).
    private struct PendingExtendedHeaders {
        /// pax records (`path`, `linkpath`, `size`, ...) in order.
        var pax: [(String, String)] = []
        /// A GNU long name (`L`).
        var longName: String?
        /// A GNU long link target (`K`).
        var longLink: String?
        /// Where the first of these headers starts: the member's header offset.
        var headerOffset: UInt64?

        /// Records the extended header of `kind` whose data is `data`, read at archive offset `offset`.
        mutating func record(_ kind: TarHeader.Kind, data: [UInt8], file: String, at offset: UInt64) throws {
            switch kind {
            case .paxExtended:
                pax += try PaxRecords.decode(data, file: file, at: offset)
                if pax.contains(where: { $0.0.hasPrefix("GNU.sparse.") }) {
                    throw KDCTError(.unsupported, "member after offset \(offset) is a GNU sparse file (pax GNU.sparse.*); repack it without tar's --sparse",
                                    file: file, field: "GNU.sparse")
                }
                headerOffset = headerOffset ?? offset
            case .paxGlobal:
                _ = try PaxRecords.decode(data, file: file, at: offset)  // validated, not applied
            case .gnuLongName:
                longName = TarHeader.string(data, 0, data.count)
                headerOffset = headerOffset ?? offset
            default:
                longLink = TarHeader.string(data, 0, data.count)
                headerOffset = headerOffset ?? offset
            }
        }

        /// The member's size: a pax `size` record overrides the header's (members of 8 GiB and more).
        func size(default headerSize: UInt64, file: String, at offset: UInt64) throws -> UInt64 {
            var size = headerSize
            for (key, value) in pax where key == "size" {
                guard let parsed = UInt64(value) else {
                    throw KDCTError(.corrupt, "pax size \"\(value)\" for the member at offset \(offset) is not a number",
                                    file: file, field: "pax size")
                }
                size = parsed
            }
            return size
        }

        /// The member's name and link target: pax records override GNU long names, which override the header's;
        /// leading `./` removed.
        func names(for header: TarHeader) -> (name: String, linkName: String) {
            var name = longName ?? header.name
            var linkName = longLink ?? header.linkName
            for (key, value) in pax {
                if key == "path" { name = value }
                if key == "linkpath" { linkName = value }
            }
            while name.hasPrefix("./") { name.removeFirst(2) }
            return (name, linkName)
        }
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
