//! Kubeconfigs (written as JSON, which kubectl and client-go read like YAML), pointing at the
//! cluster's loopback apiserver and trusting its CA by file path.

use std::path::Path;

use serde_json::{Value, json};

use crate::{ClusterConfig, Result, io_err};

/// How a kubeconfig user authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Token(String),
    ClientCert {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
}

/// The kubeconfig document for `user` against this cluster.
pub fn render(cfg: &ClusterConfig, user: &str, cred: &Credential) -> Value {
    let ca = cfg.layout().ca_cert();
    let user_entry = match cred {
        Credential::Token(t) => json!({ "token": t }),
        Credential::ClientCert { cert, key } => json!({
            "client-certificate": cert.display().to_string(),
            "client-key": key.display().to_string(),
        }),
    };
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": cfg.name,
            "cluster": { "server": cfg.api_url(), "certificate-authority": ca.display().to_string() },
        }],
        "users": [{ "name": user, "user": user_entry }],
        "contexts": [{ "name": cfg.name, "context": { "cluster": cfg.name, "user": user } }],
        "current-context": cfg.name,
    })
}

/// Writes `render(...)` to `path` (mode 0600: it holds credentials).
pub fn write(path: &Path, cfg: &ClusterConfig, user: &str, cred: &Credential) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = serde_json::to_string_pretty(&render(cfg, user, cred)).expect("json");
    std::fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(format!("chmod {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kubeconfig_points_at_loopback_apiserver_and_ca() {
        let cfg = ClusterConfig::new("/tmp/k/c2", "/bin").unwrap();
        let v = render(&cfg, "admin", &Credential::Token("t0k".into()));
        assert_eq!(v["current-context"], "c2");
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            format!("https://127.0.0.1:{}", cfg.ports.apiserver)
        );
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority"],
            "/tmp/k/c2/pki/ca.crt"
        );
        assert_eq!(v["users"][0]["user"]["token"], "t0k");
        assert_eq!(v["contexts"][0]["context"]["user"], "admin");
    }
}
