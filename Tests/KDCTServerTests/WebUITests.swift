import Foundation
import KDCTFormats
import KDCTServer
import KDCTTestSupport
import Testing

/// The web app in a real headless browser: Debian's chromium and chromium-driver driven by selenium (PyPI)
/// through Tests/WebUI/webui_e2e.py, against `kdct-native serve` on a loopback port with a root of fixtures and
/// the test sshd. The script works through the pages only; this test prepares the fixtures and checks what the
/// pages produced with qemu-img (compare and check), libvirt's validator and the files on the "host".
///
/// Screenshots go to $KDCT_WEBUI_ARTIFACTS (default /tmp/kdct-webui-artifacts), outside the repository; with
/// KDCT_UPDATE_SCREENSHOTS=1 they also replace docs/screenshots/ (the ones README.md shows).
@Suite(.serialized) struct WebUITests {
    /// The QCOW2 header's compression type is `type`, as qemu-img info reads it.
    func expectCompression(_ path: String, _ type: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let info = try qemuImg("info", "--output", "json", path).stdout
        #expect(info.contains("\"compression-type\": \"\(type)\""), "\(path): \(info)", sourceLocation: sourceLocation)
    }

    static let artifacts = ProcessInfo.processInfo.environment["KDCT_WEBUI_ARTIFACTS"] ?? "/tmp/kdct-webui-artifacts"

