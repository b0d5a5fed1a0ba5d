import ArgumentParser
import KDCTFormats

/// `check`: structural consistency of an image of any format, with qemu-img check's output, JSON keys and exit
/// statuses; `-r` repairs QCOW2 leaks.
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an image's metadata, any format: refcounts and leaks (qcow2), tables, block maps, BATs, grain tables (exit 0 clean, 1 the check could not complete, 2 corrupt, 3 leaks only).",
        discussion: """
            Each problem is printed on stderr (ERROR ..., Leaked cluster ...), the summary on stdout (--output json:
            qemu-img check's keys). -r leaks (or -r all) lowers qcow2 refcounts that are above their references, in a
            copy that replaces the image once complete; it refuses other formats, an image with corruptions and an
            image another process (a running VM) holds.
            """)

    @OptionGroup var source: SourceOptions

    @Option(help: "Output style: human or json (qemu-img's keys).")
    var output: OutputStyle = .human

    @Option(name: .customShort("r"), help: ArgumentHelp("Repair: leaks (qcow2 leaked clusters), or all (the same: only leaks are ever repaired).", valueName: "leaks|all"))
    var repair: RepairMode?

    @Flag(name: .customShort("q"), help: "Quiet: print nothing but errors; the exit status tells the result.")
    var quiet = false

    @Argument(help: "The image.")
    var image: String

    func run() throws {
        let report = try repair == nil ? ImageChecker.check(image, options: source.openOptions)
                                       : ImageChecker.repairLeaks(image, options: source.openOptions)
        if !quiet {
            for line in report.messages { Console.error(line + "\n") }
            for note in report.notes { Console.error("note: \(note)\n") }
            switch output {
            case .human:
                if report.leaksFixed > 0 || report.corruptionsFixed > 0 {
                    print("The following inconsistencies were found and repaired:\n\n    \(report.leaksFixed) leaked clusters\n    \(report.corruptionsFixed) corruptions\n\nDouble checking the fixed image now...")
                }
                print(report.humanText, terminator: "")
            case .json:
                print(report.jsonValue.jsonText())
            }
        }
        if report.exitStatus != 0 { throw CommandExit(code: report.exitStatus) }
    }
}

/// `check -r`: what to repair.
enum RepairMode: String, ExpressibleByArgument, CaseIterable {
    case leaks, all
}
