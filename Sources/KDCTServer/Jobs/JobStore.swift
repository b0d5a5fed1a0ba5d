import GRDB
#if canImport(Glibc)
import Glibc
#endif

/// The jobs, persisted in SQLite (GRDB) under the state directory: requests (never a secret), states, timestamps,
/// the last progress, results and errors, and the temporary files of running jobs for crash recovery.
///
/// One service owns a state directory at a time (an exclusive `flock` on `serve.lock`, released by the kernel
/// even after SIGKILL), so the recovery at startup never mistakes another live service's jobs for crashed ones.
/// Calls are synchronous and short (single-row writes in WAL mode); the queue calls them from its actor and a
/// running job registers its temporary files from its own thread.
final class JobStore: Sendable {
    /// The database file.
    let path: String
    private let database: DatabaseQueue
    private let lockDescriptor: Int32

    /// Opens (creating it, owner-only) the store in `directory` and brings the schema up to date.
    init(directory: String) throws {
        try Self.makeDirectory(directory)
        let lockPath = directory + "/serve.lock"
        let descriptor = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw Problem(.internalServerError, code: "io", "cannot open \(lockPath): \(String(cString: strerror(errno)))", file: lockPath)
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(descriptor)
            throw Problem(.conflict, code: "already-exists",
                          "another kdct-native serve is using the state directory \(directory)", file: directory)
        }
        lockDescriptor = descriptor
        path = directory + "/jobs.sqlite"
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
        let previousMask = umask(0o077)
        defer { umask(previousMask) }
        do {
            database = try DatabaseQueue(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
        } catch {
            close(descriptor)
            throw error
        }
    }

    deinit { close(lockDescriptor) }

