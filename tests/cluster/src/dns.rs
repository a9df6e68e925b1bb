//! The cluster DNS: a small authoritative server for the cluster domain on the bridge address
//! (port 53, UDP), which every pod's `/etc/resolv.conf` names. It answers what CoreDNS's
//! kubernetes plugin answers for A queries:
//! - `<svc>.<ns>.svc.<domain>`: the Service's cluster IP, or for a headless Service the
//!   addresses of its Endpoints;
//! - `<hostname>.<svc>.<ns>.svc.<domain>`: an Endpoints address with that `hostname` (the
//!   endpoints controller sets it for pods with `hostname` and `subdomain: <svc>`).
//!
//! Names outside the cluster domain get REFUSED at once: the cluster talks to nothing outside,
//! and a quick refusal beats a resolver timing out. Its data comes from listing Services and
//! Endpoints every `poll` as its own user, bound to the bootstrap ClusterRole `system:kube-dns`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use serde_json::Value;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::kubelet::Api;

/// The user the DNS lists as (static token), and what binds it to `system:kube-dns`.
pub const DNS_USER: &str = "local-cluster:dns";
const TTL: u32 = 5;

/// Fully qualified names (lowercase, no trailing dot) → addresses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Records(pub HashMap<String, Vec<Ipv4Addr>>);

/// The records of the cluster's Services and Endpoints (both `List` objects).
pub fn records(services: &Value, endpoints: &Value, domain: &str) -> Records {
    let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
    let key = |o: &Value| {
        (
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            o["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    };
    let eps: HashMap<_, _> = items(endpoints).into_iter().map(|e| (key(&e), e)).collect();
    let mut r = HashMap::new();
    for svc in items(services) {
        let (ns, name) = key(&svc);
        let fqdn = format!("{name}.{ns}.svc.{domain}");
        let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
        if cluster_ip != "None" {
            let ips = cluster_ip.parse().into_iter().collect();
            r.insert(fqdn, ips);
            continue;
        }
        let mut all = Vec::new();
        let ep = eps.get(&(ns.clone(), name.clone()));
        for subset in ep
            .and_then(|e| e["subsets"].as_array())
            .into_iter()
            .flatten()
        {
            for a in subset["addresses"].as_array().into_iter().flatten() {
                let Some(ip) = a["ip"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) else {
                    continue;
                };
                if !all.contains(&ip) {
                    all.push(ip);
                }
                if let Some(h) = a["hostname"].as_str().filter(|h| !h.is_empty()) {
                    r.entry(format!("{h}.{fqdn}"))
                        .or_insert_with(Vec::new)
                        .push(ip);
                }
            }
        }
        r.insert(fqdn, all);
    }
    Records(r)
}

/// The response to one query packet (None: not a parseable query, dropped).
pub fn answer(packet: &[u8], records: &Records, domain: &str) -> Option<Vec<u8>> {
    let q = Message::from_vec(packet).ok()?;
    if q.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.authoritative = true;
    let mut code = ResponseCode::NoError;
    for query in &q.queries {
        r.add_query(query.clone());
        let name = query
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let in_domain = name == domain || name.ends_with(&format!(".{domain}"));
        if !in_domain {
            code = ResponseCode::Refused;
            continue;
        }
        match records.0.get(&name) {
            None => code = ResponseCode::NXDomain,
            Some(ips) if matches!(query.query_type(), RecordType::A | RecordType::ANY) => {
                for ip in ips {
                    let o = ip.octets();
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        TTL,
                        RData::A(A::new(o[0], o[1], o[2], o[3])),
                    ));
                }
            }
            // The name exists but has no records of that type (AAAA): NOERROR, no answers.
            Some(_) => {}
        }
    }
    r.metadata.response_code = code;
    r.to_vec().ok()
}

/// The running DNS server and its refresher, on a thread and runtime of their own: the
/// kubelet stand-in shares the cluster's runtime with work that can block a worker thread for a
/// while (filesystem setup of containers), and name lookups of pods must not wait for that.
pub struct Dns {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Dns {
    /// Binds `<addr>:53/udp`, loads the records once, then serves and refreshes them.
    pub async fn start(
        addr: Ipv4Addr,
        domain: String,
        api: Api,
        poll: Duration,
    ) -> Result<Dns, String> {
        let sock = std::net::UdpSocket::bind((addr, 53))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| format!("cluster DNS: binding {addr}:53/udp: {e}"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (loaded_tx, loaded) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("cluster-dns".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = loaded_tx.send(Err(format!("cluster DNS runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let records = match load(&api, &domain).await {
                        Ok(r) => Arc::new(RwLock::new(r)),
                        Err(e) => {
                            let _ = loaded_tx.send(Err(e));
                            return;
                        }
                    };
                    let sock = match UdpSocket::from_std(sock) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = loaded_tx.send(Err(format!("cluster DNS socket: {e}")));
                            return;
                        }
                    };
                    let _ = loaded_tx.send(Ok(()));
                    tokio::select! {
                        _ = stopped => {}
                        _ = refresh(&api, &domain, &records, poll) => {}
                        _ = serve(&sock, &domain, &records) => {}
                    }
                });
            })
            .map_err(|e| format!("cluster DNS thread: {e}"))?;
        loaded
            .await
            .map_err(|_| "cluster DNS thread ended before loading".to_string())??;
        Ok(Dns {
            stop: Some(stop),
            thread: Some(thread),
            addr: SocketAddr::from((addr, 53)),
        })
    }
}

