import Foundation
@testable import KDCTServer
import KDCTTestSupport
import Testing

/// The committed OpenAPI document is the server: the same operations as the route table, valid OpenAPI 3.1
/// (openapi-spec-validator), and the live server conforms to it under schemathesis (no 5xx, documented statuses,
/// content types, headers and schemas, refused invalid input, 405 with Allow, 401 without the token).
@Suite(.serialized) struct OpenAPITests {
    static let documentPath = packageRoot.appendingPathComponent("Sources/KDCTServer/Resources/openapi.json").path

    @Test func documentListsExactlyTheRoutes() throws {
        let document = try JSONValue.parse(Array(try Data(contentsOf: URL(fileURLWithPath: Self.documentPath))))
        guard case let .object(paths)? = document["paths"] else { Issue.record("no paths"); return }
        var documented: Set<String> = []
        for (path, item) in paths {
            guard case let .object(operations) = item else { continue }
            for (method, _) in operations where ["get", "post", "put", "delete", "patch", "head", "options"].contains(method) {
                documented.insert("\(method.uppercased()) \(path)")
            }
        }
        let served = Set(APIHandlers.routes.map { "\($0.method.rawValue) \($0.path)" })
        #expect(documented == served, "only documented: \(documented.subtracting(served)); only served: \(served.subtracting(documented))")
        #expect(document["servers"] == .array([.object([("url", .string("/api/v1"))])]))
    }

    @Test func documentIsValidOpenAPI() throws {
        let result = try runProcess(["python3", "-m", "openapi_spec_validator", Self.documentPath])
        #expect(result.status == 0, "openapi-spec-validator (pip install openapi-spec-validator): \(result.stdout) \(result.stderr)")
    }

    @Test func liveServerConformsUnderSchemathesis() throws {
        let fixture = try ServeFixture()
        let vmdk = try fixture.copyFixture("pattern.vmdk")
        try fixture.copyFixture("chain-child.qcow2")
        try fixture.copyFixture("pattern-v2.qcow2")
        let server = try fixture.start()
        // The job operations get a real job's id (random ids would only ever meet 404s).
        let id = try server.client.submit(.make(["kind": "convert", "source": .string(vmdk), "destination": .string(fixture.path("out.raw")),
                                                 "output_format": "raw"]))
        #expect(try server.client.waitForJob(id)["state"] == .string("succeeded"))
        let config = fixture.directory.file("schemathesis.toml")
        try "[parameters]\nid = \"\(id)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        // Through python3 (which pip installed it for), so no PATH entry for its script is needed.
        let result = try runProcess([
            "python3", "-c", "import sys; from schemathesis.cli import schemathesis; sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())",
            "--config-file", config, "run", Self.documentPath,
            "--url", "http://127.0.0.1:\(server.port)/api/v1",
            "--header", "Authorization: Bearer \(server.token)",
            "--checks", "all",
            // Validity of a request depends on the files (paths inside the roots), not only on the schema; and a
            // DELETE cancels a job, which stays readable afterwards.
            "--exclude-checks", "positive_data_acceptance,use_after_free",
            // The host endpoints connect to whatever host they are given; they are tested against the test sshd.
            "--exclude-path-regex", "^/hosts/",
            "--max-examples", "25",
            // One worker: hypothesis's lambda descriptions crash CPython 3.11's parser when threads share it.
            "--workers", "1",
            "--seed", "1",
        ])
        #expect(result.status == 0, "schemathesis (pip install schemathesis):\n\(result.stdout.suffix(12000))\n\(result.stderr.suffix(4000))")
        #expect(result.stdout.contains("passed") && !result.stdout.contains("Runtime Error"))
        #expect(!server.log.contains(" 500 "), "a request got a 500")
    }
}
