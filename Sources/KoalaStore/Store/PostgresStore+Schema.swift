import Foundation
import KoalaCore
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// Schema: the durability check and the migrations, applied in one transaction under an advisory lock.
extension PostgresStore {
    static func checkDurable(_ connection: PostgresConnection, logger: Logger) async throws {
        for setting in ["fsync", "synchronous_commit"] {
            let rows = try await connection.query(PostgresQuery(unsafeSQL: "SHOW \(setting)"), logger: logger).rows()
            let value: String = try rows.first?.get(setting) ?? ""
            if value == "off" {
                throw StoreError.notDurable("PostgreSQL has \(setting) = off, so a committed webhook can be lost in a crash; turn it on")
            }
        }
    }

    /// Versioned migrations, those pending applied in one transaction, under a session advisory lock so replicas starting
    /// together apply each exactly once.
    static let migrations: [(version: Int64, name: String, statements: [String])] = [
        (1, "webhooks, outbox, identities", [
            """
            CREATE TABLE webhooks (
                source text NOT NULL, webhook_id text NOT NULL, event_type text NOT NULL,
                event_time double precision NOT NULL, received_at double precision NOT NULL,
                headers text NOT NULL, body bytea NOT NULL, secret_label text NOT NULL, rules_version text NOT NULL,
                PRIMARY KEY (source, webhook_id))
            """,
            "CREATE INDEX webhooks_received ON webhooks (source, received_at)",
            """
            CREATE TABLE outbox (
                seq bigserial PRIMARY KEY, message_id text NOT NULL UNIQUE,
                source text NOT NULL, webhook_id text NOT NULL, route text NOT NULL, output text NOT NULL,
                endpoint text NOT NULL, kind text NOT NULL, person_key text NOT NULL,
                email text, profile_id text, domain text, account_id text, item text NOT NULL,
                event_time double precision NOT NULL, created_at double precision NOT NULL,
                status bigint NOT NULL DEFAULT \(literal: .pending), attempts bigint NOT NULL DEFAULT 0,
                next_attempt_at double precision NOT NULL, lease_until double precision NOT NULL DEFAULT 0,
                lease_owner text, last_error text, dead_reason text, dead_detail text, finished_at double precision,
                wait_namespace text, wait_key text, lane bigint NOT NULL DEFAULT \(literal: .live))
            """,
            "CREATE INDEX outbox_due ON outbox (lane, next_attempt_at) WHERE status = \(literal: .pending)",
            "CREATE INDEX outbox_person ON outbox (person_key, seq) WHERE status = \(literal: .pending)",
            "CREATE INDEX outbox_dead ON outbox (finished_at) WHERE status = \(literal: .dead)",
            "CREATE INDEX outbox_waiting ON outbox (source, wait_namespace, wait_key) WHERE status = \(literal: .waiting)",
            "CREATE INDEX outbox_webhook ON outbox (source, webhook_id)",
            "CREATE INDEX outbox_email ON outbox (email)",
            """
            CREATE TABLE identities (
                source text NOT NULL, namespace text NOT NULL, key text NOT NULL,
                email text, profile_id text, domain text, updated_at double precision NOT NULL,
                PRIMARY KEY (source, namespace, key))
            """,
            "CREATE INDEX identities_email ON identities (email)",
        ]),
        (2, "state memory", [
            "ALTER TABLE identities ADD COLUMN state text",
            "ALTER TABLE identities ADD COLUMN state_at double precision",
            "ALTER TABLE webhooks ADD COLUMN routed_states text",
        ]),
        (3, "one outbox entry per destination", [
            "ALTER TABLE outbox ADD COLUMN destination text NOT NULL DEFAULT 'koala'",
            "ALTER TABLE outbox DROP CONSTRAINT outbox_message_id_key",
            "ALTER TABLE outbox ADD CONSTRAINT outbox_message_destination UNIQUE (message_id, destination)",
            "DROP INDEX outbox_person",
            "CREATE INDEX outbox_person ON outbox (destination, person_key, seq) WHERE status = \(literal: .pending)",
        ]),
        (4, "user id for Segment-compatible destinations", [
            "ALTER TABLE outbox ADD COLUMN user_id text",
        ]),
        // Claims read the queue in seq order and stop after `limit` rows, instead of sorting every due row.
        (5, "claims read the queue in order", [
            "CREATE INDEX outbox_claim ON outbox (destination, lane, seq) WHERE status = \(literal: .pending)",
        ]),
        // Since 5 no query reads pending messages by due time; the index only cost a write per message.
        (6, "no index the claim no longer reads", [
            "DROP INDEX IF EXISTS outbox_due",
        ]),
        // Console sign-outs, seen by every replica and kept across restarts.
        (7, "console sign-outs", [
            ConsoleRevocations.createTable(real: "double precision"),
        ]),
        // Where backfill and reconcile are: a rerun continues from the last page stored.
        (8, "backfill progress", [
            BackfillProgress.createTable(real: "double precision"),
        ]),
        // A message id is a hash of (source, webhook_id, route, output): keyed by those columns instead, new entries
        // land where webhook ids grow rather than at random, and the key serves a webhook's messages too.
        (9, "messages keyed by their webhook", [
            "ALTER TABLE outbox ADD CONSTRAINT outbox_key UNIQUE (\(OutboxKey.columns))",
            "ALTER TABLE outbox DROP CONSTRAINT outbox_message_destination",
            "DROP INDEX outbox_webhook",
        ]),
        (10, "the trace a webhook was received in", [
            "ALTER TABLE webhooks ADD COLUMN trace_parent text",
        ]),
    ]

