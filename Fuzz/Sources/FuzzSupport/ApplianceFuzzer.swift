import KDCTAppliance
import KDCTFormats

/// The OVA/OVF harness: the input bytes as an appliance (a tar archive or an OVF descriptor), opened in strict
/// mode and with references refused; its description rendered, every disk opened and walked as `ImageFuzzer`
/// does, and the manifest verified. Same invariants: only `KDCTError`, no trap, no sanitizer report.
public enum ApplianceFuzzer {
    /// Runs one input; returns 0 (libFuzzer's convention).
    public static func run(data: UnsafePointer<UInt8>?, size: Int) -> Int32 {
        guard let data else { return 0 }
        ImageFuzzer.writeInput(UnsafeRawBufferPointer(start: data, count: size))
        for untrusted in [true, false] {
            var options = ApplianceOptions()
            options.referencePolicy = .none
            options.untrusted = untrusted
            do {
                let appliance = try Appliance(path: ImageFuzzer.path, options: options)
                _ = appliance.infoValue.jsonText()
                for disk in appliance.machine.disks {
                    do {
                        let opened = try appliance.openDisk(disk)
                        _ = opened.device.info.infoValue.jsonText()
                        try ImageFuzzer.walk(opened.device)
                    } catch is KDCTError {
                    }
                }
                if !untrusted { _ = try appliance.verifyManifest() }
            } catch is KDCTError {
            } catch {
                fatalError("appliance threw a non-KDCTError: \(error)")
            }
        }
        return 0
    }
}
