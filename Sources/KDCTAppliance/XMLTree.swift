import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import KDCTFormats

/// A small read-only XML element tree built with `XMLParser` (namespace-aware), enough to walk an OVF
/// descriptor by local names.
///
/// Hardening: documents with a DTD (`<!DOCTYPE`, `<!ENTITY`) are refused before parsing, so no external or
/// recursive entity is ever expanded; depth and element count are bounded.
final class XMLTreeElement: @unchecked Sendable {
    // @unchecked: `children` and `text` are set only by the parser that builds the tree, before `XMLTree.parse`
    // returns it; from then on the tree is immutable, which the compiler cannot see through `fileprivate(set)`.
    /// Local name (without prefix).
    let name: String
    /// Namespace URI, when the element is in one.
    let namespace: String?
    /// Attributes by qualified name as written (`ovf:id`, `vmw:osType`).
    let attributes: [String: String]
    /// Child elements in document order.
    fileprivate(set) var children: [XMLTreeElement] = []
    /// Concatenated character data directly inside this element.
    fileprivate(set) var text: String = ""

    init(name: String, namespace: String?, attributes: [String: String]) {
        self.name = name
        self.namespace = namespace
        self.attributes = attributes
    }

    /// The attribute whose local name (after any prefix) is `localName`; a prefixed one is preferred over an
    /// unprefixed one when both exist, and `prefix` (e.g. `vmw`) picks among several prefixes.
    func attribute(_ localName: String, prefix: String? = nil) -> String? {
        if let prefix, let value = attributes[prefix + ":" + localName] { return value }
        if prefix != nil { return nil }
        if let value = attributes.first(where: { $0.key.hasSuffix(":" + localName) })?.value { return value }
        return attributes[localName]
    }

    /// Direct children called `localName`.
    func children(_ localName: String) -> [XMLTreeElement] {
        children.filter { $0.name == localName }
    }

    /// The first direct child called `localName`.
    func child(_ localName: String) -> XMLTreeElement? {
        children.first { $0.name == localName }
    }

    /// Trimmed text of the first direct child called `localName`.
    func childText(_ localName: String) -> String? {
        child(localName).map { $0.trimmedText }
    }

    /// Every descendant called `localName`, depth first.
    func descendants(_ localName: String) -> [XMLTreeElement] {
        var found: [XMLTreeElement] = []
        var stack: [XMLTreeElement] = children.reversed()
        while let element = stack.popLast() {
            if element.name == localName { found.append(element) }
            stack.append(contentsOf: element.children.reversed())
        }
        return found
    }

    /// Text without surrounding white space.
    var trimmedText: String { text.trimmingCharacters(in: .whitespacesAndNewlines) }
}

/// Parses XML bytes into an `XMLTreeElement` tree.
enum XMLTree {
    /// Deepest nesting accepted.
    static let maxDepth = 64
    /// Most elements accepted.
    static let maxElements = 200_000

    /// Parses `bytes` (a descriptor read from `file`); throws `invalidFormat` naming the line on malformed XML.
    static func parse(_ bytes: [UInt8], file: String? = nil) throws -> XMLTreeElement {
        if containsDTD(bytes) {
            throw KDCTError(.unsupported, "the XML holds a DTD (<!DOCTYPE or <!ENTITY); refused so no entity is expanded",
                            file: file, field: "DOCTYPE")
        }
        // Foundation's XMLParser traps (the process dies) on names that are not valid UTF-8, which libxml2 passes
        // through from a document it takes as UTF-8 (found by the OVA fuzz harness). So a descriptor without a
        // byte-order mark must be valid UTF-8, unless its XML declaration names another encoding (libxml2 then
        // transcodes it to valid UTF-8 itself).
        if !hasByteOrderMark(bytes), !declaresOtherEncoding(bytes), let offset = invalidUTF8Offset(bytes) {
            throw KDCTError(.invalidFormat, "the XML is not valid UTF-8 (byte offset \(offset)) and declares no other encoding",
                            file: file, field: "XML encoding")
        }
        let parser = XMLParser(data: Data(bytes))
        parser.shouldProcessNamespaces = true
        parser.shouldReportNamespacePrefixes = false
        parser.shouldResolveExternalEntities = false
        let builder = Builder()
        parser.delegate = builder
        let ok = parser.parse()
        if let limitError = builder.limitError { throw limitError.inFile(file ?? "") }
        guard ok, let root = builder.root else {
            let line = parser.lineNumber
            let reason = parser.parserError.map { "\($0.localizedDescription)" } ?? "no root element"
            throw KDCTError(.invalidFormat, "not well-formed XML near line \(line): \(reason)", file: file, field: "XML")
        }
        return root
    }

