//! The one error type of the telemetry crate.

use std::net::SocketAddr;

/// Everything that can go wrong while setting up logging, tracing, metrics or the telemetry
/// HTTP server. One enum for the whole crate so binaries can `?` any telemetry call into
/// `anyhow` at start-up and print a single clear message.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A `--log-format` (or similar) value was neither `human` nor `json`; reported instead of
    /// silently falling back so a typo in a manifest is noticed.
    #[error("unknown log format {given:?}: expected \"human\" or \"json\"")]
    UnknownLogFormat {
        /// The rejected value, as given.
        given: String,
    },

    /// `RUST_LOG` held directives the filter could not parse; a bad filter would otherwise
    /// hide the very logs someone turned it on to see.
    #[error("invalid RUST_LOG filter {directives:?}")]
    InvalidLogFilter {
        /// The rejected directives, as given.
        directives: String,
        /// Why the filter rejected them.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` was set but the OTLP span exporter could not be built
    /// (typically a malformed endpoint URL).
    #[error("could not build the OTLP span exporter")]
    OtlpExporter(#[from] opentelemetry_otlp::ExporterBuildError),

    /// A constant label name given to a [`crate::MetricsRegistry`] is not a valid Prometheus
    /// label name; caught when the registry is made rather than at the first registration.
    #[error("invalid metric label name {name:?}")]
    InvalidLabelName {
        /// The rejected label name.
        name: String,
    },

    /// Prometheus refused to create or register a metric (bad name, label clash, or the same
    /// name registered twice in one registry).
    #[error("could not register metric {name:?}")]
    Metric {
        /// The metric's name.
        name: String,
        /// Why Prometheus refused it.
        #[source]
        source: prometheus::Error,
    },

    /// The telemetry HTTP server could not listen on its address (port taken, no permission).
    #[error("could not bind the telemetry HTTP server to {addr}")]
    Bind {
        /// The address we tried to listen on.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::TelemetryError;

    #[test]
    fn error_is_send_sync_static_so_it_fits_anyhow_and_clap() {
        fn assert_bounds<T: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<TelemetryError>();
    }
}
