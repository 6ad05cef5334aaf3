import Foundation
import GRDB
import KoalaCore
import ServiceLifecycle
import Synchronization

/// Schema: the migrations, in order; each applied once, in its own transaction.
extension SQLiteStore {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE webhooks (
                    source TEXT NOT NULL,
                    webhook_id TEXT NOT NULL,
                    event_type TEXT NOT NULL,
                    event_time REAL NOT NULL,
                    received_at REAL NOT NULL,
                    headers TEXT NOT NULL,
                    body BLOB NOT NULL,
                    secret_label TEXT NOT NULL,
                    rules_version TEXT NOT NULL,
                    PRIMARY KEY (source, webhook_id)
                );
                CREATE INDEX webhooks_received ON webhooks(source, received_at);
                CREATE TABLE outbox (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL UNIQUE,
                    source TEXT NOT NULL,
                    webhook_id TEXT NOT NULL,
                    route TEXT NOT NULL,
                    output TEXT NOT NULL,
                    endpoint TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    person_key TEXT NOT NULL,
                    email TEXT,
                    profile_id TEXT,
                    domain TEXT,
                    account_id TEXT,
                    item TEXT NOT NULL,
                    event_time REAL NOT NULL,
                    created_at REAL NOT NULL,
                    status INTEGER NOT NULL DEFAULT \(literal: .pending),
                    attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL,
                    lease_until REAL NOT NULL DEFAULT 0,
                    last_error TEXT,
                    dead_reason TEXT,
                    dead_detail TEXT,
                    finished_at REAL
                );
                CREATE INDEX outbox_due ON outbox(next_attempt_at) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_person ON outbox(person_key, seq) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_dead ON outbox(finished_at) WHERE status = \(literal: .dead);
                """)
        }
        migrator.registerMigration("v2: identity memory") { db in
            try db.execute(sql: """
                CREATE TABLE identities (
                    source TEXT NOT NULL,
                    namespace TEXT NOT NULL,
                    key TEXT NOT NULL,
                    email TEXT,
                    profile_id TEXT,
                    domain TEXT,
                    updated_at REAL NOT NULL,
                    PRIMARY KEY (source, namespace, key)
                );
                CREATE INDEX identities_email ON identities(email);
                ALTER TABLE outbox ADD COLUMN wait_namespace TEXT;
                ALTER TABLE outbox ADD COLUMN wait_key TEXT;
                CREATE INDEX outbox_waiting ON outbox(source, wait_namespace, wait_key) WHERE status = \(literal: .waiting);
                """)
        }
        migrator.registerMigration("v3: replay lane") { db in
            try db.execute(sql: "ALTER TABLE outbox ADD COLUMN lane INTEGER NOT NULL DEFAULT \(literal: .live)")
        }
        migrator.registerMigration("v4: state memory") { db in
            try db.execute(sql: """
                ALTER TABLE identities ADD COLUMN state TEXT;
                ALTER TABLE identities ADD COLUMN state_at REAL;
                ALTER TABLE webhooks ADD COLUMN routed_states TEXT;
                """)
        }
        migrator.registerMigration("v5: one outbox entry per destination") { db in
            // SQLite cannot change a UNIQUE constraint in place: the table is rebuilt, rows and seq kept.
            try db.execute(sql: """
                CREATE TABLE outbox_v5 (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL,
                    destination TEXT NOT NULL DEFAULT 'koala',
                    source TEXT NOT NULL, webhook_id TEXT NOT NULL, route TEXT NOT NULL, output TEXT NOT NULL,
                    endpoint TEXT NOT NULL, kind TEXT NOT NULL, person_key TEXT NOT NULL,
                    email TEXT, profile_id TEXT, domain TEXT, account_id TEXT, item TEXT NOT NULL,
                    event_time REAL NOT NULL, created_at REAL NOT NULL,
                    status INTEGER NOT NULL DEFAULT \(literal: .pending), attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL, lease_until REAL NOT NULL DEFAULT 0,
                    last_error TEXT, dead_reason TEXT, dead_detail TEXT, finished_at REAL,
                    wait_namespace TEXT, wait_key TEXT, lane INTEGER NOT NULL DEFAULT \(literal: .live),
                    UNIQUE (message_id, destination)
                );
                INSERT INTO outbox_v5 (seq, message_id, source, webhook_id, route, output, endpoint, kind, person_key, email,
                    profile_id, domain, account_id, item, event_time, created_at, status, attempts, next_attempt_at, lease_until,
                    last_error, dead_reason, dead_detail, finished_at, wait_namespace, wait_key, lane)
                SELECT seq, message_id, source, webhook_id, route, output, endpoint, kind, person_key, email,
                    profile_id, domain, account_id, item, event_time, created_at, status, attempts, next_attempt_at, lease_until,
                    last_error, dead_reason, dead_detail, finished_at, wait_namespace, wait_key, lane FROM outbox;
                DROP TABLE outbox;
                ALTER TABLE outbox_v5 RENAME TO outbox;
                CREATE INDEX outbox_due ON outbox(destination, next_attempt_at) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_person ON outbox(destination, person_key, seq) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_dead ON outbox(finished_at) WHERE status = \(literal: .dead);
                CREATE INDEX outbox_waiting ON outbox(source, wait_namespace, wait_key) WHERE status = \(literal: .waiting);
                """)
        }
        migrator.registerMigration("v6: user id for Segment-compatible destinations") { db in
            try db.execute(sql: "ALTER TABLE outbox ADD COLUMN user_id TEXT")
        }
        migrator.registerMigration("v7: claims read the queue in order") { db in
            // The sender claims the oldest due messages: read in seq order, a claim stops after `limit` rows
            // instead of sorting every due message of the backlog on each round.
            try db.execute(sql: "CREATE INDEX outbox_claim ON outbox(destination, lane, seq) WHERE status = \(literal: .pending)")
        }
        migrator.registerMigration("v8: no index the claim no longer reads") { db in
            // Since v7 no query reads pending messages by due time; the index only cost a write per message.
            try db.execute(sql: "DROP INDEX IF EXISTS outbox_due")
        }
        migrator.registerMigration("v9: a webhook's messages and a person's webhooks by index") { db in
            // The console (one webhook's messages, search by email), `simulate --stored` and `forget --email`
            // read these; without the indexes each scanned the whole outbox. PostgreSQL has had both since v1.
            try db.execute(sql: """
                CREATE INDEX outbox_webhook ON outbox(source, webhook_id);
                CREATE INDEX outbox_email ON outbox(email);
                """)
        }
        migrator.registerMigration("v10: console sign-outs") { db in
            // Kept here, not in one process's memory, so a signed-out session stays out after a restart.
            try db.execute(sql: ConsoleRevocations.createTable(real: "REAL"))
        }
        migrator.registerMigration("v11: backfill progress") { db in
            try db.execute(sql: BackfillProgress.createTable(real: "REAL"))
        }
        migrator.registerMigration("v12: messages keyed by their webhook") { db in
            // A message id is a hash of (source, webhook_id, route, output), so the entry's key can be those
            // columns instead: providers' webhook ids mostly grow with time, so new entries land beside each other,
            // where the hash put each one on a page of its own (a fifth of the WAL under load). The key also
            // serves a webhook's messages, so `outbox_webhook` goes. SQLite cannot drop a table's UNIQUE
            // constraint in place: the table is rebuilt, rows, seq and the AUTOINCREMENT counter kept.
            let counter = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'") ?? 0
            let columns = """
                seq, message_id, destination, source, webhook_id, route, output, endpoint, kind, person_key, email, profile_id, domain,
                account_id, item, event_time, created_at, status, attempts, next_attempt_at, lease_until, last_error, dead_reason,
                dead_detail, finished_at, wait_namespace, wait_key, lane, user_id
                """
            try db.execute(sql: """
                CREATE TABLE outbox_v12 (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id TEXT NOT NULL,
                    destination TEXT NOT NULL DEFAULT 'koala',
                    source TEXT NOT NULL, webhook_id TEXT NOT NULL, route TEXT NOT NULL, output TEXT NOT NULL,
                    endpoint TEXT NOT NULL, kind TEXT NOT NULL, person_key TEXT NOT NULL,
                    email TEXT, profile_id TEXT, domain TEXT, account_id TEXT, item TEXT NOT NULL,
                    event_time REAL NOT NULL, created_at REAL NOT NULL,
                    status INTEGER NOT NULL DEFAULT \(literal: .pending), attempts INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at REAL NOT NULL, lease_until REAL NOT NULL DEFAULT 0,
                    last_error TEXT, dead_reason TEXT, dead_detail TEXT, finished_at REAL,
                    wait_namespace TEXT, wait_key TEXT, lane INTEGER NOT NULL DEFAULT \(literal: .live), user_id TEXT,
                    UNIQUE (\(OutboxKey.columns))
                );
                INSERT INTO outbox_v12 (\(columns)) SELECT \(columns) FROM outbox;
                DROP TABLE outbox;
                ALTER TABLE outbox_v12 RENAME TO outbox;
                UPDATE sqlite_sequence SET seq = max(seq, \(counter)) WHERE name = 'outbox';
                CREATE INDEX outbox_person ON outbox(destination, person_key, seq) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_dead ON outbox(finished_at) WHERE status = \(literal: .dead);
                CREATE INDEX outbox_waiting ON outbox(source, wait_namespace, wait_key) WHERE status = \(literal: .waiting);
                CREATE INDEX outbox_claim ON outbox(destination, lane, seq) WHERE status = \(literal: .pending);
                CREATE INDEX outbox_email ON outbox(email);
                """)
        }
        migrator.registerMigration("v13: the trace a webhook was received in") { db in
            try db.execute(sql: "ALTER TABLE webhooks ADD COLUMN trace_parent TEXT")
        }
        return migrator
    }
}