    /// True when the bytes start with a UTF-16 or UTF-32 byte-order mark (libxml2 transcodes those).
    static func hasByteOrderMark(_ bytes: [UInt8]) -> Bool {
        bytes.starts(with: [0xFF, 0xFE]) || bytes.starts(with: [0xFE, 0xFF]) || bytes.starts(with: [0, 0, 0xFE, 0xFF])
    }

    /// True when the XML declaration names an encoding other than UTF-8 (`<?xml ... encoding="ISO-8859-1"?>`).
    static func declaresOtherEncoding(_ bytes: [UInt8]) -> Bool {
        let head = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? Array(bytes.dropFirst(3).prefix(256)) : Array(bytes.prefix(256))
        guard head.starts(with: Array("<?xml".utf8)), let end = head.firstIndex(of: UInt8(ascii: ">")) else { return false }
        let declaration = String(decoding: head[..<end], as: UTF8.self).lowercased()
        guard let range = declaration.range(of: "encoding=") else { return false }
        let value = declaration[range.upperBound...].dropFirst().prefix { $0 != "\"" && $0 != "'" }
        return !value.isEmpty && value != "utf-8" && value != "utf8"
    }

    /// The byte offset of the first invalid UTF-8 sequence, or nil when `bytes` is valid UTF-8.
    static func invalidUTF8Offset(_ bytes: [UInt8]) -> Int? {
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case let .valid(scalar): offset += scalar.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    /// True when the bytes declare a DTD or entities. Checked on the raw bytes with NULs dropped and ASCII
    /// upper-cased, so neither a UTF-16 encoding nor letter case hides one.
    static func containsDTD(_ bytes: [UInt8]) -> Bool {
        let folded = bytes.lazy.filter { $0 != 0 }.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
        let text = Array(folded)
        for pattern in [Array("<!DOCTYPE".utf8), Array("<!ENTITY".utf8)] where text.count >= pattern.count {
            for index in 0...(text.count - pattern.count) where text[index] == pattern[0] {
                if text[index..<(index + pattern.count)].elementsEqual(pattern) { return true }
            }
        }
        return false
    }

    private final class Builder: NSObject, XMLParserDelegate {
        var root: XMLTreeElement?
        var stack: [XMLTreeElement] = []
        var count = 0
        var limitError: KDCTError?

        func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?, attributes attributeDict: [String: String] = [:]) {
            count += 1
            if stack.count >= XMLTree.maxDepth || count > XMLTree.maxElements {
                limitError = stack.count >= XMLTree.maxDepth
                    ? KDCTError.limit("XML nesting depth", value: UInt64(stack.count + 1), limit: UInt64(XMLTree.maxDepth))
                    : KDCTError.limit("XML element count", value: UInt64(count), limit: UInt64(XMLTree.maxElements))
                parser.abortParsing()
                return
            }
            var local = elementName
            if let colon = local.lastIndex(of: ":") { local = String(local[local.index(after: colon)...]) }
            let element = XMLTreeElement(name: local, namespace: namespaceURI?.isEmpty == false ? namespaceURI : nil,
                                     attributes: attributeDict)
            if let parent = stack.last { parent.children.append(element) } else if root == nil { root = element }
            stack.append(element)
        }

        func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?,
                    qualifiedName qName: String?) {
            _ = stack.popLast()
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            stack.last?.text += string
        }

        func parser(_ parser: XMLParser, foundCDATA CDATABlock: Data) {
            stack.last?.text += String(decoding: CDATABlock, as: UTF8.self)
        }
    }
}
