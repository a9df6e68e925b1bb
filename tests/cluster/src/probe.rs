//! Readiness probes: HTTPS GET against the apiserver (verified against the cluster CA, bearer
//! token) and plain HTTP against etcd, with rustls/std only (no HTTP client dependency).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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
    addr: SocketAddr,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    token: Option<&str>,
) -> std::result::Result<(u16, String), String> {
    request(addr, "GET", path, tls, token, None)
}

/// One HTTP/1.1 request (`Connection: close`), optionally with a body `(content type, bytes)`;
/// returns the status code and the body (chunked transfer encoding decoded).
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    token: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> std::result::Result<(u16, String), String> {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    sock.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n"
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let mut bytes = Vec::new();
    if let Some((ct, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ct}\r\nContent-Length: {}\r\n",
            b.len()
        ));
        bytes.extend_from_slice(req.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(b);
    } else {
        req.push_str("\r\n");
        bytes.extend_from_slice(req.as_bytes());
    }
    let mut buf = Vec::new();
    let res = match tls {
        Some(cfg) => {
            let name = ServerName::IpAddress(addr.ip().into());
            let conn =
                rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
            let mut s = rustls::StreamOwned::new(conn, sock);
            s.write_all(&bytes).map_err(|e| format!("TLS write: {e}"))?;
            s.read_to_end(&mut buf)
        }
        None => {
            let mut s = sock;
            s.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
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
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "transfer-encoding:chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// Decodes a chunked body (sizes in hex, each chunk followed by CRLF, a 0-size chunk ends it).
pub(crate) fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            out.push_str(&rest[..size.min(rest.len())]);
            break;
        }
        out.push_str(&rest[..size]);
        s = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dechunk_joins_chunks() {
        assert_eq!(super::dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(super::dechunk("0\r\n\r\n"), "");
    }
}
