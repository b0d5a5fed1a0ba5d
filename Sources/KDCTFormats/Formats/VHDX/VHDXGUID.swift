/// A GUID as VHDX stores it: 16 bytes, the first three fields little-endian ([MS-VHDX] 2.1, "GUID").
struct VHDXGUID: Sendable, Hashable, CustomStringConvertible {
    /// The 16 bytes as stored.
    let bytes: [UInt8]

    /// Wraps 16 stored bytes.
    init(bytes: [UInt8]) { self.bytes = bytes }

    /// Parses the text form `2DC27766-F623-4200-9D64-115E9BFD4A08` (braces allowed) into the stored layout;
    /// nil when it is not a GUID.
    init?(_ text: String) {
        let hex = text.filter { $0 != "-" && $0 != "{" && $0 != "}" }
        guard hex.count == 32 else { return nil }
        var raw: [UInt8] = []
        var index = hex.startIndex
        for _ in 0..<16 {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            raw.append(byte)
            index = next
        }
        bytes = [raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]] + raw[8..<16]
    }

    /// The all-zero GUID.
    static let zero = VHDXGUID(bytes: [UInt8](repeating: 0, count: 16))

    /// True for the all-zero GUID.
    var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Lower-case text form without braces.
    var description: String {
        (try? ByteReader(bytes, structure: "GUID").guid(0)) ?? bytes.map { String($0, radix: 16) }.joined()
    }

    /// Reads a GUID at `offset` of `reader`.
    static func read(_ reader: ByteReader, _ offset: Int) throws -> VHDXGUID {
        VHDXGUID(bytes: try reader.slice(offset, 16))
    }

    // Known identifiers ([MS-VHDX] 2.2.3.2, 2.6.2, 2.6.2.6.3). (Literals; a test checks none fell back to zero.)
    /// Region: block allocation table.
    static let batRegion = VHDXGUID("2DC27766-F623-4200-9D64-115E9BFD4A08") ?? .zero
    /// Region: metadata.
    static let metadataRegion = VHDXGUID("8B7CA206-4790-4B9A-B8FE-575F050F886E") ?? .zero
    /// Metadata item: file parameters.
    static let fileParameters = VHDXGUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B") ?? .zero
    /// Metadata item: virtual disk size.
    static let virtualDiskSize = VHDXGUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8") ?? .zero
    /// Metadata item: virtual disk id (SCSI page 83 data).
    static let virtualDiskID = VHDXGUID("BECA12AB-B2E6-4523-93EF-C309E000C746") ?? .zero
    /// Metadata item: logical sector size.
    static let logicalSectorSize = VHDXGUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F") ?? .zero
    /// Metadata item: physical sector size.
    static let physicalSectorSize = VHDXGUID("CDA348C7-445D-4471-9CC9-E9885251C556") ?? .zero
    /// Metadata item: parent locator.
    static let parentLocator = VHDXGUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C") ?? .zero
    /// Parent locator type: a VHDX parent.
    static let vhdxParentLocatorType = VHDXGUID("B04AEFB7-D19E-4A81-B789-25B8E9445913") ?? .zero
}
