#if canImport(Glibc)
import Glibc
#endif

/// The one error type of KDCTFormats: a small, stable `kind`, a human message, and where the problem is
/// (file, field, guest or file offset) plus the underlying errno or cause.
///
/// The `description` is a single line suitable for a CLI's stderr (naming the field in parentheses when the message
/// does not already), e.g.
/// `disk.vmdk: corrupt image: grain table entry 17 points past the end of the file (offset 0x12340000, file size 4096)`.
public struct KDCTError: Error, CustomStringConvertible, Sendable {
    /// The stable classification of an error. New kinds are added rarely; scripts may rely on `code`.
    public enum Kind: String, Sendable, CaseIterable {
        /// A system call failed (see `errno`).
        case io = "io"
        /// The file is not an image of the expected or any known format.
        case invalidFormat = "invalid-format"
        /// A valid image uses a feature this library refuses or does not implement.
        case unsupported = "unsupported"
        /// The image is internally inconsistent (pointers past end of file, overlapping tables, bad values).
        case corrupt = "corrupt"
        /// A checksum stored in the image does not match its content.
        case checksum = "checksum"
        /// The file ends before a structure it declares.
        case truncated = "truncated"
        /// A size or count read from the image exceeds a configured safety limit.
        case limitExceeded = "limit-exceeded"
        /// A reference to another file (backing file, extent, parent) was refused by the reference policy.
        case referenceRefused = "reference-refused"
        /// A file (the image itself or one it references) does not exist.
        case notFound = "not-found"
        /// A caller-supplied argument or option is invalid.
        case invalidArgument = "invalid-argument"
        /// The destination exists and overwriting was not requested.
        case alreadyExists = "already-exists"
        /// The operation was cancelled.
        case cancelled = "cancelled"
        /// A remote host's key is unknown, changed or revoked, so the connection was refused (KDCTExport).
        case hostKeyRefused = "host-key-refused"
        /// No authentication method was accepted by a remote host (KDCTExport).
        case authenticationFailed = "authentication-failed"
    }

    /// What kind of failure this is.
    public var kind: Kind
    /// A human-readable explanation, without the file name (that is in `file`).
    public var message: String
    /// The file the problem is in, as given by the user or as resolved from a reference.
    public var file: String?
    /// The on-disk field or structure involved (e.g. `l1_size`, `grain table entry 17`).
    public var field: String?
    /// The errno of a failed system call.
    public var errno: Int32?
    /// An underlying error, if this one wraps another.
    public var underlying: (any Error & Sendable)?

    /// Creates an error of `kind`.
    public init(_ kind: Kind, _ message: String, file: String? = nil, field: String? = nil,
                errno: Int32? = nil, underlying: (any Error & Sendable)? = nil) {
        self.kind = kind
        self.message = message
        self.file = file
        self.field = field
        self.errno = errno
        self.underlying = underlying
    }

    /// The stable code of `kind`, e.g. `corrupt`.
    public var code: String { kind.rawValue }

    public var description: String {
        var text = ""
        if let file { text += "\(file): " }
        text += "\(kind.humanName): \(message)"
        // The field or table entry is part of the one line a user sees, unless the message already names it.
        if let field, !field.isEmpty, !message.contains(field) { text += " (\(field))" }
        if let errno { text += " (\(String(cString: strerror(errno))))" }
        if let underlying { text += " [\(underlying)]" }
        return text
    }

    /// A copy of this error attributed to `file` when it does not yet name one.
    public func inFile(_ file: String) -> KDCTError {
        var copy = self
        if copy.file == nil { copy.file = file }
        return copy
    }

    // MARK: Convenience constructors used throughout the readers.

    /// `corrupt` error about `field`.
    public static func corrupt(_ message: String, file: String? = nil, field: String? = nil) -> KDCTError {
        KDCTError(.corrupt, message, file: file, field: field)
    }

    /// `invalidFormat` error about `field`.
    public static func invalidFormat(_ message: String, file: String? = nil, field: String? = nil) -> KDCTError {
        KDCTError(.invalidFormat, message, file: file, field: field)
    }

    /// `unsupported` error about `field`.
    public static func unsupported(_ message: String, file: String? = nil, field: String? = nil) -> KDCTError {
        KDCTError(.unsupported, message, file: file, field: field)
    }

    /// `limitExceeded` error: `field` holds `value`, above `limit`.
    public static func limit(_ field: String, value: UInt64, limit: UInt64, file: String? = nil) -> KDCTError {
        KDCTError(.limitExceeded, "\(field) is \(value), above the limit of \(limit)", file: file, field: field)
    }

    /// `io` error from a failed system call.
    public static func io(_ operation: String, errno: Int32, file: String? = nil) -> KDCTError {
        KDCTError(.io, "\(operation) failed", file: file, errno: errno)
    }
}

extension KDCTError.Kind {
    /// Words for the kind, used in `description`.
    public var humanName: String {
        switch self {
        case .io: return "I/O error"
        case .invalidFormat: return "invalid format"
        case .unsupported: return "unsupported"
        case .corrupt: return "corrupt image"
        case .checksum: return "checksum mismatch"
        case .truncated: return "truncated image"
        case .limitExceeded: return "limit exceeded"
        case .referenceRefused: return "reference refused"
        case .notFound: return "not found"
        case .invalidArgument: return "invalid argument"
        case .alreadyExists: return "already exists"
        case .cancelled: return "cancelled"
        case .hostKeyRefused: return "host key refused"
        case .authenticationFailed: return "authentication failed"
        }
    }
}
