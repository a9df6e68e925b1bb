//! The operator at scale on kwok's fake nodes (run by `bench/operator_scale.sh`).
//!
//! - `nodes --count N --pods P`: creates N Nodes for kwok to manage (annotation
//!   `kwok.x-k8s.io/node: fake`), each with room for P pods.
//! - `create-jobs --count J --replicas R`: applies J jobs of R replicas and waits until all J×R
//!   pods run; prints the seconds until all were created and until all ran.
//! - `steady --seconds S --pid PID --metrics URL [--sim URL] --jobs J`: over S seconds of
//!   steady state: the operator's CPU (utime+stime of PID) and RSS, the apiserver's requests by
//!   verb and resource (its own `apiserver_request_total`, before and after) and the operator's
//!   own (its `elasticjob_operator_api_requests_total`), per job per minute,
//!   the reconcile duration p50/p99 of the reconciles in the window (difference of the
//!   operator's histogram), and the status requests the launchers got (launcher-sim's counts).
//! - `failures --count K --jobs J`: K times, one running pod of a random job is failed (its
//!   status patched to Failed with exit code 1, as a kubelet would write it); prints the seconds
//!   until the job's `status.recentFailures` holds that pod and until its replacement runs.
//!
//! Each prints one JSON line for the script to collect. `--namespace NS` (default `scale`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use bench::{buckets, http_get, quantile, sample};
use elasticjob_crds::names::{LABEL_JOB_NAME, LABEL_REPLICA_INDEX};
use elasticjob_crds::spec::{Backoff, ElasticJob, FailurePolicy};

/// Requests in flight when creating objects (the operator's pod creation concurrency).
const CONCURRENCY: usize = 16;

/// The jobs measured: idle, and for the failure measurement, never out of restarts and
/// recreating a failed pod at once (`backoff: {initialSeconds: 0, maxSeconds: 0}`; the default
/// waits 10 s by design), so that a replacement's time is the operator's reaction alone.
fn job(name: &str, replicas: i32) -> ElasticJob {
    let mut j = bench::idle_job(name, replicas);
    j.spec.failure_policy = FailurePolicy {
        max_application_restarts: 1_000_000,
        backoff: Backoff {
            initial_seconds: 0,
            max_seconds: 0,
        },
        ..Default::default()
    };
    j
}

async fn create_nodes(client: Client, count: usize, pods: usize) -> Result<()> {
    let nodes: Api<Node> = Api::all(client);
    futures::stream::iter(0..count)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("kwok-node-{i}");
                let node: Node = serde_json::from_value(serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "annotations": {"kwok.x-k8s.io/node": "fake"},
                        "labels": {"type": "kwok", "kubernetes.io/hostname": name},
                    },
                    "status": {
                        "allocatable": {"cpu": "10000", "memory": "100Ti", "pods": pods.to_string()},
                        "capacity": {"cpu": "10000", "memory": "100Ti", "pods": pods.to_string()},
                    },
                }))?;
                match nodes.create(&PostParams::default(), &node).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(anyhow::Error::new(e).context(format!("creating node {name}"))),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Creates `count` jobs of `replicas`; the seconds until all were created and until all their