    @Test func browserEndToEnd() throws {
        let sshd = try TestSSHServer(passwordAuthentication: true)
        let fixture = try ServeFixture("kdct-webui")
        let images = fixture.path("images")
        let converted = fixture.path("converted")
        for folder in [images, converted] { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }

        // A 256 MiB VMDK, three quarters random data (so converting it takes long enough to watch the bar move).
        let raw = fixture.directory.file("debian12.raw")
        let made = try runProcess(["dd", "if=/dev/urandom", "of=\(raw)", "bs=1M", "count=192", "status=none"])
        #expect(made.status == 0, "\(made.stderr)")
        #expect(truncate(raw, 256 << 20) == 0)
        let vmdk = images + "/debian12.vmdk"
        _ = try qemuImg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse", raw, vmdk)
        let producer = try ImageOpener.inspect(vmdk).producer ?? ""
        #expect(producer.contains("qemu-img"), "the VMDK's producer: \(producer)")

        // An OVA of a stream-optimized disk, as VMware exports them.
        var builder = ApplianceBuilder(dir: fixture.directory)
        builder.name = "webserver"
        let disk = fixture.directory.file("disk1.vmdk")
        try FileManager.default.copyItem(atPath: Fixtures.path("pattern-stream.vmdk"), toPath: disk)
        _ = try builder.ova(disks: [disk], uris: ["http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"],
                            fileName: "root/images/webserver.ova")

        // More formats for the listing, a child whose parent is missing (renamed, in another folder), a file that is no image, and a large raw
        // disk of random data for the job that is cancelled.
        try FileManager.default.copyItem(atPath: Fixtures.path("pattern.vhdx"), toPath: images + "/pattern.vhdx")
        try FileManager.default.copyItem(atPath: Fixtures.path("pattern.vdi"), toPath: images + "/pattern.vdi")
        try FileManager.default.copyItem(atPath: Fixtures.path("chain-child.qcow2"), toPath: images + "/orphan-child.qcow2")
        try "Disks exported from the old hypervisor.\n".write(toFile: images + "/README.txt", atomically: true, encoding: .utf8)
        try writeRandomData(images + "/large.raw", megabytes: 768)

        // From the corpus: a VirtualBox snapshot whose parent (found by UUID) is in another folder, and a dirty VHDX.
        var snapshot: (child: String, parent: String)?
        if let corpus = Corpus.load() {
            let folder = corpus.directory + "/bwlp-master-sync-shared/"
            for sub in ["snapshots", "base-images"] {
                try FileManager.default.createDirectory(atPath: fixture.path(sub), withIntermediateDirectories: true)
            }
            try FileManager.default.copyItem(atPath: folder + "image-default_snapshot.vdi", toPath: fixture.path("snapshots/vm-snapshot.vdi"))
            try FileManager.default.copyItem(atPath: folder + "image-default.vdi", toPath: fixture.path("base-images/vm-base.vdi"))
            snapshot = ("vm-snapshot.vdi", "vm-base.vdi")
            // A Hyper-V VHDX closed with entries in its log (replayed in memory when read).
            try FileManager.default.copyItem(atPath: corpus.directory + "/discutils/vhdx-log-replay.vhdx",
                                             toPath: fixture.path("snapshots/hyperv-dirty.vhdx"))
        }

        // The test sshd's client key, for "Key file" (a key file must be inside the roots too).
        try FileManager.default.createDirectory(atPath: fixture.path("keys"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: sshd.clientKey, toPath: fixture.path("keys/id_ed25519"))
        chmod(fixture.path("keys/id_ed25519"), 0o600)

        let results = fixture.directory.file("results.json")
        try FileManager.default.createDirectory(atPath: Self.artifacts, withIntermediateDirectories: true)
        var environment = ProcessInfo.processInfo.environment
        environment["KDCT_BINARY"] = CLI.binary
        environment["KDCT_ROOT"] = fixture.root
        environment["KDCT_STATE"] = fixture.state
        environment["KDCT_KNOWN_HOSTS"] = fixture.directory.file("known_hosts")
        environment["KDCT_SSH_PORT"] = String(sshd.port)
        environment["KDCT_SSH_USER"] = TestSSHServer.user
        environment["KDCT_SSH_PASSWORD"] = sshd.password
        environment["KDCT_SSH_REMOTE_DIR"] = sshd.remoteDirectory
        environment["KDCT_SSH_FINGERPRINT"] = try sshd.hostKeyFingerprint()
        environment["KDCT_VMDK_PRODUCER"] = producer
        if let snapshot {
            environment["KDCT_VDI_SNAPSHOT"] = snapshot.child
            environment["KDCT_VDI_PARENT"] = snapshot.parent
        }
        environment["KDCT_ARTIFACTS"] = Self.artifacts
        environment["KDCT_RESULTS"] = results
        if environment["KDCT_UPDATE_SCREENSHOTS"] == "1" {
            environment["KDCT_DOCS_SCREENSHOTS"] = packageRoot.appendingPathComponent("docs/screenshots").path
        }
        let script = packageRoot.appendingPathComponent("Tests/WebUI/webui_e2e.py").path
        let run = try runProcess(["python3", script], environment: environment)
        try? (run.stdout + run.stderr).write(toFile: Self.artifacts + "/webui-e2e.log", atomically: true, encoding: .utf8)
        let hint = run.stderr.contains("No module named 'selenium'")
            ? " (selenium is missing: python3 -m pip install selenium; the browser is Debian's chromium and chromium-driver)" : ""
        #expect(run.status == 0, "webui_e2e.py failed\(hint):\n\(run.stdout)\n\(run.stderr)")
        guard run.status == 0, let data = FileManager.default.contents(atPath: results),
              let outcome = try? JSONValue.parse(Array(data)) else { return }

        // Convert: the QCOW2 the pages made has the VMDK's content, is clean, and has the compression chosen.
        let qcow2 = outcome["qcow2_output"]?.stringValue ?? ""
        try expectQemuIdentical(vmdk, qcow2, formatA: "vmdk", formatB: "qcow2")
        try expectQemuCheckClean(qcow2)
        try expectCompression(qcow2, "zlib")

        // Appliance: the disk matches the OVA's, the domain is valid for libvirt.
        let folder = outcome["appliance_folder"]?.stringValue ?? ""
        let outputs = listing(folder).sorted()
        #expect(outputs.contains { $0.hasSuffix(".xml") } && outputs.contains { $0.hasSuffix(".qcow2") }, "\(outputs)")
        for name in outputs where name.hasSuffix(".qcow2") {
            try expectQemuIdentical(Fixtures.path("pattern-stream.vmdk"), folder + "/" + name, formatA: "vmdk", formatB: "qcow2")
            try expectQemuCheckClean(folder + "/" + name)
            try expectCompression(folder + "/" + name, "zstd")
        }
        for name in outputs where name.hasSuffix(".xml") { try expectValidDomainXML(folder + "/" + name) }

        // Export: the host's copy is the file, byte for byte.
        let sent = try runProcess(["cmp", outcome["exported_source"]?.stringValue ?? "", outcome["remote_file"]?.stringValue ?? ""])
        #expect(sent.status == 0, "the host's copy differs: \(sent.stdout) \(sent.stderr)")

        // Resume: the host's copy of the export stopped half-way and resumed is the file, byte for byte.
        let resumed = try runProcess(["cmp", outcome["resumed_source"]?.stringValue ?? "", outcome["resumed_remote_file"]?.stringValue ?? ""])
        #expect(resumed.status == 0, "the resumed copy differs: \(resumed.stdout) \(resumed.stderr)")

        // Cancel: no output, no temporary file.
        #expect(!FileManager.default.fileExists(atPath: outcome["cancelled_output"]?.stringValue ?? "/"))
        #expect(!listing(converted).contains { $0.hasPrefix(".") }, "\(listing(converted))")
    }
}
