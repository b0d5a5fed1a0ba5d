/// The fields of a JSON request object, read with precise 400s: an unknown field (a typo such as
/// `outputformat`), a missing one or a wrong type is named in the answer instead of being ignored.
struct RequestFields {
    private let fields: [String: JSONValue]

    /// Checks that `value` is an object whose keys are all in `allowed`.
    init(_ value: JSONValue, allowed: Set<String>) throws(Problem) {
        guard case let .object(pairs) = value else { throw .badRequest("the request body must be a JSON object") }
        var fields: [String: JSONValue] = [:]
        for (key, value) in pairs {
            guard allowed.contains(key) else {
                throw .badRequest("unknown field \"\(key)\" (expected one of: \(allowed.sorted().joined(separator: ", ")))",
                                  field: key)
            }
            fields[key] = value
        }
        self.fields = fields
    }

    /// Parses `body` as a JSON object with the `allowed` keys; an empty body is an empty object.
    init(body: [UInt8], allowed: Set<String>) throws(Problem) {
        let value: JSONValue
        do {
            value = body.allSatisfy({ [0x20, 0x09, 0x0A, 0x0D].contains($0) }) ? .object([]) : try JSONValue.parse(body)
        } catch {
            throw .badRequest("the request body is not JSON: \(error)")
        }
        try self.init(value, allowed: allowed)
    }

    /// True when the request sets `key` (to anything but null).
    func has(_ key: String) -> Bool {
        if let value = fields[key], value != .null { return true }
        return false
    }

    /// A required string.
    func string(_ key: String) throws(Problem) -> String {
        guard let value = try optionalString(key) else { throw .badRequest("\"\(key)\" is required", field: key) }
        return value
    }

    /// An optional string (null counts as absent).
    func optionalString(_ key: String) throws(Problem) -> String? {
        switch fields[key] {
        case nil, .null?: return nil
        case let .string(text)?: return text
        default: throw .badRequest("\"\(key)\" must be a string", field: key)
        }
    }

    /// An optional string that must be one of `choices`.
    func choice(_ key: String, _ choices: [String]) throws(Problem) -> String? {
        guard let value = try optionalString(key) else { return nil }
        guard choices.contains(value) else {
            throw .badRequest("\"\(key)\" must be one of \(choices.joined(separator: ", ")), not \"\(value)\"", field: key)
        }
        return value
    }

    /// An optional boolean with a default.
    func bool(_ key: String, default defaultValue: Bool) throws(Problem) -> Bool {
        switch fields[key] {
        case nil, .null?: return defaultValue
        case let .bool(flag)?: return flag
        default: throw .badRequest("\"\(key)\" must be true or false", field: key)
        }
    }

    /// An optional integer within `range`.
    func integer(_ key: String, in range: ClosedRange<Int>) throws(Problem) -> Int? {
        let value: Int
        switch fields[key] {
        case nil, .null?: return nil
        case let .int(number)?: value = Int(number)
        case let .uint(number)? where number <= UInt64(Int.max): value = Int(number)
        case let .double(number)? where number == number.rounded() && abs(number) < 1e15: value = Int(number)
        default: throw .badRequest("\"\(key)\" must be an integer", field: key)
        }
        guard range.contains(value) else {
            throw .badRequest("\"\(key)\" must be between \(range.lowerBound) and \(range.upperBound), not \(value)", field: key)
        }
        return value
    }

    /// An optional array of strings (at most `limit`).
    func strings(_ key: String, limit: Int) throws(Problem) -> [String] {
        switch fields[key] {
        case nil, .null?: return []
        case let .array(items)?:
            guard items.count <= limit else { throw .badRequest("\"\(key)\" has more than \(limit) entries", field: key) }
            var result: [String] = []
            for item in items {
                guard case let .string(text) = item else {
                    throw .badRequest("\"\(key)\" must be a list of strings", field: key)
                }
                result.append(text)
            }
            return result
        default:
            throw .badRequest("\"\(key)\" must be a list of strings", field: key)
        }
    }
}
