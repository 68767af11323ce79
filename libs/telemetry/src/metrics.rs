//! Per-component Prometheus registries and helpers that create and register metrics in one
//! call.

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::TelemetryError;

/// Histogram buckets, in seconds, for operation latencies from 10 µs (an in-memory `get` on
/// the local node) to 10 s (a stalled range copy), 1–2.5–5 per decade. Shared so that every
/// component's latency histograms line up in dashboards and can be aggregated.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_010, 0.000_025, 0.000_050, // 10 µs ..
    0.000_100, 0.000_250, 0.000_500, // 100 µs ..
    0.001, 0.002_5, 0.005, // 1 ms ..
    0.010, 0.025, 0.050, // 10 ms ..
    0.100, 0.250, 0.500, // 100 ms ..
    1.0, 2.5, 5.0, // 1 s ..
    10.0,
];

/// The content type of [`MetricsRegistry::encode_text`]'s output (Prometheus text format
/// 0.0.4), for whoever serves it over HTTP.
pub const METRICS_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// A Prometheus registry owned by one component instance (one storage node, one commit
/// manager, …) rather than by the process.
///
/// Why not the process-wide default registry: tests run several storage nodes in one
/// process, and each must expose its own metrics on its own port without `AlreadyReg`
/// clashes between nodes registering the same metric names. Cloning is cheap and shares the
/// underlying registry, so a component keeps one clone and hands another to [`crate::serve`].
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    inner: Registry,
}

