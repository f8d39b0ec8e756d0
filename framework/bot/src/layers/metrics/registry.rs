//! The registry behind [`Metrics`](super::Metrics): counters and histograms with bounded series,
//! rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How many label sets one metric may have, by default.
pub const DEFAULT_MAX_SERIES: usize = 1_000;
/// How many metrics a registry may hold, by default.
pub const DEFAULT_MAX_METRICS: usize = 256;
/// The histogram buckets (upper bounds, in seconds): 1 ms to 10 s.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The counter of series that were not recorded.
pub const DROPPED_SERIES: &str = "switchboard_metrics_dropped_series_total";

const MAX_LABELS: usize = 16;
const MAX_LABEL_VALUE_BYTES: usize = 256;
const MAX_NAME_BYTES: usize = 200;

/// A monotonic counter. Clones count into the same series.
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

    /// The current value.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct HistogramData {
    /// Cumulative: `counts[i]` observations were at most `LATENCY_BUCKETS[i]`.
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A histogram of seconds over [`LATENCY_BUCKETS`]. Clones observe into the same series.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<Mutex<HistogramData>>);

impl Default for Histogram {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(HistogramData {
            counts: [0; LATENCY_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        })))
    }
}

impl Histogram {
    /// Records one observation, in seconds (NaN and infinities are ignored).
    pub fn observe(&self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let mut data = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (bound, count) in LATENCY_BUCKETS.iter().zip(data.counts.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        data.count += 1;
        data.sum += seconds;
    }

    /// Records a duration.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// How many observations were recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).count
    }

    /// The sum of the observations.
    #[must_use]
    pub fn sum(&self) -> f64 {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).sum
    }
}

/// Label names and values, sorted by name.
type Labels = Vec<(String, String)>;

#[derive(Debug)]
enum Series {
    Counter(BTreeMap<Labels, Counter>),
    Histogram(BTreeMap<Labels, Histogram>),
}

#[derive(Debug, Default)]
struct Family {
    help: Option<String>,
    series: Option<Series>,
}

#[derive(Debug)]
struct Registry {
    max_series: usize,
    max_metrics: usize,
    families: Mutex<BTreeMap<String, Family>>,
    dropped: Counter,
}

