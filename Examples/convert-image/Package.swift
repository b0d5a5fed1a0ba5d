// swift-tools-version:6.1
// A program outside the kdct-native package that uses KDCTFormats the way any consumer would: it depends on the
// library product by path, opens an image, prints its extents and converts it with the async API.
// `.ci/run` builds and runs it on a fixture.
import PackageDescription

let package = Package(
    name: "convert-image",
    dependencies: [.package(name: "kdct-native", path: "../..")],
    targets: [
        .executableTarget(
            name: "convert-image",
            dependencies: [.product(name: "KDCTFormats", package: "kdct-native")],
            path: "Sources/convert-image"
        ),
    ]
)
