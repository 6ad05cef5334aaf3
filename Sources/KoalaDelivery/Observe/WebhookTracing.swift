package import Foundation
package import Tracing

/// The spans of webhooks and their deliveries, with the tracer `koala-router serve` makes when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (swift-otel), or none: then every method is a nil check and nothing else,
/// no span, no context, no read of the store. Spans take their parent explicitly (never a task-local), and a
/// webhook's context travels as its W3C `traceparent`, stored with it, so the spans that deliver its messages join
/// its trace after a restart too.
package struct WebhookTracing: Sendable {
    let tracer: (any Tracer)?

    package init(_ tracer: (any Tracer)?) { self.tracer = tracer }

    /// No tracing.
    package static let off = WebhookTracing(nil)

    /// Whether spans are made (a tracer was given).
    package var isOn: Bool { tracer != nil }

    /// A moment for a span that started or ended before it was made (the claim of a round, say).
    package struct Moment: TracerInstant {
        /// Nanoseconds since 1970 (UTC).
        package let nanosecondsSinceEpoch: UInt64

        package init(_ date: Date) {
            nanosecondsSinceEpoch = UInt64(max(0, date.timeIntervalSince1970 * 1_000_000_000))
        }

        package static func < (a: Moment, b: Moment) -> Bool { a.nanosecondsSinceEpoch < b.nanosecondsSinceEpoch }
    }

    /// A span, child of `parent` (a new trace when nil); nil when tracing is off.
    package func start(_ name: String, parent: ServiceContext?, kind: SpanKind = .internal, at moment: Date? = nil) -> (any Span)? {
        guard let tracer else { return nil }
        let context = parent ?? .topLevel
        if let moment {
            return tracer.startSpan(name, context: context, ofKind: kind, at: Moment(moment), function: #function, file: #fileID, line: #line)
        }
        return tracer.startSpan(name, context: context, ofKind: kind, at: DefaultTracerClock.now, function: #function, file: #fileID, line: #line)
    }

    /// The context a carrier names (an incoming request's `traceparent` and `tracestate`, by the tracer's
    /// propagators); nil when it names none or tracing is off.
    package func context<Carrier, Reader: Extractor>(from carrier: Carrier, using reader: Reader) -> ServiceContext? where Reader.Carrier == Carrier {
        guard let tracer else { return nil }
        var context = ServiceContext.topLevel
        tracer.extract(carrier, into: &context, using: reader)
        // A context the propagators found nothing in has nothing to inject either.
        return traceParent(of: context) == nil ? nil : context
    }

    /// The context a stored `traceparent` names.
    package func context(traceParent: String?) -> ServiceContext? {
        guard let traceParent, isOn else { return nil }
        return context(from: ["traceparent": traceParent], using: FieldReader())
    }

    /// The W3C `traceparent` of a span's context, for storing; nil when tracing is off.
    package func traceParent(of context: ServiceContext) -> String? {
        guard let tracer else { return nil }
        var fields: [String: String] = [:]
        tracer.inject(context, into: &fields, using: FieldWriter())
        return fields["traceparent"]
    }

    /// The trace id (32 hex digits) a `traceparent` (`00-<trace id>-<span id>-<flags>`) names, for log lines.
    package static func traceID(of traceParent: String?) -> String? {
        guard let parts = traceParent?.split(separator: "-"), parts.count == 4, parts[1].utf8.count == 32,
              parts[1].utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else { return nil }
        return String(parts[1])
    }

    struct FieldReader: Extractor {
        func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
    }

    struct FieldWriter: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
    }
}
