//! A tiny Prometheus text registry: counters and histograms keyed by a bounded set of label
//! values.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Most series per metric; further label sets are dropped (and counted).
const MAX_SERIES: usize = 1000;
/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

type Labels = Vec<(String, String)>;

/// A counter.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The value.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct HistogramData {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A histogram of durations in seconds.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Arc<Mutex<HistogramData>>);

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let mut data = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (bound, bucket) in BUCKETS.iter().zip(data.buckets.iter_mut()) {
            if seconds <= *bound {
                *bucket += 1;
            }
        }
        data.count += 1;
        data.sum += seconds;
    }
}

#[derive(Debug, Default)]
struct Registry {
    counters: BTreeMap<String, BTreeMap<Labels, Counter>>,
    histograms: BTreeMap<String, BTreeMap<Labels, Histogram>>,
    dropped: u64,
}

/// The registry: cheap to clone, shared by the runtime and the layers.
#[derive(Clone, Debug, Default)]
pub struct Metrics(Arc<Mutex<Registry>>);

fn labels_of(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter `name` with `labels` (created at first use).
    #[must_use]
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Counter {
        let mut registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Registry {
            counters, dropped, ..
        } = &mut *registry;
        let series = counters.entry(name.to_owned()).or_default();
        let key = labels_of(labels);
        if let Some(counter) = series.get(&key) {
            return counter.clone();
        }
        let counter = Counter::default();
        if series.len() < MAX_SERIES {
            series.insert(key, counter.clone());
        } else {
            *dropped += 1;
        }
        counter
    }

    /// The histogram `name` with `labels` (created at first use).
    #[must_use]
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Histogram {
        let mut registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Registry {
            histograms,
            dropped,
            ..
        } = &mut *registry;
        let series = histograms.entry(name.to_owned()).or_default();
        let key = labels_of(labels);
        if let Some(histogram) = series.get(&key) {
            return histogram.clone();
        }
        let histogram = Histogram::default();
        if series.len() < MAX_SERIES {
            series.insert(key, histogram.clone());
        } else {
            *dropped += 1;
        }
        histogram
    }

    /// Everything, in the Prometheus text format.
    #[must_use]
    pub fn render(&self) -> String {
        let registry = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, series) in &registry.counters {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (labels, counter) in series {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    render_labels(labels, None),
                    counter.get()
                );
            }
        }
        for (name, series) in &registry.histograms {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (labels, histogram) in series {
                let data = histogram.0.lock().unwrap_or_else(PoisonError::into_inner);
                for (bound, bucket) in BUCKETS.iter().zip(data.buckets.iter()) {
                    let le = bound.to_string();
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {bucket}",
                        render_labels(labels, Some(&le))
                    );
                }
                let all = render_labels(labels, Some("+Inf"));
                let _ = writeln!(out, "{name}_bucket{all} {}", data.count);
                let plain = render_labels(labels, None);
                let _ = writeln!(out, "{name}_sum{plain} {}", data.sum);
                let _ = writeln!(out, "{name}_count{plain} {}", data.count);
            }
        }
        let _ = writeln!(
            out,
            "# TYPE switchboard_metrics_dropped_series_total counter"
        );
        let _ = writeln!(
            out,
            "switchboard_metrics_dropped_series_total {}",
            registry.dropped
        );
        out
    }
}

fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}