/// pods were Running.
async fn create_jobs(client: Client, ns: &str, count: usize, replicas: i32) -> Result<(f64, f64)> {
    let jobs: Api<ElasticJob> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let want = count * replicas as usize;
    let start = Instant::now();
    let watch = tokio::spawn(async move {
        let mut phase: HashMap<String, bool> = HashMap::new();
        let mut running = 0usize;
        let cfg = watcher::Config::default().labels(LABEL_JOB_NAME);
        let mut stream = watcher(pods, cfg).boxed();
        let mut last_report = Instant::now();
        while let Some(ev) = stream.try_next().await? {
            let mut apply = |p: Pod, gone: bool| {
                let is_running =
                    !gone && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                let was = phase.insert(p.name_any(), is_running).unwrap_or(false);
                if gone {
                    phase.remove(&p.name_any());
                }
                running = running + usize::from(is_running) - usize::from(was);
            };
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => apply(p, false),
                watcher::Event::Delete(p) => apply(p, true),
                _ => {}
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "operator-scale: {running}/{want} pods running after {:.0}s",
                    start.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            if running >= want {
                return Ok::<f64, anyhow::Error>(start.elapsed().as_secs_f64());
            }
        }
        bail!("pod watch ended")
    });
    futures::stream::iter(0..count)
        .map(|i| {
            let jobs = jobs.clone();
            async move {
                match jobs
                    .create(&PostParams::default(), &job(&format!("j{i}"), replicas))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .context("creating jobs")?;
    let created = start.elapsed().as_secs_f64();
    let running = watch.await??;
    Ok((created, running))
}

/// Request counter `metric` (the apiserver's `apiserver_request_total`, the operator's
/// `elasticjob_operator_api_requests_total`) summed by (verb, resource/subresource).
fn requests_by_verb(text: &str, metric: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, v)) = sample(line) else {
            continue;
        };
        if name != metric {
            continue;
        }
        let mut resource = labels.get("resource").copied().unwrap_or("").to_string();
        if let Some(sub) = labels.get("subresource").filter(|s| !s.is_empty()) {
            resource = format!("{resource}/{sub}");
        }
        let verb = labels.get("verb").copied().unwrap_or("").to_string();
        *out.entry((verb, resource)).or_insert(0.0) += v;
    }
    out
}

/// utime+stime of a process in seconds, and its RSS in MiB.
fn proc_usage(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok((ticks / 100.0, rss_kib / 1024.0))
}

async fn apiserver_metrics(client: &Client) -> Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

async fn sim_stats(url: Option<&str>) -> Result<serde_json::Value> {
    match url {
        Some(u) => Ok(serde_json::from_str(&http_get(u).await?)?),
        None => Ok(serde_json::Value::Null),
    }
}

async fn steady(
    client: Client,
    seconds: u64,
    pid: u32,
    metrics: &str,
    sim: Option<&str>,
    jobs: usize,
) -> Result<serde_json::Value> {
    const APISERVER: &str = "apiserver_request_total";
    const OPERATOR: &str = "elasticjob_operator_api_requests_total";
    let api0 = requests_by_verb(&apiserver_metrics(&client).await?, APISERVER);
    let op0 = http_get(metrics).await?;
    let sim0 = sim_stats(sim).await?;
    let (cpu0, _) = proc_usage(pid)?;
    let t0 = Instant::now();
    let mut rss_max: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_max = rss_max.max(proc_usage(pid)?.1);
    }
    let (cpu1, rss) = proc_usage(pid)?;
    let secs = t0.elapsed().as_secs_f64();
    let sim1 = sim_stats(sim).await?;
    let op1 = http_get(metrics).await?;
    let api1 = requests_by_verb(&apiserver_metrics(&client).await?, APISERVER);
    let per_job_min = |n: f64| n / jobs as f64 / (secs / 60.0);
    let grown = |before: &BTreeMap<(String, String), f64>,
                 after: &BTreeMap<(String, String), f64>| {
        let mut requests = serde_json::Map::new();
        for (key @ (verb, resource), v1) in after {
            let d = v1 - before.get(key).copied().unwrap_or(0.0);
            if d > 0.0 {
                requests.insert(
                    format!("{verb} {resource}"),
                    serde_json::json!({"total": d, "per_job_per_minute": per_job_min(d)}),
                );
            }
        }
        requests
    };
    let requests = grown(&api0, &api1);
    let operator_requests = grown(
        &requests_by_verb(&op0, OPERATOR),
        &requests_by_verb(&op1, OPERATOR),
    );
    let name = "elasticjob_reconcile_duration_seconds";
    let (b0, b1) = (buckets(&op0, name), buckets(&op1, name));
    let window: Vec<(f64, f64)> = b1
        .iter()
        .map(|&(le, c)| {
            (
                le,
                c - b0.iter().find(|b| b.0 == le).map(|b| b.1).unwrap_or(0.0),
            )
        })
        .collect();
    let reconciles = window.last().map(|b| b.1).unwrap_or(0.0);
    let diff = |k: &str| match (sim0.get(k), sim1.get(k)) {
        (Some(a), Some(b)) => b.as_f64().unwrap_or(0.0) - a.as_f64().unwrap_or(0.0),
        _ => 0.0,
    };
    Ok(serde_json::json!({
        "mode": "steady",
        "jobs": jobs,
        "seconds": secs,
        "operator_cpu_percent": 100.0 * (cpu1 - cpu0) / secs,
        "operator_rss_mib": rss,
        "operator_rss_max_mib": rss_max,
        "reconciles": reconciles,
        "reconciles_per_job_per_minute": per_job_min(reconciles),
        "reconcile_p50_ms": quantile(&window, 0.5).map(|s| s * 1e3),
        "reconcile_p99_ms": quantile(&window, 0.99).map(|s| s * 1e3),
        "launcher_status_requests_per_second": diff("status") / secs,
        "launcher_silent_connections_per_second": diff("silent") / secs,
        "requests": requests,
        "operator_requests": operator_requests,
    }))
}

