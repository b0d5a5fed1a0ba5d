// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "kdct-native",
    products: [
        // Disk image readers, the RAW and QCOW2 writers and the converter; Glibc and C codecs only (no Foundation).
        .library(name: "KDCTFormats", targets: ["KDCTFormats"]),
        // OVA/OVF appliances in, libvirt domain XML out (Foundation, FoundationXML).
        .library(name: "KDCTAppliance", targets: ["KDCTAppliance"]),
        // Shipping a converted disk to a KVM host over SFTP/SCP (libssh2).
        .library(name: "KDCTExport", targets: ["KDCTExport"]),
        .library(name: "KDCTServer", targets: ["KDCTServer"]),
        .executable(name: "kdct-native", targets: ["kdct-native"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
        // `kdct-native serve`: HTTP server (its optional swift-configuration support left out), job store, logging.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // Already required by Hummingbird; named because KDCTServer imports them directly.
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // `swift package generate-documentation` (the DocC catalogs of the libraries).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CDeflate", path: "Sources/CDeflate"),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd"),
        .systemLibrary(name: "CLibSSH2", path: "Sources/CLibSSH2"),
        .systemLibrary(name: "CLibCrypto", path: "Sources/CLibCrypto"),
        .target(name: "CKDCTShims", path: "Sources/CKDCTShims"),
        .target(
            name: "KDCTFormats",
            dependencies: ["CZlib", "CDeflate", "CZstd", "CLibCrypto", "CKDCTShims"],
            path: "Sources/KDCTFormats"
        ),
        .target(
            name: "KDCTAppliance",
            dependencies: ["KDCTFormats", .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/KDCTAppliance"
        ),
        .target(
            name: "KDCTExport",
            dependencies: ["KDCTFormats", "CLibSSH2", "CKDCTShims", .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/KDCTExport"
        ),
        // The conversion service behind `kdct-native serve`: HTTP API, jobs in SQLite, the web app's files.
        .target(
            name: "KDCTServer",
            dependencies: [
                "KDCTFormats", "KDCTAppliance", "KDCTExport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/KDCTServer",
            resources: [.embedInCode("Resources")]
        ),
        .executableTarget(
            name: "kdct-native",
            dependencies: [
                "KDCTFormats", "KDCTAppliance", "KDCTExport", "KDCTServer", "CKDCTShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/kdct-native"
        ),
        // Shared test helpers: temp dirs, qemu-img oracle, deterministic pattern, corpus loader, CLI runner, appliances,
        // a private sshd.
        .target(
            name: "KDCTTestSupport",
            dependencies: ["KDCTFormats", "KDCTAppliance", "KDCTExport"],
            path: "Tests/KDCTTestSupport"
        ),
        .testTarget(
            name: "KDCTFormatsTests",
            dependencies: [
                "KDCTFormats", "CKDCTShims", "KDCTTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Tests/KDCTFormatsTests"
        ),
        .testTarget(
            name: "KDCTApplianceTests",
            dependencies: ["KDCTAppliance", "KDCTFormats", "KDCTTestSupport"],
            path: "Tests/KDCTApplianceTests"
        ),
        .testTarget(
            name: "KDCTExportTests",
            dependencies: ["KDCTExport", "KDCTFormats", "KDCTTestSupport"],
            path: "Tests/KDCTExportTests"
        ),
        .testTarget(
            name: "KDCTServerTests",
            dependencies: ["KDCTServer", "KDCTFormats", "KDCTAppliance", "KDCTExport", "KDCTTestSupport",
                           .product(name: "NIOEmbedded", package: "swift-nio")],
            path: "Tests/KDCTServerTests"
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["KDCTFormats", "KDCTAppliance", "KDCTTestSupport"],
            path: "Tests/CLITests"
        ),
    ]
)