async fn refresh(api: &Api, domain: &str, records: &RwLock<Records>, poll: Duration) {
    loop {
        tokio::time::sleep(poll).await;
        match load(api, domain).await {
            Ok(r) => *records.write().unwrap() = r,
            Err(e) => warn!("cluster DNS: {e}"),
        }
    }
}

async fn serve(sock: &UdpSocket, domain: &str, records: &RwLock<Records>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let reply = answer(&buf[..n], &records.read().unwrap(), domain);
        if let Some(reply) = reply {
            debug!(%from, "dns reply");
            let _ = sock.send_to(&reply, from).await;
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds [`DNS_USER`] to the bootstrap ClusterRole `system:kube-dns` (list and watch of
/// Services and Endpoints), with `admin`'s API.
pub async fn grant(admin: &Api) -> Result<(), String> {
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding", "metadata": {"name": "local-cluster:dns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
            "name": "system:kube-dns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DNS_USER}]});
    match admin
        .post(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
            binding,
        )
        .await
    {
        Err(e) if !e.contains(" 409 ") => Err(format!("cluster DNS: binding its role: {e}")),
        _ => Ok(()),
    }
}

async fn load(api: &Api, domain: &str) -> Result<Records, String> {
    let services = api.get("/api/v1/services".into()).await?;
    let endpoints = api.get("/api/v1/endpoints".into()).await?;
    Ok(records(&services, &endpoints, domain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use serde_json::json;

    fn recs() -> Records {
        let services = json!({"items": [
            {"metadata": {"name": "train", "namespace": "ml"}, "spec": {"clusterIP": "None"}},
            {"metadata": {"name": "api", "namespace": "default"}, "spec": {"clusterIP": "10.96.0.7"}},
            {"metadata": {"name": "empty", "namespace": "ml"}, "spec": {"clusterIP": "None"}}]});
        let endpoints = json!({"items": [{"metadata": {"name": "train", "namespace": "ml"},
            "subsets": [{"addresses": [
                {"ip": "10.1.2.2", "hostname": "train-worker-0"},
                {"ip": "10.1.2.3", "hostname": "train-worker-1"}]}]}]});
        records(&services, &endpoints, "cluster.local")
    }

    #[test]
    fn headless_services_and_pod_hostnames() {
        let r = recs();
        let get = |n: &str| r.0.get(n).cloned();
        assert_eq!(
            get("train.ml.svc.cluster.local"),
            Some(vec![Ipv4Addr::new(10, 1, 2, 2), Ipv4Addr::new(10, 1, 2, 3)])
        );
        assert_eq!(
            get("train-worker-1.train.ml.svc.cluster.local"),
            Some(vec![Ipv4Addr::new(10, 1, 2, 3)])
        );
        assert_eq!(
            get("api.default.svc.cluster.local"),
            Some(vec![Ipv4Addr::new(10, 96, 0, 7)])
        );
        assert_eq!(get("empty.ml.svc.cluster.local"), Some(vec![]));
    }

    fn ask(name: &str, ty: RecordType) -> Message {
        let mut q = Message::query();
        q.add_query(Query::query(name.parse().unwrap(), ty));
        let reply = answer(&q.to_vec().unwrap(), &recs(), "cluster.local").unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, q.metadata.id);
        m
    }

    #[test]
    fn answers_nxdomain_nodata_and_refused() {
        let m = ask("Train-Worker-0.train.ml.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A::new(10, 1, 2, 2)));
        let m = ask(
            "train-worker-0.train.ml.svc.cluster.local.",
            RecordType::AAAA,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask("nope.ml.svc.cluster.local.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = ask("pypi.org.", RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(answer(b"garbage", &recs(), "cluster.local").is_none());
    }
}