/// A registry of counters and histograms rendered in the Prometheus text format. Clones share
/// the registry. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Registry>);

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with the default caps.
    #[must_use]
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_MAX_SERIES, DEFAULT_MAX_METRICS)
    }

    /// An empty registry holding at most `max_series` label sets per metric and `max_metrics`
    /// metrics.
    #[must_use]
    pub fn with_limits(max_series: usize, max_metrics: usize) -> Self {
        Self(Arc::new(Registry {
            max_series,
            max_metrics,
            families: Mutex::new(BTreeMap::new()),
            dropped: Counter::default(),
        }))
    }

    /// Sets the help text of a metric (shown as `# HELP`).
    pub fn describe(&self, name: &str, help: &str) {
        if !valid_metric_name(name) || name == DROPPED_SERIES {
            return;
        }
        let mut families = self.families();
        if let Some(family) = self.family(&mut families, name) {
            family.help = Some(help.to_owned());
        }
    }

    /// The counter of `name` with these labels, registered on first use.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Counter {
        self.series(name, labels, false, |series| match series {
            Series::Counter(map) => Some(map),
            Series::Histogram(_) => None,
        })
        .unwrap_or_default()
    }

    /// The histogram of `name` with these labels, registered on first use.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Histogram {
        self.series(name, labels, true, |series| match series {
            Series::Histogram(map) => Some(map),
            Series::Counter(_) => None,
        })
        .unwrap_or_default()
    }

    /// How many series were not recorded (over a cap, or invalid).
    #[must_use]
    pub fn dropped_series(&self) -> u64 {
        self.0.dropped.get()
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        let families = self.families();
        let mut out = String::new();
        for (name, family) in families.iter() {
            let Some(series) = &family.series else {
                continue;
            };
            if let Some(help) = &family.help {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
            }
            match series {
                Series::Counter(map) => {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    for (labels, counter) in map {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            render_labels(labels, None),
                            counter.get()
                        );
                    }
                }
                Series::Histogram(map) => {
                    let _ = writeln!(out, "# TYPE {name} histogram");
                    for (labels, histogram) in map {
                        render_histogram(&mut out, name, labels, histogram);
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP {DROPPED_SERIES} Series not recorded: over a cap, or an invalid name or label.\n\
             # TYPE {DROPPED_SERIES} counter\n\
             {DROPPED_SERIES} {}",
            self.0.dropped.get()
        );
        out
    }

    fn families(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Family>> {
        self.0
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The family of `name`, made if the registry has room.
    fn family<'a>(
        &self,
        families: &'a mut BTreeMap<String, Family>,
        name: &str,
    ) -> Option<&'a mut Family> {
        if !families.contains_key(name) && families.len() >= self.0.max_metrics {
            return None;
        }
        Some(families.entry(name.to_owned()).or_default())
    }

    /// The series of `name` and `labels` in the map `pick` finds, made if valid and room.
    fn series<T: Clone + Default>(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: bool,
        pick: impl Fn(&mut Series) -> Option<&mut BTreeMap<Labels, T>>,
    ) -> Option<T> {
        let found = self.find_series(name, labels, histogram, pick);
        if found.is_none() {
            self.0.dropped.inc();
        }
        found
    }

    fn find_series<T: Clone + Default>(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        histogram: bool,
        pick: impl Fn(&mut Series) -> Option<&mut BTreeMap<Labels, T>>,
    ) -> Option<T> {
        if !valid_metric_name(name) || name == DROPPED_SERIES {
            return None;
        }
        let labels = valid_labels(labels, histogram)?;
        let mut families = self.families();
        let family = self.family(&mut families, name)?;
        let series = family.series.get_or_insert_with(|| {
            if histogram {
                Series::Histogram(BTreeMap::new())
            } else {
                Series::Counter(BTreeMap::new())
            }
        });
        // None: the name is registered with the other type.
        let map = pick(series)?;
        if let Some(found) = map.get(&labels) {
            return Some(found.clone());
        }
        if map.len() >= self.0.max_series {
            return None;
        }
        Some(map.entry(labels).or_default().clone())
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_BYTES
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str, histogram: bool) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_BYTES
        && !name.starts_with("__")
        && !(histogram && name == "le")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The labels sorted by name, if every name is valid, unique, and every value short enough.
fn valid_labels(labels: &[(&str, &str)], histogram: bool) -> Option<Labels> {
    if labels.len() > MAX_LABELS {
        return None;
    }
    let mut sorted: Labels = Vec::with_capacity(labels.len());
    for (name, value) in labels {
        if !valid_label_name(name, histogram) || value.len() > MAX_LABEL_VALUE_BYTES {
            return None;
        }
        sorted.push(((*name).to_owned(), (*value).to_owned()));
    }
    sorted.sort();
    let unique = sorted.windows(2).all(|pair| match pair {
        [a, b] => a.0 != b.0,
        _ => true,
    });
    unique.then_some(sorted)
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{a="1",b="2"}` (with `le` last, for histogram buckets), or nothing without labels.
fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(name, value)| format!("{name}=\"{}\"", escape_value(value)))
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

fn render_histogram(out: &mut String, name: &str, labels: &Labels, histogram: &Histogram) {
    let data = histogram.0.lock().unwrap_or_else(PoisonError::into_inner);
    for (bound, count) in LATENCY_BUCKETS.iter().zip(data.counts.iter()) {
        let le = format!("{bound}");
        let _ = writeln!(
            out,
            "{name}_bucket{} {count}",
            render_labels(labels, Some(&le))
        );
    }
    let plain = render_labels(labels, None);
    let _ = writeln!(
        out,
        "{name}_bucket{} {}",
        render_labels(labels, Some("+Inf")),
        data.count
    );
    let _ = writeln!(out, "{name}_sum{plain} {}", data.sum);
    let _ = writeln!(out, "{name}_count{plain} {}", data.count);
}

#[cfg(test)]
pub(crate) mod exposition {
    //! A checker of the Prometheus text format, for tests.

    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

    use super::{valid_label_name, valid_metric_name};

    /// Checks every line against the Prometheus text format: comments are `# HELP name text`
    /// or `# TYPE name counter|histogram` (before the metric's samples); samples are
    /// `name{label="value",...} number` with valid names and escaped values. Returns the
    /// samples as (name with labels, value).
    pub(crate) fn parse(text: &str) -> Vec<(String, f64)> {
        let mut typed = std::collections::HashSet::new();
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let mut parts = comment.splitn(3, ' ');
                let (keyword, name, rest) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                assert!(valid_metric_name(name), "{line}");
                match keyword {
                    "HELP" => assert!(!typed.contains(name), "HELP after samples: {line}"),
                    "TYPE" => {
                        assert!(["counter", "histogram"].contains(&rest), "{line}");
                        assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
                    }
                    _ => panic!("unknown comment: {line}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(valid_metric_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {line}");
            if let Some(labels) = series.strip_prefix(name)
                && !labels.is_empty()
            {
                let inner = labels.strip_prefix('{').unwrap().strip_suffix('}').unwrap();
                check_labels(inner, line);
            }
            samples.push((series.to_owned(), value));
        }
        samples
    }

    fn check_labels(mut rest: &str, line: &str) {
        while !rest.is_empty() {
            let (name, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
            assert!(valid_label_name(name, false) || name == "le", "{line}");
            // The value runs to the first unescaped quote.
            let mut end = None;
            let mut escaped = false;
            for (i, c) in after.char_indices() {
                match (escaped, c) {
                    (true, '\\' | '"' | 'n') => escaped = false,
                    (true, _) => panic!("bad escape: {line}"),
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    (false, '\n') => panic!("raw newline: {line}"),
                    (false, _) => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated value: {line}"));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    pub(crate) fn sample(samples: &[(String, f64)], series: &str) -> f64 {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .unwrap_or_else(|| panic!("no {series} in {samples:?}"))
            .1
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::exposition::{parse, sample};
    use super::*;

    #[test]
    fn metrics_render_valid_prometheus_text() {
        let metrics = Metrics::new();
        metrics.describe("jobs_total", "Jobs done.\nBy outcome \\ kind.");
        metrics
            .counter("jobs_total", &[("outcome", "ok"), ("kind", "a")])
            .add(2);
        metrics
            .counter("jobs_total", &[("kind", "a"), ("outcome", "ok")])
            .inc();
        metrics
            .counter(
                "jobs_total",
                &[("kind", "we\"ird\n\\"), ("outcome", "failed")],
            )
            .inc();
        metrics.counter("plain_total", &[]).inc();
        let h = metrics.histogram("latency_seconds", &[("kind", "a")]);
        h.observe(0.003);
        h.observe(0.2);
        h.observe(30.0);
        h.observe(f64::NAN);
        let text = metrics.render();
        let samples = parse(&text);
        assert_eq!(
            sample(&samples, "jobs_total{kind=\"a\",outcome=\"ok\"}"),
            3.0
        );
        assert_eq!(
            sample(
                &samples,
                "jobs_total{kind=\"we\\\"ird\\n\\\\\",outcome=\"failed\"}"
            ),
            1.0
        );
        assert_eq!(sample(&samples, "plain_total"), 1.0);
        assert_eq!(
            sample(&samples, "latency_seconds_bucket{kind=\"a\",le=\"0.001\"}"),
            0.0
        );
        assert_eq!(
            sample(&samples, "latency_seconds_bucket{kind=\"a\",le=\"0.005\"}"),
            1.0
        );
        assert_eq!(
            sample(&samples, "latency_seconds_bucket{kind=\"a\",le=\"0.25\"}"),
            2.0
        );
        assert_eq!(
            sample(&samples, "latency_seconds_bucket{kind=\"a\",le=\"10\"}"),
            2.0
        );
        assert_eq!(
            sample(&samples, "latency_seconds_bucket{kind=\"a\",le=\"+Inf\"}"),
            3.0
        );
        assert_eq!(sample(&samples, "latency_seconds_count{kind=\"a\"}"), 3.0);
        assert!((sample(&samples, "latency_seconds_sum{kind=\"a\"}") - 30.203).abs() < 1e-9);
        assert!(text.contains("# HELP jobs_total Jobs done.\\nBy outcome \\\\ kind.\n"));
        assert!(text.contains("# TYPE latency_seconds histogram\n"));
        assert_eq!(sample(&samples, DROPPED_SERIES), 0.0);
    }

    #[test]
    fn metrics_series_are_bounded_and_drops_counted() {
        let metrics = Metrics::with_limits(3, 2);
        for n in 0..10 {
            metrics.counter("a_total", &[("n", &n.to_string())]).inc();
        }
        metrics.counter("b_total", &[]).inc();
        // A third metric is over the metric cap.
        metrics.counter("c_total", &[]).inc();
        let samples = parse(&metrics.render());
        let a = samples
            .iter()
            .filter(|(s, _)| s.starts_with("a_total"))
            .count();
        assert_eq!(a, 3);
        assert!(!samples.iter().any(|(s, _)| s.starts_with("c_total")));
        assert_eq!(metrics.dropped_series(), 7 + 1);
        assert_eq!(sample(&samples, DROPPED_SERIES), 8.0);
        // Existing series keep counting.
        metrics.counter("a_total", &[("n", "0")]).inc();
        assert_eq!(sample(&parse(&metrics.render()), "a_total{n=\"0\"}"), 2.0);
    }

    #[test]
    fn metrics_refuse_invalid_names_labels_and_type_changes() {
        let metrics = Metrics::new();
        metrics.counter("x_total", &[]).inc();
        let invalid: [(&str, &[(&str, &str)]); 6] = [
            ("1bad", &[]),
            ("bad name", &[]),
            ("ok_total", &[("bad-label", "v")]),
            ("ok_total", &[("__reserved", "v")]),
            ("ok_total", &[("a", "1"), ("a", "2")]),
            (DROPPED_SERIES, &[]),
        ];
        for (name, labels) in invalid {
            metrics.counter(name, labels).inc();
        }
        // A histogram may not use `le`; a counter name may not become a histogram.
        metrics.histogram("h_seconds", &[("le", "1")]).observe(1.0);
        metrics.histogram("x_total", &[]).observe(1.0);
        metrics.counter("v_total", &[("a", &"x".repeat(300))]).inc();
        assert_eq!(metrics.dropped_series(), 9);
        let samples = parse(&metrics.render());
        assert_eq!(samples.len(), 2, "{samples:?}");
        assert_eq!(sample(&samples, "x_total"), 1.0);
    }
}
