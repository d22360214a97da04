//! Results: one JSON line per run (printed as `RESULT {...}` and appended to
//! `--out`), histogram summaries, and `summarize`, which turns a file of such
//! lines into medians per scenario and label with ratios against Nchan.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use hdrhistogram::{Counter, Histogram};
use serde_json::{Map, Value, json};

use crate::Common;

/// Latency percentiles in ms, as JSON members named `{prefix}p50_ms`...
pub fn percentiles<T: Counter>(prefix: &str, h: &Histogram<T>, out: &mut Map<String, Value>) {
    let ms = |v: u64| (v as f64 / 1000.0 * 1000.0).round() / 1000.0;
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)] {
        out.insert(
            format!("{prefix}{name}_ms"),
            json!(ms(h.value_at_quantile(q))),
        );
    }
    out.insert(format!("{prefix}max_ms"), json!(ms(h.max())));
}

/// `p50 1.2 ms, p90 ..., max ...` for a histogram of µs.
pub fn describe<T: Counter>(h: &Histogram<T>) -> String {
    if h.is_empty() {
        return "no samples".to_string();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}

/// A run's outcome, written as one JSON line.
pub struct Outcome<'a> {
    pub common: &'a Common,
    pub scenario: &'a str,
    /// The metric `summarize` compares against Nchan.
    pub primary: &'a str,
    pub higher_is_better: bool,
    pub params: Value,
    pub metrics: Map<String, Value>,
    pub valid: bool,
    pub notes: Vec<String>,
}

