//! The apiserver as one user: the few calls the cluster makes itself (RBAC for CoreDNS, the
//! kube-dns Service, node readiness, a pod's status for faults), over the crate's small HTTPS
//! client ([`crate::probe`]), JSON as `serde_json::Value`.

use std::sync::Arc;

use serde_json::Value;

use crate::probe;

/// The apiserver as one user (a bearer token), over the crate's small HTTP client.
#[derive(Clone)]
pub struct Api {
    pub addr: std::net::SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
    pub token: String,
}

impl Api {
    async fn call(
        &self,
        method: &'static str,
        path: String,
        ct: Option<&'static str>,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let this = self.clone();
        let p = path.clone();
        let (status, text) = tokio::task::spawn_blocking(move || {
            let b = body.map(|b| b.to_string());
            probe::request(
                this.addr,
                method,
                &p,
                Some(&this.tls),
                Some(&this.token),
                b.as_deref()
                    .map(|b| (ct.unwrap_or("application/json"), b.as_bytes())),
            )
        })
        .await
        .map_err(|e| e.to_string())??;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(format!(
                "{method} {path}: {status} {}",
                v["message"].as_str().unwrap_or(&text)
            ))
        }
    }
    pub(crate) async fn get(&self, path: String) -> Result<Value, String> {
        self.call("GET", path, None, None).await
    }
    pub(crate) async fn post(&self, path: String, body: Value) -> Result<Value, String> {
        self.call("POST", path, None, Some(body)).await
    }
}
