//! Conformance with torch: torch's own Python `TCPStore` client drives every store command
//! against our server and against torch's (libuv) server; the two transcripts must be equal.
//! The Python side is `tests/python/store_conformance.py`; it starts torch's server itself.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use elastic_launch::store::StoreServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torch_client_gets_the_same_answers_from_our_server_as_from_torchs() {
    let server = StoreServer::bind("127.0.0.1", 0).unwrap();
    let python = common::torch_python();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/store_conformance.py");
    let child = Command::new(&python)
        .arg(&script)
        .arg("--ours")
        .arg(format!("127.0.0.1:{}", server.port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the conformance script");
    // The script blocks on our server, which runs on this runtime: wait off the runtime.
    let out =
        tokio::task::spawn_blocking(move || common::wait_output(child, Duration::from_secs(60)))
            .await
            .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "conformance script failed: {}\n{stderr}",
        out.status
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON from the script ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    let torch = result["torch"].as_array().expect("torch transcript");
    let ours = result["ours"].as_array().expect("our transcript");
    eprintln!("torch {}: {} steps", result["torch_version"], torch.len());

    // The harness itself works: torch's server gave the answers torch documents.
    let step = |t: &[serde_json::Value], name: &str| -> serde_json::Value {
        t.iter()
            .find(|s| s[0] == name)
            .unwrap_or_else(|| panic!("no step {name:?}"))[1]
            .clone()
    };
    assert_eq!(step(torch, "get k"), "b:v");
    assert_eq!(step(torch, "compare_set mismatch"), "b:second");
    assert_eq!(step(torch, "wait timeout"), "raised DistStoreError");
    assert_eq!(step(torch, "has queues"), "True");
    assert_eq!(step(torch, "has barrier"), "True");

    let mut diffs = Vec::new();
    for i in 0..torch.len().max(ours.len()) {
        let (t, o) = (torch.get(i), ours.get(i));
        if t != o {
            diffs.push(format!(
                "step {i}:\n  torch: {}\n  ours:  {}",
                fmt(t),
                fmt(o)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "transcripts differ:\n{}\n\nstderr:\n{stderr}",
        diffs.join("\n")
    );
    server.shutdown().await;
}

fn fmt(v: Option<&serde_json::Value>) -> String {
    v.map_or_else(|| "<missing>".to_string(), |v| v.to_string())
}