/// Fails one running pod of job `name`; the seconds until the job's status records the failure
/// and until a replacement for that replica runs.
async fn fail_one(client: Client, ns: &str, name: &str) -> Result<(f64, f64)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let jobs: Api<ElasticJob> = Api::namespaced(client, ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("{LABEL_JOB_NAME}={name}")))
        .await?;
    let victim = list
        .items
        .iter()
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .context("no running pod")?;
    let uid = victim.uid().context("uid")?;
    let index = victim
        .labels()
        .get(LABEL_REPLICA_INDEX)
        .cloned()
        .context("replica index label")?;
    let containers: Vec<serde_json::Value> = victim
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            serde_json::json!({
                "name": c, "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
            })
        })
        .collect();
    // Watch both before the failure, so nothing is missed.
    let status_watch = {
        let jobs = jobs.clone();
        let uid = uid.clone();
        let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
        async move {
            let mut s = watcher(jobs, cfg).applied_objects().boxed();
            while let Some(j) = s.try_next().await? {
                let seen = j.status.as_ref().is_some_and(|st| {
                    st.recent_failures
                        .iter()
                        .any(|f| f.pod_uid.as_deref() == Some(uid.as_str()))
                });
                if seen {
                    return Ok::<Instant, anyhow::Error>(Instant::now());
                }
            }
            bail!("job watch ended")
        }
    };
    let pod_watch = {
        let pods = pods.clone();
        let uid = uid.clone();
        let cfg = watcher::Config::default().labels(&format!(
            "{LABEL_JOB_NAME}={name},{LABEL_REPLICA_INDEX}={index}"
        ));
        async move {
            let mut s = watcher(pods, cfg).applied_objects().boxed();
            while let Some(p) = s.try_next().await? {
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if running && p.uid().as_deref() != Some(uid.as_str()) {
                    return Ok::<Instant, anyhow::Error>(Instant::now());
                }
            }
            bail!("pod watch ended")
        }
    };
    let status_task = tokio::spawn(status_watch);
    let pod_task = tokio::spawn(pod_watch);
    // Let both watches list first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    let patch = serde_json::json!({
        "status": {"phase": "Failed", "containerStatuses": containers,
            "conditions": [{"type": "Ready", "status": "False"}]}
    });
    pods.patch_status(
        &victim.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .context("failing the pod")?;
    let limit = Duration::from_secs(120);
    let recorded = tokio::time::timeout(limit, status_task)
        .await
        .context("no status record in 120 s")???;
    let replaced = tokio::time::timeout(limit, pod_task)
        .await
        .context("no replacement running in 120 s")???;
    Ok((
        recorded.saturating_duration_since(start).as_secs_f64(),
        replaced.saturating_duration_since(start).as_secs_f64(),
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |k: &str| bench::flag(&args, k);
    let num = |k: &str| -> Result<usize> {
        arg(k)
            .with_context(|| format!("{k} N"))?
            .parse()
            .with_context(|| k.to_string())
    };
    let ns = arg("--namespace").unwrap_or_else(|| "scale".into());
    let client = Client::try_default().await?;
    match args.get(1).map(String::as_str) {
        Some("nodes") => {
            let (count, pods) = (num("--count")?, num("--pods")?);
            let t = Instant::now();
            create_nodes(client, count, pods).await?;
            println!(
                r#"{{"mode":"nodes","nodes":{count},"pods_per_node":{pods},"seconds":{:.2}}}"#,
                t.elapsed().as_secs_f64()
            );
        }
        Some("create-jobs") => {
            let (count, replicas) = (num("--count")?, num("--replicas")?);
            let (created, running) = create_jobs(client, &ns, count, replicas as i32).await?;
            println!(
                r#"{{"mode":"create-jobs","jobs":{count},"replicas":{replicas},"seconds_to_created":{created:.2},"seconds_to_all_running":{running:.2}}}"#
            );
        }
        Some("steady") => {
            let out = steady(
                client,
                num("--seconds")? as u64,
                num("--pid")? as u32,
                &arg("--metrics").context("--metrics URL")?,
                arg("--sim").as_deref(),
                num("--jobs")?,
            )
            .await?;
            println!("{out}");
        }
        Some("failures") => {
            let (count, jobs) = (num("--count")?, num("--jobs")?);
            let mut recorded = Vec::new();
            let mut replaced = Vec::new();
            for k in 0..count {
                // A spread of jobs without a random number generator: a stride coprime to most.
                let name = format!("j{}", (k * 7919 + 13) % jobs);
                let (r, p) = fail_one(client.clone(), &ns, &name).await?;
                eprintln!("operator-scale: {name}: recorded {r:.2}s, replaced {p:.2}s");
                recorded.push(r);
                replaced.push(p);
            }
            let q = |v: &mut Vec<f64>, q: f64| {
                v.sort_by(f64::total_cmp);
                let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
                v[i]
            };
            println!(
                "{}",
                serde_json::json!({
                    "mode": "failures", "failures": count,
                    "recorded_p50_s": q(&mut recorded, 0.5), "recorded_max_s": q(&mut recorded, 1.0),
                    "replaced_p50_s": q(&mut replaced, 0.5), "replaced_max_s": q(&mut replaced, 1.0),
                    "recorded_s": recorded, "replaced_s": replaced,
                })
            );
        }
        _ => bail!(
            "usage: operator-scale nodes --count N --pods P | create-jobs --count J --replicas R | steady --seconds S --pid PID --metrics URL [--sim URL] --jobs J | failures --count K --jobs J [--namespace NS]"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sum_by_verb_and_resource() {
        let text = r#"# HELP x
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 3
apiserver_request_total{code="500",component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",dry_run="",group="elasticjob.dev",resource="elasticjobs",scope="resource",subresource="status",verb="PATCH",version="v1"} 2
elasticjob_operator_api_requests_total{verb="PATCH",resource="elasticjobs/status",code="2xx"} 5
elasticjob_operator_api_requests_total{verb="PATCH",resource="elasticjobs/status",code="4xx"} 1
"#;
        let r = requests_by_verb(text, "apiserver_request_total");
        assert_eq!(r[&("LIST".into(), "pods".into())], 4.0);
        assert_eq!(r[&("PATCH".into(), "elasticjobs/status".into())], 2.0);
        let ours = requests_by_verb(text, "elasticjob_operator_api_requests_total");
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[&("PATCH".into(), "elasticjobs/status".into())], 6.0);
    }
}
