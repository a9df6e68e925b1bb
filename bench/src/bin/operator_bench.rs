//! Operator benchmarks against the apiserver itself (run by `bench/operator.sh`).
//!
//! - `create-job --replicas N`: applies an ElasticJob of N replicas (workers that sleep) and
//!   prints the seconds until a watch has seen all N of its pods; the operator must be running.
//! - `create-plain --replicas N`: the baseline. A plain kube client creates the same N pods (the
//!   operator's own `desired::pod` for the same job, with the same concurrency) and prints the
//!   seconds until the same watch has seen them all.
//! - `create-jobs --count N`: applies N one-replica jobs and waits until every one has a status.
//! - `quantiles --metrics URL`: p50/p99 of the operator's reconcile duration histogram.
//!
//! Each prints one JSON line for the script to collect.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use elasticjob_crds::spec::ElasticJob;
use elasticjob_operator::desired::{self, Settings};

/// The operator's pod creation concurrency (operator/src/controller.rs), so both sides send the
/// same way.
const CONCURRENCY: usize = 16;

/// Seconds from `start` until a watch of pods with the job's label has seen `n` distinct pods.
async fn wait_pods(pods: Api<Pod>, job: String, n: usize, start: Instant) -> Result<f64> {
    let cfg = watcher::Config::default().labels(&format!("elasticjob.dev/job-name={job}"));
    let mut seen = BTreeSet::new();
    let mut stream = watcher(pods, cfg).applied_objects().boxed();
    while let Some(p) = stream.try_next().await? {
        seen.insert(p.name_any());
        if seen.len() >= n {
            return Ok(start.elapsed().as_secs_f64());
        }
    }
    bail!("watch ended after {} pods", seen.len())
}

async fn create_job(client: Client, ns: &str, name: &str, replicas: i32) -> Result<f64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let jobs: Api<ElasticJob> = Api::namespaced(client, ns);
    let start = Instant::now();
    let watch = tokio::spawn(wait_pods(pods, name.to_string(), replicas as usize, start));
    jobs.create(&PostParams::default(), &bench::idle_job(name, replicas))
        .await
        .context("creating the job")?;
    watch.await?
}

async fn create_plain(client: Client, ns: &str, name: &str, replicas: i32) -> Result<f64> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The operator's pods for this job, owned by a (never created) job of that name.
    let mut j = bench::idle_job(name, replicas);
    j.metadata.namespace = Some(ns.into());
    j.metadata.uid = Some("00000000-0000-0000-0000-00000000beef".into());
    let settings = Settings {
        launcher_image: Some("elasticjob/elastic-launch:bench".into()),
        ..Settings::default()
    };
    let docs: Vec<Pod> = (0..replicas as u32)
        .map(|i| desired::pod(&j, i, &settings))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let watch = tokio::spawn(wait_pods(pods.clone(), name.to_string(), docs.len(), start));
    futures::stream::iter(docs)
        .map(|p| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &p).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .context("creating pods")?;
    let t = watch.await??;
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels(&format!("elasticjob.dev/job-name={name}")),
    )
    .await?;
    Ok(t)
}

async fn create_jobs(client: Client, ns: &str, count: usize) -> Result<f64> {
    let jobs: Api<ElasticJob> = Api::namespaced(client, ns);
    let start = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let jobs = jobs.clone();
            async move {
                jobs.create(
                    &PostParams::default(),
                    &bench::idle_job(&format!("j{i}"), 1),
                )
                .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    loop {
        let list = jobs.list(&ListParams::default()).await?;
        let with_status = list
            .items
            .iter()
            .filter(|j| j.status.as_ref().and_then(|s| s.state).is_some())
            .count();
        if with_status >= count {
            return Ok(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// p50 and p99 of a Prometheus histogram (all label sets added up), and its observations.
fn quantiles(text: &str, name: &str) -> Result<(f64, f64, u64)> {
    let b = bench::buckets(text, name);
    match (bench::quantile(&b, 0.5), bench::quantile(&b, 0.99)) {
        (Some(p50), Some(p99)) => Ok((p50, p99, b.last().map_or(0, |b| b.1 as u64))),
        _ => bail!("no observations of {name}"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| bench::flag(&args, k);
    let ns = arg("--namespace").unwrap_or_else(|| "default".into());
    match args.get(1).map(String::as_str) {
        Some("create-job") | Some("create-plain") => {
            let replicas: i32 = arg("--replicas").context("--replicas N")?.parse()?;
            let name = arg("--name").context("--name NAME")?;
            let client = Client::try_default().await?;
            let secs = if args[1] == "create-job" {
                create_job(client, &ns, &name, replicas).await?
            } else {
                create_plain(client, &ns, &name, replicas).await?
            };
            println!(
                r#"{{"mode":"{}","pods":{replicas},"seconds":{secs:.3},"pods_per_second":{:.1}}}"#,
                args[1],
                replicas as f64 / secs
            );
        }
        Some("create-jobs") => {
            let count: usize = arg("--count").context("--count N")?.parse()?;
            let secs = create_jobs(Client::try_default().await?, &ns, count).await?;
            println!(
                r#"{{"mode":"create-jobs","jobs":{count},"seconds_to_all_status":{secs:.3}}}"#
            );
        }
        Some("quantiles") => {
            let url = arg("--metrics").context("--metrics URL")?;
            let text = bench::http_get(&url).await?;
            let (p50, p99, n) = quantiles(&text, "elasticjob_reconcile_duration_seconds")?;
            println!(
                r#"{{"mode":"quantiles","reconciles":{n},"p50_ms":{:.2},"p99_ms":{:.2}}}"#,
                p50 * 1e3,
                p99 * 1e3
            );
        }
        _ => bail!(
            "usage: operator-bench create-job|create-plain --name NAME --replicas N | create-jobs --count N | quantiles --metrics URL [--namespace NS]"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate() {
        let text = "x_bucket{le=\"0.01\"} 50\nx_bucket{le=\"0.02\"} 99\nx_bucket{le=\"0.04\"} 100\nx_bucket{le=\"+Inf\"} 100\n";
        let (p50, p99, n) = quantiles(text, "x").unwrap();
        assert_eq!(n, 100);
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        assert!((p99 - 0.02).abs() < 1e-9, "{p99}");
    }
}