    /// The schema, one migration per version; never edit a registered migration, add the next one.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE job (
                    number INTEGER PRIMARY KEY AUTOINCREMENT,
                    id TEXT NOT NULL UNIQUE,
                    kind TEXT NOT NULL,
                    state TEXT NOT NULL,
                    request TEXT NOT NULL,
                    created_at REAL NOT NULL,
                    started_at REAL,
                    finished_at REAL,
                    progress TEXT,
                    result TEXT,
                    error TEXT,
                    revision INTEGER NOT NULL DEFAULT 0,
                    resumable INTEGER NOT NULL DEFAULT 0,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    retry_of TEXT,
                    cleanup TEXT NOT NULL DEFAULT '[]'
                );
                CREATE INDEX job_state ON job(state);
                """)
        }
        return migrator
    }

    private static func makeDirectory(_ directory: String) throws {
        var prefix = ""
        for component in directory.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
                throw Problem(.internalServerError, code: "io",
                              "cannot create \(prefix): \(String(cString: strerror(errno)))", file: prefix)
            }
        }
        guard RootSet.fileType(directory) == S_IFDIR else {
            throw Problem(.internalServerError, code: "io", "\(directory) is not a directory", file: directory)
        }
    }

    // MARK: Writing

    /// Records a new queued job.
    func insert(id: String, kind: JobKind, request: JSONValue, retryOf: String?, at time: Double) throws -> JobRecord {
        try database.write { db in
            try db.execute(sql: """
                INSERT INTO job (id, kind, state, request, created_at, retry_of) VALUES (?, ?, 'queued', ?, ?, ?)
                """, arguments: [id, kind.rawValue, request.text, time, retryOf])
            return try Self.fetch(id, db)
        }
    }

    /// The job starts a run.
    func markRunning(_ id: String, at time: Double, revision: Int64) throws -> JobRecord {
        try database.write { db in
            try db.execute(sql: """
                UPDATE job SET state = 'running', started_at = ?, revision = ?, attempts = attempts + 1,
                    progress = NULL, result = NULL, error = NULL, finished_at = NULL, cleanup = '[]'
                WHERE id = ?
                """, arguments: [time, revision, id])
            return try Self.fetch(id, db)
        }
    }

    /// Saves the latest progress of a running job.
    func saveProgress(_ id: String, progress: JSONValue, revision: Int64) throws {
        try database.write { db in
            try db.execute(sql: "UPDATE job SET progress = ?, revision = ? WHERE id = ? AND state = 'running'",
                           arguments: [progress.text, revision, id])
        }
    }

    /// Adds a temporary file to the running job's list (before the job writes into it).
    func addTemporaryFile(_ id: String, _ file: TemporaryFile) throws {
        try database.write { db in
            let current = try String.fetchOne(db, sql: "SELECT cleanup FROM job WHERE id = ?", arguments: [id]) ?? "[]"
            guard case var .array(items) = (try? JSONValue.parse(Array(current.utf8))) ?? .array([]) else { return }
            items.append(file.json)
            try db.execute(sql: "UPDATE job SET cleanup = ? WHERE id = ?", arguments: [JSONValue.array(items).text, id])
        }
    }

    /// Records how the job ended; its temporary-file list is cleared.
    func finish(_ id: String, state: JobState, progress: JSONValue?, result: JSONValue?, error: JSONValue?,
                resumable: Bool, at time: Double, revision: Int64) throws -> JobRecord {
        try database.write { db in
            try db.execute(sql: """
                UPDATE job SET state = ?, progress = COALESCE(?, progress), result = ?, error = ?, resumable = ?,
                    finished_at = ?, revision = ?, cleanup = '[]'
                WHERE id = ?
                """, arguments: [state.rawValue, progress?.text, result?.text, error?.text, resumable, time, revision, id])
            return try Self.fetch(id, db)
        }
    }

    /// Puts a finished job back in the queue with `request` (a resumed export).
    func requeue(_ id: String, request: JSONValue, revision: Int64) throws -> JobRecord {
        try database.write { db in
            try db.execute(sql: """
                UPDATE job SET state = 'queued', request = ?, revision = ?, result = NULL, error = NULL,
                    finished_at = NULL, resumable = 0
                WHERE id = ?
                """, arguments: [request.text, revision, id])
            return try Self.fetch(id, db)
        }
    }

    // MARK: Reading

    /// One job.
    func job(_ id: String) throws -> JobRecord? {
        try database.read { db in try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [id]).map(Self.record) }
    }

    /// Jobs newest first, `limit` of them, numbered below `before`, in `state` when given.
    func list(limit: Int, before: Int64?, state: JobState?) throws -> [JobRecord] {
        try database.read { db in
            var conditions: [String] = []
            var arguments: StatementArguments = []
            if let before {
                conditions.append("number < ?")
                arguments += [before]
            }
            if let state {
                conditions.append("state = ?")
                arguments += [state.rawValue]
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            arguments += [limit]
            return try Row.fetchAll(db, sql: "SELECT * FROM job \(filter) ORDER BY number DESC LIMIT ?",
                                    arguments: arguments).map(Self.record)
        }
    }

    /// Jobs a previous service left queued or running.
    func unfinished() throws -> [JobRecord] {
        try database.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM job WHERE state IN ('queued', 'running') ORDER BY number")
                .map(Self.record)
        }
    }

    private static func fetch(_ id: String, _ db: Database) throws -> JobRecord {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM job WHERE id = ?", arguments: [id]) else {
            throw Problem.notFound("no job \(id)")
        }
        return record(row)
    }

    private static func record(_ row: Row) -> JobRecord {
        func json(_ column: String) -> JSONValue? {
            guard let text: String = row[column] else { return nil }
            return try? JSONValue.parse(Array(text.utf8))
        }
        var cleanup: [TemporaryFile] = []
        if case let .array(items)? = json("cleanup") { cleanup = items.compactMap(TemporaryFile.init(json:)) }
        return JobRecord(
            id: row["id"], number: row["number"],
            kind: JobKind(rawValue: row["kind"]) ?? .convert,
            state: JobState(rawValue: row["state"]) ?? .failed,
            request: json("request") ?? .object([]),
            createdAt: row["created_at"], startedAt: row["started_at"], finishedAt: row["finished_at"],
            progress: json("progress"), result: json("result"), error: json("error"),
            revision: row["revision"], resumable: row["resumable"], attempts: row["attempts"],
            retryOf: row["retry_of"], cleanup: cleanup)
    }
}