impl Outcome<'_> {
    pub fn emit(self) -> anyhow::Result<()> {
        let line = json!({
            "scenario": self.scenario,
            "label": self.common.label(),
            "target": self.common.target.to_string(),
            "primary": self.primary,
            "higher_is_better": self.higher_is_better,
            "valid": self.valid,
            "params": self.params,
            "metrics": self.metrics,
            "notes": self.notes,
        });
        println!("RESULT {line}");
        if let Some(path) = &self.common.out {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct SummarizeArgs {
    /// Files of JSON lines written with --out.
    files: Vec<PathBuf>,
    /// The labels ratios are taken against: per scenario, the first one
    /// present (the peer; else an older build run beside the new one).
    #[arg(long = "baseline", default_values = ["nchan", "switchyard-baseline"])]
    baselines: Vec<String>,
    /// Print only the median of one metric, given as SCENARIO:LABEL:METRIC
    /// (nothing when there is none), for scripts.
    #[arg(long)]
    get: Option<String>,
    /// Show every metric, not only the main ones of each scenario.
    #[arg(long)]
    all_columns: bool,
}

/// The columns shown per scenario unless --all-columns.
fn main_columns(scenario: &str) -> Option<&'static [&'static str]> {
    Some(match scenario {
        "fanout-capacity" => &[
            "capacity_rate",
            "capacity_deliveries_per_s",
            "at_capacity_p50_ms",
            "at_capacity_p99_ms",
            "at_capacity_server_cpu_pct",
            "at_capacity_client_cpu_pct",
            "failed_rate",
            "failed_p99_ms",
            "failed_server_cpu_pct",
            "failed_client_cpu_pct",
            "failed_others_cpu_pct",
        ],
        "zipf-capacity" => &[
            "capacity_rate",
            "capacity_deliveries_per_s",
            "at_capacity_followers_per_event",
            "at_capacity_p50_ms",
            "at_capacity_p99_ms",
            "at_capacity_server_cpu_pct",
            "at_capacity_client_cpu_pct",
            "failed_rate",
            "failed_p99_ms",
            "failed_others_cpu_pct",
            "bytes_per_stream",
            "bytes_per_channel",
            "rss_before_mb",
            "rss_open_mb",
            "rss_touched_mb",
            "rss_end_mb",
            "touch_lost",
        ],
        "fanout" | "messages" | "messages-broadcast" => &[
            "rate",
            "deliveries_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p999_ms",
            "max_ms",
            "lost",
            "duplicated",
            "publish_p99_ms",
            "bytes_per_event",
            "server_us_per_delivery",
            "server_cpu_pct",
            "client_cpu_pct",
            "others_cpu_pct",
        ],
        "idle" => &[
            "streams",
            "bytes_per_stream",
            "rss_before_mb",
            "rss_after_mb",
            "received",
            "missed",
            "open_s",
            "broadcast_p50_ms",
            "broadcast_max_ms",
        ],
        "storm" => &[
            "streams",
            "opens_per_s",
            "open_s",
            "failed_to_open",
            "bytes_per_stream",
            "missed",
            "broadcast_p50_ms",
            "broadcast_max_ms",
        ],
        "edit" => &[
            "ops_per_s",
            "p50_ms",
            "p99_ms",
            "document_chars",
            "server_cpu_pct",
            "client_cpu_pct",
            "others_cpu_pct",
        ],
        "longpoll" | "publish" => &[
            "answers_per_s",
            "events_per_s",
            "requests_per_s",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "errors",
            "server_cpu_pct",
            "client_cpu_pct",
            "others_cpu_pct",
        ],
        _ => return None,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn fmt(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// CPU other processes may use (% of one core) before a run counts as busy.
const BUSY_OTHERS_PCT: f64 = 25.0;

/// A run during which other processes of the machine used more than
/// [`BUSY_OTHERS_PCT`] of a core; for `--capacity`, in the step that ended
/// the search.
fn busy(run: &Value) -> bool {
    let capacity = run["scenario"]
        .as_str()
        .is_some_and(|s| s.ends_with("-capacity"));
    let key = if capacity {
        "failed_others_cpu_pct"
    } else {
        "others_cpu_pct"
    };
    run["metrics"][key]
        .as_f64()
        .is_some_and(|v| v > BUSY_OTHERS_PCT)
}

/// Prints, per scenario, a markdown table of medians per label.
pub fn summarize(args: &SummarizeArgs) -> anyhow::Result<()> {
    // scenario -> label -> runs, in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut runs: BTreeMap<String, Vec<(String, Vec<Value>)>> = BTreeMap::new();
    for file in &args.files {
        for line in std::fs::read_to_string(file)?
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let v: Value = serde_json::from_str(line)?;
            let scenario = v["scenario"].as_str().unwrap_or("?").to_string();
            let label = v["label"].as_str().unwrap_or("?").to_string();
            if !runs.contains_key(&scenario) {
                order.push(scenario.clone());
            }
            let labels = runs.entry(scenario).or_default();
            match labels.iter_mut().find(|(l, _)| *l == label) {
                Some((_, list)) => list.push(v),
                None => labels.push((label, vec![v])),
            }
        }
    }
    if let Some(spec) = &args.get {
        let parts: Vec<&str> = spec.splitn(3, ':').collect();
        let [scenario, label, metric] = parts[..] else {
            anyhow::bail!("--get wants SCENARIO:LABEL:METRIC");
        };
        let values = runs
            .get(scenario)
            .and_then(|labels| labels.iter().find(|(l, _)| l == label))
            .map(|(_, list)| {
                list.iter()
                    .filter_map(|r| r["metrics"][metric].as_f64())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(m) = median(values) {
            println!("{m}");
        }
        return Ok(());
    }
    for scenario in order {
        let labels = &runs[&scenario];
        let first = &labels[0].1[0];
        let primary = first["primary"].as_str().unwrap_or("").to_string();
        let higher = first["higher_is_better"].as_bool().unwrap_or(true);
        let mut keys: Vec<String> = Vec::new();
        for (_, list) in labels {
            for r in list {
                if let Some(m) = r["metrics"].as_object() {
                    for k in m.keys() {
                        if !keys.contains(k) && m[k].is_number() {
                            keys.push(k.clone());
                        }
                    }
                }
            }
        }
        if !args.all_columns
            && let Some(main) = main_columns(&scenario)
        {
            keys = main
                .iter()
                .filter(|k| keys.iter().any(|x| x == *k))
                .map(|k| k.to_string())
                .collect();
        }
        println!(
            "\n### {scenario} (medians; primary metric: {primary}, {})\n",
            if higher {
                "higher is better"
            } else {
                "lower is better"
            }
        );
        println!("| label | runs | invalid | busy | {} |", keys.join(" | "));
        println!("|---|---|---|---|{}", "---|".repeat(keys.len()));
        let mut medians: Vec<(String, Option<f64>)> = Vec::new();
        for (label, list) in labels {
            let invalid = list
                .iter()
                .filter(|r| r["valid"] == Value::Bool(false))
                .count();
            let busy = list.iter().filter(|r| busy(r)).count();
            let cells: Vec<String> = keys
                .iter()
                .map(|k| {
                    let vals = list
                        .iter()
                        .filter_map(|r| r["metrics"][k].as_f64())
                        .collect();
                    median(vals).map_or("-".to_string(), fmt)
                })
                .collect();
            let p = median(
                list.iter()
                    .filter_map(|r| r["metrics"][&primary].as_f64())
                    .collect(),
            );
            medians.push((label.clone(), p));
            println!(
                "| {label} | {} | {invalid} | {busy} | {} |",
                list.len(),
                cells.join(" | ")
            );
        }
        let base = args
            .baselines
            .iter()
            .find_map(|b| medians.iter().find(|(l, _)| l == b))
            .and_then(|(l, v)| Some((l.clone(), (*v)?)));
        if let Some((baseline, base)) = base.filter(|(_, b)| *b != 0.0) {
            println!();
            for (label, v) in &medians {
                if *label != baseline
                    && let Some(v) = v
                {
                    println!(
                        "ratio {label}/{baseline}: {primary} {} / {} = {:.2}x",
                        fmt(*v),
                        fmt(base),
                        v / base
                    );
                }
            }
        }
    }
    Ok(())
}
