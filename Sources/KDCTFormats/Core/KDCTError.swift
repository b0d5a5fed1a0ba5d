#if canImport(Glibc)
import Glibc
#endif

/// The one error type of the KDCT libraries: a small, stable ``Code``, a human message, where the problem is
/// (file, field, guest offset, file offset), the images that led to that file, and the underlying errno or cause.
///
/// Programs decide on ``code`` (compare it with `==`: `error.code == .corrupt`) and show ``description``, a single
/// line for a log or stderr that names the file, the field and the value, e.g.
/// `disk.vmdk: corrupt image: grain table entry 17 points past the end of the file (offset 0x12340000, file size 4096)`.
///
/// Library messages never mention command-line flags; a front end adds its own advice from the code and location
/// (the `kdct-native` CLI appends "use --force to replace it" to ``Code/alreadyExists``, for example).
public struct KDCTError: Error, CustomStringConvertible, Sendable {
    /// The stable classification of an error: what a program may switch on.
    ///
    /// A struct rather than an enum so that new codes (and codes defined by other modules of the package, such as
    /// KDCTExport's `hostKeyRefused`) never break a caller's exhaustive `switch`; compare codes with `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        /// The stable identifier, e.g. `corrupt` or `limit-exceeded`; scripts and JSON output may rely on it.
        public let rawValue: String
        /// Words for the code in ``KDCTError/description``, e.g. `corrupt image`.
        public let summary: String

        /// A code with identifier `rawValue`, shown as `summary`. Codes are equal when their identifiers are.
        package init(_ rawValue: String, summary: String) {
            self.rawValue = rawValue
            self.summary = summary
        }

