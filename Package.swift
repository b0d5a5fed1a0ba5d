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
        .executable(name: "kdct-native", targets: ["kdct-native"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
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
        .executableTarget(
            name: "kdct-native",
            dependencies: [
                "KDCTFormats", "KDCTAppliance", "KDCTExport", "CKDCTShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/kdct-native"
        ),
        // Shared test helpers: temp dirs, qemu-img oracle, deterministic pattern, corpus loader, CLI runner, appliances.
        .target(
            name: "KDCTTestSupport",
            dependencies: ["KDCTFormats", "KDCTAppliance"],
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
            name: "CLITests",
            dependencies: ["KDCTFormats", "KDCTAppliance", "KDCTTestSupport"],
            path: "Tests/CLITests"
        ),
    ]
)
