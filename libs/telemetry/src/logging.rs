//! Log and trace set-up: the global `tracing` subscriber, its output format, and the optional
//! OTLP span exporter.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::TelemetryError;

/// The environment variable that turns on span export. Its presence, not a flag, decides,
/// so the same binary and manifest work with and without a collector.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The environment variable holding the log filter, as everywhere in the Rust ecosystem.
pub const LOG_FILTER_ENV: &str = "RUST_LOG";

/// The filter used when `RUST_LOG` is unset: quiet enough for production, loud enough to see
/// start-up, membership and failover events.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// How log lines are written. Humans at a terminal want `Human`; log collectors in
/// Kubernetes want `Json`, one object per line.
///
/// It implements [`FromStr`] and [`fmt::Display`] (and not `clap::ValueEnum`) so this crate
/// does not depend on clap; binaries parse it with clap's `value_parser!(LogFormat)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Multi-field, human-readable lines (coloured when stderr is a terminal).
    #[default]
    Human,
    /// One JSON object per event, with the event's fields flattened to the top level.
    Json,
}

impl LogFormat {
    /// The accepted spellings, for help texts and error messages.
    pub const VARIANTS: [&'static str; 2] = ["human", "json"];

    /// The canonical spelling, the one [`FromStr`] accepts and [`fmt::Display`] prints.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Human => "human",
            LogFormat::Json => "json",
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let given = s.trim();
        if given.eq_ignore_ascii_case("human") {
            Ok(LogFormat::Human)
        } else if given.eq_ignore_ascii_case("json") {
            Ok(LogFormat::Json)
        } else {
            Err(TelemetryError::UnknownLogFormat {
                given: s.to_owned(),
            })
        }
    }
}

/// Keeps span export alive for as long as the binary runs. Hold it in `main` until the
/// process ends: dropping it flushes buffered spans and shuts the OTLP exporter down, so the
/// last spans before exit are not lost.
#[must_use = "dropping the guard immediately stops span export"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether this guard owns an OTLP span exporter, so a binary can say at start-up whether
    /// traces leave the process.
    pub fn exports_traces(&self) -> bool {
        self.tracer_provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "shutting down the OTLP span exporter failed");
        }
    }
}

/// Installs the process-wide `tracing` subscriber, so every shmdb binary logs (and traces)
/// the same way. Call it once, first thing in `#[tokio::main]`, and keep the returned guard.
///
/// - Filter: `RUST_LOG` if set (an invalid value is an error, not silently ignored), else
///   `info`; targets `RUST_LOG` does not name stay at `info`.
/// - Output: stderr, in `format`; stdout stays free for the CLI's results.
/// - Spans: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, also exported over OTLP/gRPC with
///   `service.name = service`, batched, and the W3C trace-context propagator is installed so
///   traces can cross process boundaries. The exporter needs the Tokio runtime to be running.
///
/// Calling it again in the same process (tests start many components in one process) does
/// not panic: it leaves the existing subscriber in place and returns a no-op guard.
pub fn init(service: &str, format: LogFormat) -> Result<TelemetryGuard, TelemetryError> {
    // Cheap early exit; the `try_init` below stays the authority if another thread races us.
    if tracing::dispatcher::has_been_set() {
        return Ok(TelemetryGuard::default());
    }
    let filter = env_filter()?;

    let tracer_provider = match std::env::var_os(OTLP_ENDPOINT_ENV) {
        Some(endpoint) if !endpoint.is_empty() => Some(otlp_tracer_provider(service)?),
        _ => None,
    };
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service.to_owned()))
            .with_filter(exported_span_filter())
    });

    let ansi = std::io::stderr().is_terminal();
    let (human_layer, json_layer) = match format {
        LogFormat::Human => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(ansi),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };

    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(human_layer)
        .with(json_layer)
        .with(otel_layer)
        .try_init();
    if installed.is_err() {
        // Someone else won: they own logging; our exporter would never see a span.
        if let Some(provider) = tracer_provider {
            let _ = provider.shutdown();
        }
        return Ok(TelemetryGuard::default());
    }

    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    tracing::info!(
        service,
        log_format = %format,
        exports_traces = tracer_provider.is_some(),
        "telemetry initialised"
    );
    Ok(TelemetryGuard { tracer_provider })
}