impl MetricsRegistry {
    /// A registry whose every metric carries `const_labels` (e.g. `node="sn-2"`), so series
    /// from different component instances stay apart once scraped. Label names are checked
    /// here so a typo fails at start-up, not at the first registration.
    pub fn new<K, V>(const_labels: impl IntoIterator<Item = (K, V)>) -> Result<Self, TelemetryError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let labels: std::collections::HashMap<String, String> = const_labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        if let Some(bad) = labels.keys().find(|name| !is_valid_label_name(name)) {
            return Err(TelemetryError::InvalidLabelName { name: bad.clone() });
        }
        let labels = (!labels.is_empty()).then_some(labels);
        let inner =
            Registry::new_custom(None, labels).map_err(|source| TelemetryError::Metric {
                name: "(registry constant labels)".to_owned(),
                source,
            })?;
        Ok(MetricsRegistry { inner })
    }

    /// The wrapped registry, for collectors this type has no helper for.
    pub fn registry(&self) -> &Registry {
        &self.inner
    }

    /// Registers a ready-made collector (e.g. a custom one that reads a component's state at
    /// scrape time); `name` is only used in the error.
    pub fn register_collector(
        &self,
        name: &str,
        collector: Box<dyn Collector>,
    ) -> Result<(), TelemetryError> {
        self.inner
            .register(collector)
            .map_err(|source| metric_error(name, source))
    }

    /// A new counter family with float values (e.g. bytes moved), registered here.
    pub fn register_counter_vec(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<CounterVec, TelemetryError> {
        self.create_and_register(name, || CounterVec::new(Opts::new(name, help), label_names))
    }

    /// A new integer counter family (e.g. operations by kind and outcome), registered here.
    pub fn register_int_counter_vec(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<IntCounterVec, TelemetryError> {
        self.create_and_register(name, || {
            IntCounterVec::new(Opts::new(name, help), label_names)
        })
    }

    /// A new unlabelled integer counter, registered here.
    pub fn register_int_counter(
        &self,
        name: &str,
        help: &str,
    ) -> Result<IntCounter, TelemetryError> {
        self.create_and_register(name, || IntCounter::new(name, help))
    }

    /// A new unlabelled integer gauge (e.g. bytes of memory in use), registered here.
    pub fn register_int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, TelemetryError> {
        self.create_and_register(name, || IntGauge::new(name, help))
    }

    /// A new integer gauge family (e.g. ranges held, by role), registered here.
    pub fn register_int_gauge_vec(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<IntGaugeVec, TelemetryError> {
        self.create_and_register(name, || {
            IntGaugeVec::new(Opts::new(name, help), label_names)
        })
    }

    /// A new histogram family with the given bucket bounds, registered here. Use
    /// [`MetricsRegistry::register_latency_histogram_vec`] for latencies.
    pub fn register_histogram_vec(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, TelemetryError> {
        self.create_and_register(name, || {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                label_names,
            )
        })
    }

    /// A new latency histogram family in seconds with [`LATENCY_BUCKETS`], registered here,
    /// so all shmdb latencies share one bucket layout.
    pub fn register_latency_histogram_vec(
        &self,
        name: &str,
        help: &str,
        label_names: &[&str],
    ) -> Result<HistogramVec, TelemetryError> {
        self.register_histogram_vec(name, help, label_names, LATENCY_BUCKETS)
    }

    /// A new unlabelled latency histogram in seconds with [`LATENCY_BUCKETS`], registered here.
    pub fn register_latency_histogram(
        &self,
        name: &str,
        help: &str,
    ) -> Result<Histogram, TelemetryError> {
        self.create_and_register(name, || {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        })
    }

    /// Every registered metric in the Prometheus text exposition format, as served on
    /// `/metrics`. A metric family that cannot be encoded (only possible with a faulty custom
    /// collector) is left out and logged, so one bad collector cannot blank the whole scrape.
    pub fn encode_text(&self) -> String {
        let encoder = TextEncoder::new();
        let families = self.inner.gather();
        let mut text = String::new();
        if encoder.encode_utf8(&families, &mut text).is_ok() {
            return text;
        }
        text.clear();
        for family in &families {
            let mut one = String::new();
            match encoder.encode_utf8(std::slice::from_ref(family), &mut one) {
                Ok(()) => text.push_str(&one),
                Err(err) => {
                    tracing::warn!(metric = family.name(), error = %err, "skipping a metric family that cannot be encoded");
                }
            }
        }
        text
    }

    /// Creates a metric and registers a clone of it (metrics share their state between
    /// clones), returning the caller's handle.
    fn create_and_register<C>(
        &self,
        name: &str,
        create: impl FnOnce() -> prometheus::Result<C>,
    ) -> Result<C, TelemetryError>
    where
        C: Collector + Clone + 'static,
    {
        let metric = create().map_err(|source| metric_error(name, source))?;
        self.inner
            .register(Box::new(metric.clone()))
            .map_err(|source| metric_error(name, source))?;
        Ok(metric)
    }
}

fn metric_error(name: &str, source: prometheus::Error) -> TelemetryError {
    TelemetryError::Metric {
        name: name.to_owned(),
        source,
    }
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`, and `__` prefixes are reserved.
fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__")
}

/// The value of the sample of metric `name` carrying exactly `labels` (in any order) in
/// Prometheus text `text`; tests use it because the order of labels in the output is not
/// part of the format.
#[cfg(test)]
pub(crate) fn sample_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, found) = match series.split_once('{') {
                Some((series_name, rest)) => {
                    let mut found: Vec<String> = rest
                        .strip_suffix('}')?
                        .split(',')
                        .filter(|pair| !pair.is_empty())
                        .map(str::to_owned)
                        .collect();
                    found.sort();
                    (series_name, found)
                }
                None => (series, Vec::new()),
            };
            (series_name == name && found == wanted)
                .then(|| value.parse().ok())
                .flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_span_10us_to_10s_increasing() {
        assert_eq!(LATENCY_BUCKETS.first(), Some(&0.000_010));
        assert_eq!(LATENCY_BUCKETS.last(), Some(&10.0));
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn two_registries_register_the_same_name_independently() -> anyhow::Result<()> {
        let node_a = MetricsRegistry::new([("node", "a")])?;
        let node_b = MetricsRegistry::new([("node", "b")])?;
        let ops_a = node_a.register_int_counter_vec("shmdb_ops_total", "ops", &["op"])?;
        let ops_b = node_b.register_int_counter_vec("shmdb_ops_total", "ops", &["op"])?;
        ops_a.with_label_values(&["get"]).inc_by(3);
        ops_b.with_label_values(&["get"]).inc();

        let text_a = node_a.encode_text();
        let text_b = node_b.encode_text();
        let get_on = |node| [("node", node), ("op", "get")];
        assert_eq!(
            sample_value(&text_a, "shmdb_ops_total", &get_on("a")),
            Some(3.0),
            "{text_a}"
        );
        assert_eq!(
            sample_value(&text_b, "shmdb_ops_total", &get_on("b")),
            Some(1.0),
            "{text_b}"
        );
        assert_eq!(sample_value(&text_a, "shmdb_ops_total", &get_on("b")), None);
        Ok(())
    }

    #[test]
    fn same_name_twice_in_one_registry_is_an_error() -> anyhow::Result<()> {
        let registry = MetricsRegistry::default();
        registry.register_int_gauge("shmdb_ranges", "ranges")?;
        let again = registry.register_int_gauge("shmdb_ranges", "ranges");
        assert!(
            matches!(again, Err(TelemetryError::Metric { ref name, .. }) if name == "shmdb_ranges")
        );
        Ok(())
    }

    #[test]
    fn invalid_const_label_name_is_rejected_up_front() {
        for bad in ["", "1node", "no-de", "__reserved"] {
            let made = MetricsRegistry::new([(bad, "x")]);
            assert!(
                matches!(made, Err(TelemetryError::InvalidLabelName { ref name }) if name == bad),
                "{bad:?}: {made:?}"
            );
        }
    }

    #[test]
    fn every_helper_registers_and_encodes() -> anyhow::Result<()> {
        let registry = MetricsRegistry::new(Vec::<(String, String)>::new())?;
        registry
            .register_counter_vec("c_total", "c", &["k"])?
            .with_label_values(&["v"])
            .inc_by(1.5);
        registry.register_int_counter("ic_total", "ic")?.inc();
        registry.register_int_gauge("g", "g")?.set(7);
        registry
            .register_int_gauge_vec("gv", "gv", &["k"])?
            .with_label_values(&["v"])
            .set(-2);
        registry
            .register_latency_histogram_vec("lat_seconds", "lat", &["op"])?
            .with_label_values(&["get"])
            .observe(0.000_3);
        registry
            .register_latency_histogram("lat1_seconds", "lat1")?
            .observe(2.0);
        registry
            .register_histogram_vec("size_bytes", "size", &[], &[1.0, 10.0])?
            .with_label_values::<&str>(&[])
            .observe(5.0);

        let text = registry.encode_text();
        for expected in [
            r#"c_total{k="v"} 1.5"#,
            "ic_total 1",
            "g 7",
            r#"gv{k="v"} -2"#,
            r#"lat_seconds_bucket{op="get",le="0.0005"} 1"#,
            r#"lat1_seconds_bucket{le="2.5"} 1"#,
            r#"size_bytes_bucket{le="10"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(METRICS_CONTENT_TYPE, "text/plain; version=0.0.4");
        Ok(())
    }
}
