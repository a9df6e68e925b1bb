//! A kubectl runner for tests and tools: the real `kubectl` binary against one kubeconfig.
//!
//! [`Kubectl::run`] gives the whole [`Output`] (for callers that expect a refusal or look at
//! stderr), [`Kubectl::ok`] and [`Kubectl::apply`] panic with kubectl's messages when it fails,
//! [`Kubectl::json`] parses `-o json`, and [`Kubectl::eventually`] retries a command until its
//! output is what the caller waits for. [`stdout`] and [`stderr`] read an [`Output`] as text.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Real kubectl against one kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    /// The kubectl binary.
    pub bin: PathBuf,
    /// Passed as `--kubeconfig` to every command.
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Self {
        Kubectl {
            bin: bin.into(),
            kubeconfig: kubeconfig.into(),
        }
    }

    /// `kubectl --kubeconfig <kubeconfig> <args>`, with `stdin` as its input (else none): the
    /// whole Output, whatever the exit status. Panics only when kubectl cannot be started.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = spawn_retrying_busy(&mut c)
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
        if let Some(s) = stdin {
            match child.stdin.take().unwrap().write_all(s.as_bytes()) {
                // kubectl exited without reading all of it (e.g. it refused its arguments): its
                // exit status and messages below say why.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => {
                    r.unwrap_or_else(|e| panic!("writing kubectl {}'s stdin: {e}", args.join(" ")))
                }
            }
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for kubectl {}: {e}", args.join(" ")))
    }

    /// Runs and asserts success; returns stdout (untrimmed).
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args, None);
        assert!(
            o.status.success(),
            "kubectl {} failed ({}): {}",
            args.join(" "),
            o.status,
            failure(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `kubectl <args> -o json`, parsed; None when kubectl fails (e.g. not found) or its output
    /// is not JSON.
    pub fn json(&self, args: &[&str]) -> Option<Value> {
        let o = self.run(&with_json(args), None);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// `kubectl <args> -o json` that must succeed, parsed; panics with kubectl's messages.
    pub fn json_ok(&self, args: &[&str]) -> Value {
        let out = self.ok(&with_json(args));
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!(
                "kubectl {} -o json printed no JSON: {e}\n{out}",
                args.join(" ")
            )
        })
    }

    /// `kubectl apply -f -` of `doc` (JSON): the Output, for callers that expect refusal.
    pub fn try_apply(&self, doc: &Value) -> Output {
        self.run(&["apply", "-f", "-"], Some(&doc.to_string()))
    }

    /// `kubectl apply -n <ns> -f -` of `doc` (JSON): the Output, for callers that expect refusal.
    pub fn try_apply_in(&self, ns: &str, doc: &Value) -> Output {
        self.run(&["apply", "-n", ns, "-f", "-"], Some(&doc.to_string()))
    }

    /// `kubectl apply -f -` of `doc` that must succeed; returns stdout.
    pub fn apply(&self, doc: &Value) -> String {
        applied("kubectl apply", self.try_apply(doc), doc)
    }

    /// `kubectl apply -n <ns> -f -` of `doc` that must succeed; returns stdout.
    pub fn apply_in(&self, ns: &str, doc: &Value) -> String {
        applied(
            &format!("kubectl apply -n {ns}"),
            self.try_apply_in(ns, doc),
            doc,
        )
    }

    /// Retries `args` every 250 ms until `pred` holds for its Output (returned), or panics after
    /// `timeout` with `what` and the last stdout and stderr.
    pub fn eventually(
        &self,
        what: &str,
        timeout: Duration,
        args: &[&str],
        pred: impl Fn(&Output) -> bool,
    ) -> Output {
        let start = Instant::now();
        loop {
            let o = self.run(args, None);
            if pred(&o) {
                return o;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}: kubectl {}\nstdout: {}\nstderr: {}",
                args.join(" "),
                stdout(&o),
                stderr(&o)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// A command's stdout as text, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A command's stderr as text, trimmed.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

fn with_json<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    a
}

/// What a failed command said: stderr, then stdout when there is any.
fn failure(o: &Output) -> String {
    match stdout(o) {
        out if out.is_empty() => stderr(o),
        out => format!("{}\nstdout: {out}", stderr(o)),
    }
}

fn applied(what: &str, o: Output, doc: &Value) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({}): {}\n{doc:#}",
        o.status,
        failure(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Spawns `c`, retrying for a moment while the executable is "busy" (ETXTBSY): a file just
/// written (a test's stand-in kubectl) stays open for writing in any child another thread forked
/// meanwhile, until that child execs.
fn spawn_retrying_busy(c: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match c.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in kubectl (in a temp dir that lives as long as the TempDir): prints its args on
    /// stderr and its stdin on stdout; `... -o json` prints `{"args": "<args>"}`; prints
    /// `it failed` and exits 1 when an arg is `fail`.
    fn fake() -> (tempfile::TempDir, Kubectl) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let bin = dir.join("kubectl");
        std::fs::write(
            &bin,
            r#"#!/bin/sh
echo "args: $*" >&2
for a in "$@"; do [ "$a" = fail ] && { echo "it failed"; exit 1; }; done
case "$*" in
  *"-o json") printf '{"args": "%s"}\n' "$*" ;;
  *) cat ;;
esac
"#,
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let k = Kubectl::new(bin, dir.join("kubeconfig"));
        (tmp, k)
    }

    fn panic_message<R>(f: impl FnOnce() -> R + std::panic::UnwindSafe) -> String {
        let Err(e) = std::panic::catch_unwind(f) else {
            panic!("should have panicked")
        };
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    }

    #[test]
    fn run_passes_the_kubeconfig_first_and_feeds_stdin() {
        let (tmp, k) = fake();
        let o = k.run(&["get", "pods"], Some("hello\n"));
        assert!(o.status.success());
        let kubeconfig = tmp.path().join("kubeconfig");
        assert_eq!(
            stderr(&o),
            format!("args: --kubeconfig {} get pods", kubeconfig.display())
        );
        assert_eq!(stdout(&o), "hello");
        // No stdin: kubectl reads nothing (not the test's terminal).
        assert_eq!(stdout(&k.run(&["get"], None)), "");
    }

    #[test]
    fn ok_returns_stdout_and_panics_with_what_kubectl_said() {
        let (_tmp, k) = fake();
        assert_eq!(k.ok(&["get"]), "");
        let msg = panic_message(|| k.ok(&["get", "fail"]));
        assert!(msg.starts_with("kubectl get fail failed ("), "{msg}");
        assert!(msg.contains("args: --kubeconfig"), "{msg}");
        assert!(msg.contains("stdout: it failed"), "{msg}");
    }

    #[test]
    fn json_appends_output_json() {
        let (_tmp, k) = fake();
        let v = k.json(&["get", "nodes"]).unwrap();
        assert!(
            v["args"].as_str().unwrap().ends_with("get nodes -o json"),
            "{v}"
        );
        assert_eq!(k.json_ok(&["get", "nodes"]), v);
        assert_eq!(k.json(&["get", "fail"]), None);
        let msg = panic_message(|| k.json_ok(&["get", "fail"]));
        assert!(msg.contains("kubectl get fail -o json failed"), "{msg}");
    }

    #[test]
    fn apply_sends_the_doc_on_stdin_in_the_namespace() {
        let (_tmp, k) = fake();
        let doc = json!({"kind": "ConfigMap"});
        assert_eq!(k.apply(&doc).trim(), doc.to_string());
        let o = k.try_apply_in("ns1", &doc);
        assert!(stderr(&o).ends_with("apply -n ns1 -f -"), "{}", stderr(&o));
        assert_eq!(k.apply_in("ns1", &doc).trim(), doc.to_string());
        let msg = panic_message(|| k.apply_in("fail", &doc));
        assert!(msg.starts_with("kubectl apply -n fail failed ("), "{msg}");
        assert!(msg.contains("\"kind\": \"ConfigMap\""), "{msg}");
    }

    #[test]
    fn eventually_retries_until_the_predicate_holds() {
        let (tmp, k) = fake();
        let marker = tmp.path().join("tries");
        let m = marker.clone();
        let o = k.eventually("the third try", Duration::from_secs(10), &["get"], |_| {
            let n = std::fs::read_to_string(&m).unwrap_or_default().len();
            std::fs::write(&m, "x".repeat(n + 1)).unwrap();
            n == 2
        });
        assert!(o.status.success());
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "xxx");
        let msg = panic_message(|| {
            k.eventually("never", Duration::from_millis(1), &["get", "x"], |_| false)
        });
        assert!(
            msg.starts_with("timed out after 1ms waiting for never: kubectl get x"),
            "{msg}"
        );
    }
}
