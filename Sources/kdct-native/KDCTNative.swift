import ArgumentParser
import KDCTFormats
#if canImport(Glibc)
import Glibc
#endif

/// `kdct-native`: read other hypervisors' disks, write RAW and QCOW2, ship them to the KVM host.
@main
struct KDCTNative: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kdct-native",
        abstract: "Convert VirtualBox, VMware and Hyper-V disks for KVM, without qemu.",
        version: "kdct-native version \(kdctVersion)",
        subcommands: [Info.self, Convert.self, Measure.self, Map.self, Compare.self, Check.self, Checksum.self,
                      Formats.self, Export.self, Serve.self]
    )

    /// Parses, runs, and maps every failure to one stderr line and an exit status (1, or the command's own).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let status as CommandExit {
            Console.exit(status.code)
        } catch let error as KDCTError {
            Console.error("kdct-native: \(error.commandLineDescription)\n")
            Console.exit(exitStatus(for: error))
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Console.exit(0)
            }
            Console.error(fullMessage(for: error) + "\n")
            Console.exit(code.rawValue == 0 ? 0 : 1)
        }
    }
}

/// The version `--version` prints.
let kdctVersion = "0.1.0"

/// The exit status for an error that ends a command: 130 or 143 for a cancellation by SIGINT or SIGTERM, else 1.
func exitStatus(for error: any Error) -> Int32 {
    Interruption.requested ? Interruption.exitStatus : 1
}

/// Ends a command with a specific exit status after it printed what it had to (e.g. compare's 1 and 2).
struct CommandExit: Error {
    var code: Int32
}
