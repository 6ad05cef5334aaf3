import ArgumentParser
import Foundation
import KoalaApp
import KoalaCore
import KoalaDelivery
import KoalaStore

/// Filters shared by the dead-letter subcommands.
struct DeadLetterOptions: ParsableArguments {
    @Option(name: .long, help: "Only this destination: koala, segment, rudderstack or segment-compatible.")
    var destination: Destination?
    @Option(name: .long, help: "Only this source.")
    var source: String?
    @Option(name: .long, help: "Only this route.")
    var route: String?
    @Option(name: .long, help: "Only reasons containing this text, e.g. 'identity unresolved' or 'koala rejected'.")
    var reason: String?
    @Option(name: .long, help: "Failed at or after: ISO-8601, or an age such as 2h or 7d.")
    var since: String?
    @Option(name: .long, help: "Failed before: ISO-8601, or an age such as 30m.")
    var until: String?
    @Option(name: .long, parsing: .singleValue, help: "A message id (repeatable).")
    var id: [String] = []
    @Option(name: .long, help: "SQLite file or postgres:// URL (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
    var database: String?
    @OptionGroup var settings: SettingsOption

    func filter() throws -> DeadLetterFilter {
        func time(_ text: String?, _ name: String) throws -> Date? {
            guard let text else { return nil }
            guard let date = parseTimeArgument(text) else { throw ValidationError("--\(name) takes ISO-8601 or an age such as 2h, got '\(text)'") }
            return date
        }
        return DeadLetterFilter(messageIDs: id, destination: destination, source: source, route: route, reason: reason,
                                since: try time(since, "since"), until: try time(until, "until"))
    }

    /// Runs `body` with the store the settings name.
    func withStore<T>(_ body: (any WebhookStore) async throws -> T) async throws -> T {
        try await settings.resolve(["KOALA_ROUTER_DATABASE": database]).withStore(body)
    }
}

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "List, show, retry or drop messages that could not be delivered.",
        discussion: "Works on the database of a running service (SQLite allows it); the admin HTTP API offers the same.",
        subcommands: [List.self, Show.self, Retry.self, Drop.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, oldest failure first.")
        @OptionGroup var options: DeadLetterOptions
        @Option(name: .long, help: "At most this many.") var limit = 100
        @Flag(name: .long, help: "One JSON object per line.") var json = false

        func run() async throws {
            let filter = try options.filter()
            let (letters, counts) = try await options.withStore { store in
                (try await store.deadLetters(matching: filter, limit: limit), try await store.counts())
            }
            for letter in letters {
                if json {
                    print(letter.json.encoded())
                } else {
                    let who = letter.identity.topLevel.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
                    let destination = letter.destination == .koala ? "" : "→\(letter.destination.rawValue)  "
                    print("\(Timestamps.iso(letter.failedAt))  \(letter.messageID)  \(destination)\(letter.source)/\(letter.route)/\(letter.output?.rawValue ?? "-")  \(who.isEmpty ? "-" : who)  \(letter.reason)")
                }
            }
            if !json {
                print("\(letters.count) dead letter(s)")
                if counts.dryRun > 0 {
                    print("\(counts.dryRun) message(s) were handled in dry run (no KOALA_PUBLIC_API_KEY): logged, never sent, not dead letters; 'koala-router replay --source SOURCE --since 7d' queues them once a key is set (add --dry-run to see what first)")
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one dead letter in full, with Koala's answer if there was one.")
        @Argument(help: "The message id.") var messageID: String
        @Option(name: .long, help: "SQLite file or postgres:// URL (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
        var database: String?
        @OptionGroup var settings: SettingsOption

        func run() async throws {
            let filter = DeadLetterFilter(messageIDs: [messageID])
            let letter = try await settings.resolve(["KOALA_ROUTER_DATABASE": database])
                .withStore { try await $0.deadLetters(matching: filter, limit: 1).first }
            guard let letter else {
                FileHandle.standardError.write(Data("no dead letter with message id \(messageID)\n".utf8))
                throw ExitCode(1)
            }
            print(letter.json.encoded())
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue matching dead letters again, with the same message ids and a fresh retry budget.",
            discussion: "Messages with no identity (e.g. 'identity missing') cannot be sent as they are: fix the rule and replay the webhook.")
        @OptionGroup var options: DeadLetterOptions

        func run() async throws {
            let filter = try options.filter()
            let count = try await options.withStore { try await $0.retryDeadLetters(matching: filter, at: Date()) }
            print("\(count) message(s) queued again")
        }
    }

    struct Drop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete matching dead letters for good.")
        @OptionGroup var options: DeadLetterOptions
        @Flag(name: .long, help: "Required when no filter is given: drop every dead letter.") var all = false

        func run() async throws {
            let filter = try options.filter()
            let dropAll = all
            guard filter != DeadLetterFilter() || dropAll else {
                throw ValidationError("give a filter (--id, --destination, --source, --route, --reason, --since, --until) or --all")
            }
            let count = try await options.withStore { try await $0.dropDeadLetters(matching: filter) }
            print("\(count) dead letter(s) dropped")
        }
    }
}

struct ReplayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Route stored webhooks again through the current rules and queue what changed.",
        discussion: """
            Message ids are deterministic: outputs that did not change are harmless to send again, and Koala keeps
            the first version it accepted for a message id, so a changed output that was already delivered is
            reported, not resent. Replayed messages go out in their own lane, a capped share of each round, so
            live traffic is never delayed behind a replay. Run with --dry-run first.
            """)

    @Option(name: .long, help: "The source.") var source: String
    @Option(name: .long, help: "Received at or after: ISO-8601 or an age such as 24h.") var since: String
    @Option(name: .long, help: "Received before (default: now).") var until: String?
    @Option(name: .long, help: "Only this route.") var route: String?
    @Flag(name: .long, help: "Show what would change; queue nothing.") var dryRun = false
    @Option(name: .long, help: "Whose entries to compare and queue: koala (default), segment, rudderstack or segment-compatible.")
    var destination: Destination = .koala
    @OptionGroup var routesOption: RoutesOption
    @Option(name: .long, help: "SQLite file or postgres:// URL (env KOALA_ROUTER_DATABASE, default data/koala-router.sqlite).")
    var database: String?
    @OptionGroup var settings: SettingsOption

    func run() async throws {
        guard let sinceDate = parseTimeArgument(since) else { throw ValidationError("--since takes ISO-8601 or an age such as 24h") }
        var untilDate = Date()
        if let until {
            guard let parsed = parseTimeArgument(until) else { throw ValidationError("--until takes ISO-8601 or an age such as 1h") }
            untilDate = parsed
        }
        let config = try await settings.resolve(["KOALA_ROUTER_ROUTES": routesOption.routes, "KOALA_ROUTER_DATABASE": database])
        let table = try config.loadRules()
        let request = Replay.Options(source: source, since: sinceDate, until: untilDate, route: route, dryRun: dryRun, destination: destination)
        let report = try await config.withStore { try await Replay(store: $0, table: table).run(request) }
        for change in report.changes {
            print("\(change.kind.rawValue)  \(change.webhookID)  \(change.route)  \(change.messageID)\(change.note.map { "  (\($0))" } ?? "")")
        }
        let counts = report.count
        print("\(report.webhooks) webhook(s): \(counts[.new] ?? 0) new, \(counts[.changed] ?? 0) changed, \(counts[.removed] ?? 0) removed, \(report.unchanged) unchanged message(s)")
        if report.neverSent > 0 {
            print("\(report.neverSent) unchanged message(s) were handled in dry run (logged, never sent): \(dryRun ? "they would be queued" : "queued with the rest")")
        }
        print(dryRun ? "dry run: nothing queued" : "\(report.queued) message(s) queued in the replay lane")
    }
}