/// `RUST_LOG` if set, else [`DEFAULT_LOG_FILTER`]. Targets the directives do not name stay
/// at `info`, so `RUST_LOG=shmdb_storage_node=debug` adds detail without silencing the rest.
fn env_filter() -> Result<EnvFilter, TelemetryError> {
    let builder = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into());
    let directives = match std::env::var(LOG_FILTER_ENV) {
        Ok(directives) if !directives.trim().is_empty() => directives,
        _ => DEFAULT_LOG_FILTER.to_owned(),
    };
    builder
        .parse(&directives)
        .map_err(|source| TelemetryError::InvalidLogFilter { directives, source })
}

/// Crates whose spans never go to the collector: the exporter's own gRPC stack (exporting
/// its spans would make every export produce more spans to export, at debug levels) and the
/// OpenTelemetry SDK itself. They are still logged as `RUST_LOG` says.
const NOT_EXPORTED_TARGETS: [&str; 5] = ["h2", "hyper", "tonic", "tower", "opentelemetry"];

/// The per-layer filter in front of the OTLP layer; see [`NOT_EXPORTED_TARGETS`].
fn exported_span_filter() -> Targets {
    NOT_EXPORTED_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |targets, target| targets.with_target(*target, LevelFilter::OFF),
    )
}

/// A batching OTLP/gRPC span pipeline; the exporter reads its endpoint (and headers, timeout,
/// …) from the standard `OTEL_EXPORTER_OTLP_*` variables.
fn otlp_tracer_provider(service: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let resource = Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_parses_human_and_json() -> anyhow::Result<()> {
        assert_eq!("human".parse::<LogFormat>()?, LogFormat::Human);
        assert_eq!("json".parse::<LogFormat>()?, LogFormat::Json);
        assert_eq!("JSON".parse::<LogFormat>()?, LogFormat::Json);
        Ok(())
    }

    #[test]
    fn log_format_rejects_anything_else() {
        for bad in ["", "text", "jsonl", "humans", "yaml"] {
            let err = bad.parse::<LogFormat>();
            assert!(
                matches!(err, Err(TelemetryError::UnknownLogFormat { ref given }) if given == bad),
                "{bad:?} should be rejected, got {err:?}"
            );
        }
    }

    #[test]
    fn log_format_display_round_trips() -> anyhow::Result<()> {
        for format in [LogFormat::Human, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>()?, format);
        }
        assert_eq!(LogFormat::VARIANTS, ["human", "json"]);
        Ok(())
    }

    #[test]
    fn exporter_stack_spans_are_not_exported() {
        let filter = exported_span_filter();
        for target in [
            "h2::proto",
            "hyper_util::client",
            "tonic::transport",
            "opentelemetry_sdk",
        ] {
            assert!(
                !filter.would_enable(target, &tracing::Level::ERROR),
                "{target}"
            );
        }
        assert!(filter.would_enable("shmdb_storage_node::rpc", &tracing::Level::TRACE));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn otlp_pipeline_builds_and_shuts_down_without_a_collector() -> anyhow::Result<()> {
        // The exporter connects lazily, so no collector is needed to build it.
        let provider = otlp_tracer_provider("telemetry-test")?;
        let guard = TelemetryGuard {
            tracer_provider: Some(provider),
        };
        assert!(guard.exports_traces());
        drop(guard);
        Ok(())
    }

    #[tokio::test]
    async fn init_twice_in_one_process_does_not_panic() -> anyhow::Result<()> {
        let first = init("telemetry-test", LogFormat::Human)?;
        let second = init("telemetry-test", LogFormat::Json)?;
        assert!(!second.exports_traces());
        tracing::info!("still logging after a second init");
        drop(second);
        drop(first);
        Ok(())
    }
}