        public static func == (lhs: Code, rhs: Code) -> Bool { lhs.rawValue == rhs.rawValue }
        public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }
        /// The identifier.
        public var description: String { rawValue }

        /// A system call failed (see ``KDCTError/errno``).
        public static let io = Code("io", summary: "I/O error")
        /// The file is not an image of the expected or any known format.
        public static let invalidFormat = Code("invalid-format", summary: "invalid format")
        /// A valid image uses a feature the library refuses or does not implement.
        public static let unsupported = Code("unsupported", summary: "unsupported")
        /// The image is internally inconsistent (pointers past end of file, overlapping tables, bad values).
        public static let corrupt = Code("corrupt", summary: "corrupt image")
        /// A checksum stored in the image does not match its content.
        public static let checksum = Code("checksum", summary: "checksum mismatch")
        /// The file ends before a structure it declares.
        public static let truncated = Code("truncated", summary: "truncated image")
        /// A size or count read from the image exceeds a configured safety limit (``ImageLimits``).
        public static let limitExceeded = Code("limit-exceeded", summary: "limit exceeded")
        /// A reference to another file (backing file, extent, parent) was refused by the ``ReferencePolicy``.
        public static let referenceRefused = Code("reference-refused", summary: "reference refused")
        /// A file (the image itself or one it references) does not exist.
        public static let notFound = Code("not-found", summary: "not found")
        /// A caller-supplied argument or option is invalid.
        public static let invalidArgument = Code("invalid-argument", summary: "invalid argument")
        /// The destination exists and overwriting was not requested.
        public static let alreadyExists = Code("already-exists", summary: "already exists")
        /// The operation was cancelled.
        public static let cancelled = Code("cancelled", summary: "cancelled")
    }

    /// An image that named the file at fault: the file is its backing file, parent, extent or data file.
    public struct Referrer: Sendable, Equatable {
        /// The role the file at fault plays for `image`.
        public var role: ImageReference.Kind
        /// The referring image, as it was opened.
        public var image: String

        /// A referrer: `image` names the file at fault as its `role`.
        public init(role: ImageReference.Kind, image: String) {
            self.role = role
            self.image = image
        }
    }

    /// What kind of failure this is.
    public var code: Code
    /// A human-readable explanation. It does not repeat the file, the location fields or the referrers, which
    /// ``description`` adds.
    public var message: String
    /// The file the problem is in, as given by the user or as resolved from a reference.
    public var file: String?
    /// The on-disk field or structure involved (e.g. `l1_size`, `grain table entry 17`).
    public var field: String?
    /// The guest (virtual disk) offset whose mapping or data failed, when the error arose reading one.
    public var guestOffset: UInt64?
    /// The offset in ``file`` of the structure or data at fault.
    public var hostOffset: UInt64?
    /// The images that led to ``file``, nearest first: a broken backing file's error lists the image naming it, and
    /// that image's own referrer after it.
    public var referrers: [Referrer]
    /// The errno of a failed system call.
    public var errno: Int32?
    /// The error this one reports in the library's terms, if any.
    public var cause: (any Error)?

    /// Creates an error with `code` and `message` at a location.
    public init(_ code: Code, _ message: String, file: String? = nil, field: String? = nil,
                guestOffset: UInt64? = nil, hostOffset: UInt64? = nil, errno: Int32? = nil, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.file = file
        self.field = field
        self.guestOffset = guestOffset
        self.hostOffset = hostOffset
        self.referrers = []
        self.errno = errno
        self.cause = cause
    }

    /// One line: `file: summary: message at guest offset G at file offset H (role of image)... (field) (strerror)
    /// (cause)`, leaving out what is unknown. The field is left out when the message already names it.
    public var description: String {
        var text = ""
        if let file { text += "\(file): " }
        text += "\(code.summary): \(message)"
        if let guestOffset { text += " at guest offset \(guestOffset)" }
        if let hostOffset { text += " at file offset 0x\(String(hostOffset, radix: 16))" }
        for referrer in referrers { text += " (\(referrer.role.rawValue) of \(referrer.image))" }
        if let field, !field.isEmpty, !message.contains(field) { text += " (\(field))" }
        if let errno { text += " (\(String(cString: strerror(errno))))" }
        if let cause { text += " (\(cause))" }
        return text
    }

    /// A copy of this error attributed to `file` when it does not yet name one.
    public func inFile(_ file: String) -> KDCTError {
        var copy = self
        if copy.file == nil { copy.file = file }
        return copy
    }

    /// A copy of this error noting that `image` named the file at fault as its `role` (appended after the
    /// referrers already noted, which are nearer to the file).
    public func referred(by image: String, as role: ImageReference.Kind) -> KDCTError {
        var copy = self
        copy.referrers.append(Referrer(role: role, image: image))
        return copy
    }

    // MARK: Convenience constructors used throughout the readers.

    /// A ``Code/corrupt`` error about `field`.
    public static func corrupt(_ message: String, file: String? = nil, field: String? = nil) -> KDCTError {
        KDCTError(.corrupt, message, file: file, field: field)
    }

    /// An ``Code/invalidFormat`` error about `field`.
    public static func invalidFormat(_ message: String, file: String? = nil, field: String? = nil) -> KDCTError {
        KDCTError(.invalidFormat, message, file: file, field: field)
    }

    /// An ``Code/unsupported`` error about `field`.
    public static func unsupported(_ message: String, file: String? = nil, field: String? = nil) -> KDCTError {
        KDCTError(.unsupported, message, file: file, field: field)
    }

    /// A ``Code/limitExceeded`` error: `field` holds `value`, above `limit`.
    public static func limit(_ field: String, value: UInt64, limit: UInt64, file: String? = nil) -> KDCTError {
        KDCTError(.limitExceeded, "\(field) is \(value), above the limit of \(limit)", file: file, field: field)
    }

    /// An ``Code/io`` error from a failed system call.
    public static func io(_ operation: String, errno: Int32, file: String? = nil) -> KDCTError {
        KDCTError(.io, "\(operation) failed", file: file, errno: errno)
    }
}