    /// The migration lock of one schema: replicas on the same schema take turns, other schemas (other
    /// services, or tests side by side) never wait for each other. FNV-1a, so every process computes the same key.
    static func migrationLockKey(schema: String?) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in (schema ?? "public").utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return migrationLock ^ Int64(bitPattern: hash)
    }

    /// How long a replica waits for the migration lock while another replica migrates: most of the start-up
    /// deadline (10 s), not the statement timeout, so replicas starting together on a loaded database wait for
    /// the one migrating instead of failing after 5 s. A replica that cannot get it by then fails to start and
    /// changes nothing.
    static let migrationLockWait = 8.0

    static func migrate(_ connection: PostgresConnection, schema: String?, logger: Logger) async throws {
        let migrationLock = migrationLockKey(schema: schema)
        try await connection.perform(PostgresQuery(unsafeSQL: "SET statement_timeout = \(Int(migrationLockWait * 1000))"), logger: logger)
        try await connection.perform("SELECT pg_advisory_lock(\(migrationLock))", logger: logger)
        // Back to the connection's own statement timeout (its start-up value) for the migrations themselves.
        try await connection.perform("RESET statement_timeout", logger: logger)
        do {
            if let schema {
                try await connection.query(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
            }
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS koala_router_migrations (
                    version bigint PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)
                """, logger: logger)
            let applied = Set(try await connection.query("SELECT version FROM koala_router_migrations", logger: logger)
                .rows().map { try $0.get("version", as: Int64.self) })
            // Every pending migration in one transaction: a new database (or schema) is created with one commit
            // instead of one per migration (replicas starting together on a loaded machine waited on each flush),
            // and an upgrade applies whole or not at all.
            let pending = migrations.filter { !applied.contains($0.version) }
            if !pending.isEmpty {
                try await connection.withTransaction(logger: logger) { connection in
                    for migration in pending {
                        for statement in migration.statements {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                        }
                        try await connection.query("""
                            INSERT INTO koala_router_migrations (version, name, applied_at)
                            VALUES (\(migration.version), \(migration.name), \(Date().timeIntervalSince1970))
                            """, logger: logger)
                    }
                }
                for migration in pending {
                    logger.info("database migrated", metadata: ["version": "\(migration.version)", "migration": "\(migration.name)"])
                }
            }
        } catch {
            do {
                try await connection.perform("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
            } catch let unlockError {
                // The session lock goes with the connection; the migration error below is the one to act on.
                logger.warning("could not release the migration lock after a failed migration", metadata: ["error": "\(unlockError)"])
            }
            throw error
        }
        try await connection.perform("SELECT pg_advisory_unlock(\(migrationLock))", logger: logger)
    }
}
