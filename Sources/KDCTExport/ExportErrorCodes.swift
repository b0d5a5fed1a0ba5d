import KDCTFormats

/// The error codes only an export raises, beside KDCTFormats' own (``KDCTError/Code``).
extension KDCTError.Code {
    /// A remote host's key is unknown, changed or revoked, so the connection was refused.
    public static let hostKeyRefused = KDCTError.Code("host-key-refused", summary: "host key refused")
    /// No authentication method was accepted by the remote host.
    public static let authenticationFailed = KDCTError.Code("authentication-failed", summary: "authentication failed")
}
