// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "kdct-native",
    products: [
        .library(name: "KDCTFormats", targets: ["KDCTFormats"]),
        .library(name: "KDCTExport", targets: ["KDCTExport"]),
        .executable(name: "kdct-native", targets: ["kdct-native"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.0"),
    ],
    targets: [
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CDeflate", path: "Sources/CDeflate"),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd"),
        .systemLibrary(name: "CLibSSH2", path: "Sources/CLibSSH2"),
        .target(name: "CKDCTShims", path: "Sources/CKDCTShims"),
        .target(
            name: "KDCTFormats",
            dependencies: [
                "CZlib", "CDeflate", "CZstd", "CKDCTShims",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Sources/KDCTFormats"
        ),
        .target(
            name: "KDCTExport",
            dependencies: ["KDCTFormats", "CLibSSH2", "CKDCTShims", .product(name: "Crypto", package: "swift-crypto")],
            path: "Sources/KDCTExport"
        ),
        .executableTarget(
            name: "kdct-native",
            dependencies: [
                "KDCTFormats", "KDCTExport", "CKDCTShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/kdct-native"
        ),
        // Shared test helpers: temp dirs, qemu-img oracle, deterministic pattern, corpus loader, CLI runner.
        .target(
            name: "KDCTTestSupport",
            dependencies: ["KDCTFormats"],
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
            name: "KDCTExportTests",
            dependencies: ["KDCTExport", "KDCTFormats", "KDCTTestSupport"],
            path: "Tests/KDCTExportTests"
        ),
        .testTarget(
            name: "CLITests",
            dependencies: ["KDCTFormats", "KDCTTestSupport"],
            path: "Tests/CLITests"
        ),
    ]
)
