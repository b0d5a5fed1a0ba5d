// swift-tools-version:6.1
// libFuzzer harnesses for every image reader (issue 7). Built only by run-fuzzers.sh, with
// -sanitize=fuzzer,address; the root package's `swift build` / `swift test` never see this package.
import PackageDescription

let package = Package(
    name: "kdct-fuzz",
    dependencies: [.package(name: "kdct-native", path: "..")],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "KDCTFormats", package: "kdct-native"),
                .product(name: "KDCTAppliance", package: "kdct-native"),
            ],
            path: "Sources/FuzzSupport"
        ),
        // One harness binary; run-fuzzers.sh runs it as fuzz-raw, fuzz-qcow2 ... fuzz-ova.
        .executableTarget(
            name: "fuzz-image",
            dependencies: ["FuzzSupport", .product(name: "KDCTFormats", package: "kdct-native")],
            path: "Sources/fuzz-image"
        ),
    ]
)
