import KDCTFormats

/// OVF allocation units (DMTF DSP0004 "programmatic units", as used by `rasd:AllocationUnits` and
/// `ovf:capacityAllocationUnits`): `byte`, `byte * 2^20`, `byte * 10^9`, `byte * 1024`, and the older names
/// `KiloBytes`, `MegaBytes`, `GigaBytes`, `TeraBytes` that VMware and VirtualBox wrote as powers of 1024.
enum OVFUnits {
    /// Bytes per unit, or nil when `units` is not a byte unit this parser understands.
    static func byteMultiplier(_ units: String) -> UInt64? {
        let compact = units.lowercased().filter { !$0.isWhitespace }
        let named: [String: UInt64] = [
            "byte": 1, "bytes": 1, "b": 1,
            "kilobyte": 1 << 10, "kilobytes": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
            "megabyte": 1 << 20, "megabytes": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
            "gigabyte": 1 << 30, "gigabytes": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
            "terabyte": 1 << 40, "terabytes": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
        ]
        var factors = compact.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
        guard let base = factors.first, let baseValue = named[base] else { return nil }
        factors.removeFirst()
        var result = baseValue
        for factor in factors {
            let value: UInt64
            if let caret = factor.firstIndex(of: "^") {
                guard let radix = UInt64(factor[..<caret]), let exponent = Int(factor[factor.index(after: caret)...]),
                      radix >= 2, exponent >= 0, exponent <= 64 else { return nil }
                var power: UInt64 = 1
                for _ in 0..<exponent {
                    let (next, overflow) = power.multipliedReportingOverflow(by: radix)
                    if overflow { return nil }
                    power = next
                }
                value = power
            } else {
                guard let plain = UInt64(factor), plain > 0 else { return nil }
                value = plain
            }
            let (next, overflow) = result.multipliedReportingOverflow(by: value)
            if overflow { return nil }
            result = next
        }
        return result
    }

    /// `quantity` (a decimal integer) times `units` in bytes; nil when either does not parse or the product
    /// overflows.
    static func bytes(quantity: String, units: String) -> UInt64? {
        guard let count = UInt64(quantity.trimmingWhitespace), let multiplier = byteMultiplier(units) else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}

extension StringProtocol {
    /// The string without leading and trailing white space (no Foundation needed).
    var trimmingWhitespace: String {
        var view = Substring(self)
        while let first = view.first, first.isWhitespace { view.removeFirst() }
        while let last = view.last, last.isWhitespace { view.removeLast() }
        return String(view)
    }
}
