import KDCTAppliance
import KDCTFormats

// The CLI's advice on what the libraries report. The libraries say what went wrong and where; only the CLI knows
// its flags, so it adds the one that changes the outcome, keyed on an error's stable code and field or a note's topic.

/// Advice on library errors.
extension KDCTError {
    /// The flag that changes the outcome and the words that say so, when one does.
    var commandLineHint: (flag: String, advice: String)? {
        switch code {
        case .alreadyExists:
            return ("--force", "use --force to replace it")
        case .referenceRefused where !message.contains("strict mode"):
            // Strict mode opens no reference whatever the policy, so the flag would not help there.
            return ("--references", "--references same-dir or any widens which referenced files are opened")
        case .notFound where field == "parent":
            return ("--parent", "give it with --parent FILE")
        case .checksum where field?.hasPrefix("manifest entry") == true:
            return ("--no-verify", "--no-verify converts anyway")
        case .invalidArgument where field == "qcow2.compress":
            return ("-c", "-c needs -O qcow2")
        case .unsupported where field == "outputFormat":
            return ("-O", "use -O raw or -O qcow2")
        case _ where field == "output format":
            return ("-O", "give -O raw or -O qcow2")
        case _ where field == "free space":
            return ("--no-space-check", "--no-space-check writes anyway")
        default:
            return nil
        }
    }

    /// The line the CLI prints: the error's description, then its hint in parentheses unless the line already
    /// names the flag.
    var commandLineDescription: String {
        let line = description
        guard let hint = commandLineHint else { return line }
        let words = line.split { !$0.isLetter && !$0.isNumber && $0 != "-" }
        return words.contains(Substring(hint.flag)) ? line : line + " (\(hint.advice))"
    }
}

/// Advice on appliance conversion notes.
extension ApplianceNote {
    /// The line the CLI prints after `note: `: the text, and the flags that change what it reports.
    var commandLineText: String {
        switch topic {
        case .windowsDeviceDefaults: return text + " (--disk-bus virtio --nic-model virtio)"
        case .manifestNotVerified: return text + " (--no-verify)"
        default: return text
        }
    }
}
