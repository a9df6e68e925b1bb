//! Helpers of the chart tests: where the chart and helm are, `helm template`
//! parsed into objects, and small lookups over them.
//!
//! - `tests/render.rs` (plain): `helm lint`, `helm template` with default and other values, the
//!   values schema's refusals, the chart's CRD (a template, kept on uninstall) and its copy of
//!   the generated CRD, the PodDisruptionBudget, NOTES.txt.
//! - `tests/scripts.rs` (plain): `bash -n` and shellcheck on `tests/kind/*.sh`.
//! - `tests/install.rs` (feature `chart-tests`): install, upgrade and uninstall on the local
//!   cluster, and the operator's RBAC, allowed and refused.
//!
//! helm is `ELASTICJOB_HELM`, else the provisioned one (`tests/cluster/provision.sh`), else the
//! one on PATH; nothing is skipped when it is missing: the tests fail and say how to get it.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The release name used by the tests; with the chart's name it gives the full name below.
pub const RELEASE: &str = "ej";
/// The release namespace used by the tests.
pub const NAMESPACE: &str = "elasticjob-system";
/// `<release>-<chart>`: the name of the Deployment, ServiceAccount, ClusterRole, ...
pub const FULLNAME: &str = "ej-elasticjob-operator";

pub use local_cluster::testing::repo_root;

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/elasticjob-operator")
}

/// `${ELASTICJOB_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/elasticjob/cluster}`, where
/// tests/cluster/provision.sh puts kubectl and helm (under `bin/`).
pub fn cluster_cache() -> PathBuf {
    if let Some(d) = std::env::var_os("ELASTICJOB_CLUSTER_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("elasticjob/cluster")
}

/// The helm binary: `ELASTICJOB_HELM`, else `<cluster cache>/bin/helm`, else `helm` on PATH.
/// Panics with how to get one.
pub fn helm_bin() -> PathBuf {
    if let Some(h) = std::env::var_os("ELASTICJOB_HELM").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let provisioned = cluster_cache().join("bin/helm");
    if provisioned.is_file() {
        return provisioned;
    }
    if let Some(on_path) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("helm"))
            .find(|h| h.is_file())
    }) {
        return on_path;
    }
    panic!(
        "helm not found (ELASTICJOB_HELM, {}, PATH): run tests/cluster/provision.sh (make cluster-provision), which installs helm v4 there, or put helm on PATH",
        provisioned.display()
    )
}

/// Runs helm with `args` (no cluster needed for lint and template).
pub fn helm(args: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(args)
        .output()
        .expect("running helm")
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `helm template ej <chart> -n elasticjob-system --set <s>...` (plus `extra` args): the rendered
/// objects, or helm's stderr when it refuses.
pub fn template(sets: &[&str], extra: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    args.extend(extra);
    let o = helm(&args);
    if !o.status.success() {
        return Err(text(&o.stderr));
    }
    let yaml = text(&o.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("helm template output does not parse: {e}\n{yaml}"));
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The chart's NOTES.txt as `helm install --dry-run=client` prints it (no cluster needed) with
/// `--set <s>...`: the text after `NOTES:`.
pub fn notes(sets: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
        "--dry-run=client",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = helm(&args);
    let out = text(&o.stdout);
    assert!(
        o.status.success(),
        "helm {}: {}{}",
        args.join(" "),
        out,
        text(&o.stderr)
    );
    match out.split_once("\nNOTES:\n") {
        Some((_, notes)) => notes.to_string(),
        None => panic!("no NOTES in the output of helm {}:\n{out}", args.join(" ")),
    }
}

/// `template` that must succeed.
pub fn render(sets: &[&str]) -> Vec<Value> {
    template(sets, &[]).unwrap_or_else(|e| panic!("helm template --set {sets:?} failed: {e}"))
}

/// `kind/namespace/name` of every object, sorted (namespace empty when cluster-scoped).
pub fn inventory(docs: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}/{}",
                str_at(d, "/kind"),
                str_at(d, "/metadata/namespace"),
                str_at(d, "/metadata/name")
            )
        })
        .collect();
    v.sort();
    v
}

/// The object of `kind` named `name`; panics with what was rendered when there is none.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered; got {:?}", inventory(docs)))
}

/// The string at a JSON pointer, "" when absent.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The operator Deployment's container.
pub fn operator_container(docs: &[Value]) -> &Value {
    &find(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
}

/// The operator's args.
pub fn operator_args(docs: &[Value]) -> Vec<String> {
    operator_container(docs)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

/// An RBAC rule flattened for comparison: `group resource: verbs` per resource, sorted.
pub fn rules(role: &Value) -> Vec<String> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for r in role["rules"].as_array().expect("rules") {
        for g in strings(&r["apiGroups"]) {
            for res in strings(&r["resources"]) {
                let mut verbs = strings(&r["verbs"]);
                verbs.sort();
                let g = if g.is_empty() { "core" } else { g.as_str() };
                out.push(format!("{g} {res}: {}", verbs.join(",")));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_flatten_per_resource() {
        let role = json!({"rules": [
            {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["watch", "get"]},
            {"apiGroups": ["x.dev"], "resources": ["things/status"], "verbs": ["patch"]}]});
        assert_eq!(
            rules(&role),
            [
                "core pods: get,watch",
                "core services: get,watch",
                "x.dev things/status: patch"
            ]
        );
    }
}
