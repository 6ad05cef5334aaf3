import Foundation
import KoalaDelivery
import Logging
import OTel
import ServiceLifecycle

/// OpenTelemetry traces, exported over OTLP/HTTP by swift-otel when the standard variables ask for them
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); otherwise off, and free. swift-otel reads
/// the other standard variables itself: `OTEL_SERVICE_NAME` (default here: koala-router), `OTEL_EXPORTER_OTLP_PROTOCOL`
/// (`http/protobuf`, the default here, or `http/json`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`,
/// `OTEL_RESOURCE_ATTRIBUTES`. Logs and metrics stay where they are (standard error, `/metrics`).
enum TraceExport {
    /// Why tracing cannot start as configured, said before anything listens.
    struct Refused: Error, CustomStringConvertible {
        let description: String
    }

    static func make(environment: [String: String], logger: Logger) throws -> (tracing: WebhookTracing, service: (any Service)?) {
        let endpoint = environment["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
        guard let endpoint, !endpoint.isEmpty, environment["OTEL_SDK_DISABLED"]?.lowercased() != "true",
              environment["OTEL_TRACES_EXPORTER"]?.lowercased() != "none" else { return (.off, nil) }
        let requested = (environment["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] ?? environment["OTEL_EXPORTER_OTLP_PROTOCOL"])?.lowercased()
        if let requested, !["http/protobuf", "http/json"].contains(requested) {
            throw Refused(description: "OTEL_EXPORTER_OTLP_PROTOCOL=\(requested) is not supported: this build exports traces over OTLP/HTTP only; set http/protobuf (the default) or http/json")
        }
        var configuration = OTel.Configuration.default
        configuration.serviceName = "koala-router"
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.otlpExporter.protocol = .httpProtobuf
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        do {
            let backend = try OTel.makeTracingBackend(configuration: configuration)
            logger.info("tracing: spans exported over OTLP/HTTP", metadata: ["endpoint": "\(endpoint)"])
            return (WebhookTracing(backend.factory), backend.service)
        } catch {
            throw Refused(description: "could not start the trace exporter for \(endpoint): \(error)")
        }
    }
}
