//! What the benchmark binaries share: the idle job they create, their flag lookup, and reading
//! the operator's Prometheus metrics (a plain HTTP GET, samples, histogram quantiles).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};

use elasticjob_crds::spec::{ElasticJob, ElasticJobSpec};

/// An ElasticJob of `replicas` pods (min 1, max `replicas`) whose trainer idles (busybox
/// `sleep 3600`), with the default failure policy: set `spec.failure_policy` on the result for
/// another.
pub fn idle_job(name: &str, replicas: i32) -> ElasticJob {
    ElasticJob::new(
        name,
        ElasticJobSpec {
            min_replicas: 1,
            max_replicas: replicas,
            replicas: Some(replicas),
            nproc_per_node: Default::default(),
            max_restarts: 0,
            rendezvous: Default::default(),
            failure_policy: Default::default(),
            run_policy: Default::default(),
            launcher: Default::default(),
            gang: None,
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "trainer".into(),
                        image: Some("busybox".into()),
                        command: Some(vec!["sleep".into(), "3600".into()]),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
        },
    )
}

/// The value after the first `flag` in `args` (`--port 29401` → `"29401"`), if any.
pub fn flag(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The body of a plain HTTP/1.0 GET of an `http://host:port/path` URL (the metrics and stats
/// endpoints are local and unencrypted).
pub async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    s.write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(body))
}

/// A Prometheus sample line: name, labels, value; None for comments and lines that do not parse.
pub fn sample(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')?),
        None => (head, ""),
    };
    let mut map = BTreeMap::new();
    for kv in labels.split("\",").filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once("=\"")?;
        map.insert(k.trim_start_matches(','), v.trim_end_matches('"'));
    }
    Some((name, map, value))
}

/// The cumulative buckets (le, count) of histogram `name`, the buckets of every label set (e.g.
/// the reconcile outcome) added up by bound, in increasing order of bound.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let want = format!("{name}_bucket");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (_, labels, count) in text
        .lines()
        .filter_map(sample)
        .filter(|(n, _, _)| *n == want)
    {
        let le = match labels.get("le") {
            Some(&"+Inf") => f64::INFINITY,
            Some(le) => match le.parse() {
                Ok(le) => le,
                Err(_) => continue,
            },
            None => continue,
        };
        match out.iter_mut().find(|b| b.0 == le) {
            Some(b) => b.1 += count,
            None => out.push((le, count)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Quantile `q` of cumulative buckets (linear interpolation inside a bucket; the lower bound of
/// the +Inf bucket); None without observations.
pub fn quantile(b: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let want = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, c) in b {
        if c >= want {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let frac = if c > prev.1 {
                (want - prev.1) / (c - prev.1)
            } else {
                1.0
            };
            return Some(prev.0 + frac * (le - prev.0));
        }
        prev = (le, c);
    }
    Some(prev.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate() {
        let b = vec![
            (0.01, 50.0),
            (0.02, 99.0),
            (0.04, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5).unwrap() - 0.01).abs() < 1e-9);
        assert!((quantile(&b, 0.99).unwrap() - 0.02).abs() < 1e-9);
        assert_eq!(quantile(&[(1.0, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn buckets_add_label_sets_up_by_bound() {
        let text = "# TYPE x histogram\n\
            x_bucket{outcome=\"ok\",le=\"0.02\"} 40\n\
            x_bucket{outcome=\"ok\",le=\"0.01\"} 30\n\
            x_bucket{outcome=\"ok\",le=\"+Inf\"} 60\n\
            x_bucket{outcome=\"stale\",le=\"0.01\"} 20\n\
            x_bucket{outcome=\"stale\",le=\"0.02\"} 59\n\
            x_bucket{outcome=\"stale\",le=\"+Inf\"} 40\n\
            x_count{outcome=\"ok\"} 60\n\
            y_bucket{le=\"0.01\"} 7\n";
        assert_eq!(
            buckets(text, "x"),
            vec![(0.01, 50.0), (0.02, 99.0), (f64::INFINITY, 100.0)]
        );
    }

    #[test]
    fn flag_takes_the_next_argument() {
        let args: Vec<String> = ["bin", "steady", "--pid", "7", "--sim"]
            .map(String::from)
            .to_vec();
        assert_eq!(flag(&args, "--pid").as_deref(), Some("7"));
        assert_eq!(flag(&args, "--sim"), None);
        assert_eq!(flag(&args, "--jobs"), None);
    }
}
