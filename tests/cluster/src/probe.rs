//! Readiness probes: HTTPS GET against the apiserver (verified against the cluster CA, bearer
//! token) and plain HTTP against etcd, with rustls/std only (no HTTP client dependency).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::{ClusterError, Result};

/// TLS client config trusting only the cluster CA.
pub(crate) fn tls_config(ca_cert: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let ca = CertificateDer::from_pem_file(ca_cert)
        .map_err(|e| ClusterError::Tls(format!("reading {}: {e}", ca_cert.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| ClusterError::Tls(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClusterError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Status code and body of a GET. Errors are strings: the caller retries until a deadline and
/// reports the last one.
pub(crate) fn get(
    port: u16,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    token: Option<&str>,
) -> std::result::Result<(u16, String), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
    sock.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    let mut buf = Vec::new();
    let res = match tls {
        Some(cfg) => {
            let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
            let conn =
                rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
            let mut s = rustls::StreamOwned::new(conn, sock);
            s.write_all(req.as_bytes())
                .map_err(|e| format!("TLS write: {e}"))?;
            s.read_to_end(&mut buf)
        }
        None => {
            let mut s = sock;
            s.write_all(req.as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            s.read_to_end(&mut buf)
        }
    };
    // A peer that closes without TLS close_notify still sent a full response.
    if let Err(e) = res
        && buf.is_empty()
    {
        return Err(format!("read: {e}"));
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP response: {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
