//! Starting, watching and stopping the components.
//!
//! Each component is a child in its own process group (so a terminal's Ctrl-C reaches only the
//! supervisor, which then stops them in order) with `PR_SET_PDEATHSIG=SIGKILL` (so they die if
//! the supervisor is killed hard). Shutdown goes in reverse start order: SIGTERM to the group,
//! the grace period, SIGKILL, reap.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tracing::{debug, info, warn};

use crate::api::Api;
use crate::kubeconfig::{self, Credential};
use crate::nodes::{NodesSpec, RealNodes};
use crate::podnet::ClusterNetwork;
use crate::{
    ADMIN_USER, ClusterConfig, ClusterError, Component, ComponentCommand, Layout, Ports, Result,
    TokenFile, commands, io_err, pki, probe,
};

/// What `cluster up` leaves in `<dir>/cluster.json` for `cluster down` and for tools.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    /// The supervising process (`cluster up`), or the test process that started the cluster.
    pub supervisor_pid: i32,
    pub api_url: String,
    pub kubeconfig: PathBuf,
    pub ports: Ports,
    pub pids: Vec<(Component, i32)>,
}

struct Running {
    component: Component,
    child: Child,
    pid: i32,
    log: PathBuf,
}

/// A started cluster. Stop it with [`Cluster::shutdown`]; dropping it without that SIGKILLs
/// every component (so a panicking test leaves nothing behind).
pub struct Cluster {
    config: ClusterConfig,
    tokens: TokenFile,
    running: Vec<Running>,
    /// The nodes and CoreDNS (none when `nodes.count` is 0).
    nodes: Option<Arc<RealNodes>>,
    /// The pod network (bridge), removed after everything else at shutdown.
    net: Option<Arc<ClusterNetwork>>,
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn process_alive(pid: i32) -> bool {
    // A zombie is dead for our purposes.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// Pids of live processes whose command line mentions `dir` (the state dir is in every
/// component's flags): what a test checks after shutdown. This process and other processes of
/// the same executable (a `cluster down --dir DIR` that is stopping this cluster) do not count.
pub fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    let me = std::process::id() as i32;
    let my_exe = fs::read_link("/proc/self/exe").ok();
    let Ok(rd) = fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| my_exe.is_none() || fs::read_link(format!("/proc/{pid}/exe")).ok() != my_exe)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .filter(|&pid| process_alive(pid))
        .collect()
}

impl Cluster {
    /// Prepares the state dir (PKI, tokens, kubeconfigs, fresh etcd data), starts etcd,
    /// kube-apiserver, kube-controller-manager and kube-scheduler and waits until each is ready.
    ///
    /// Free ports are picked before the components bind them; if another process takes one in
    /// between (a component fails with "address already in use"), the start is retried with
    /// fresh ports, up to three times.
    pub async fn start(mut config: ClusterConfig) -> Result<Cluster> {
        let mut attempt = 1;
        loop {
            match Self::start_once(config.clone()).await {
                Err(e) if e.is_port_clash() && attempt < 3 => {
                    warn!(
                        attempt,
                        "a port was taken before the component bound it; retrying with fresh ports: {e}"
                    );
                    config.ports = Ports::pick()?;
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    async fn start_once(mut config: ClusterConfig) -> Result<Cluster> {
        let l = config.layout();
        if let Some(pid) = running_supervisor(&l) {
            return Err(ClusterError::AlreadyRunning {
                dir: config.dir.clone(),
                pid,
            });
        }
        for c in Component::ALL {
            let p = config.bin_dir.join(c.binary());
            if !is_executable(&p) {
                return Err(ClusterError::MissingBinary { path: p });
            }
        }
        let t0 = Instant::now();
        // The pod network comes first: its bridge address is where the apiserver listens, so
        // that pods reach it too (and it must be in the serving cert).
        let net = if config.nodes.count > 0 {
            fs::create_dir_all(&config.dir)
                .map_err(io_err(format!("creating {}", config.dir.display())))?;
            let dir = config.dir.clone();
            let n = tokio::task::spawn_blocking(move || ClusterNetwork::create(&dir))
                .await
                .map_err(|e| ClusterError::Nodes(e.to_string()))?
                .map_err(|e| ClusterError::Nodes(format!("pod network: {e}")))?;
            info!(bridge = %n.bridge, cidr = %n.cidr(), "pod network");
            config.api_host = n.host_ip();
            Some(Arc::new(n))
        } else {
            None
        };
        let tokens = prepare_dir(&config)?;
        debug!(elapsed = ?t0.elapsed(), "state dir prepared");
        let mut cluster = Cluster {
            config,
            tokens,
            running: Vec::new(),
            nodes: None,
            net,
        };

        let cfg = cluster.config.clone();
        cluster.spawn(commands::etcd(&cfg))?;
        cluster
            .wait_ready(
                Component::Etcd,
                (std::net::Ipv4Addr::LOCALHOST, cfg.ports.etcd_client).into(),
                "/health",
                None,
                |s, b| s == 200 && b.contains("\"health\":\"true\""),
            )
            .await?;
        info!(elapsed = ?t0.elapsed(), "etcd ready on {}", cfg.etcd_url());

        cluster.spawn(commands::apiserver(&cfg))?;
        let tls = probe::tls_config(&cfg.layout().ca_cert())?;
        let admin = cluster.tokens.token_of(ADMIN_USER).map(str::to_string);
        cluster
            .wait_ready(
                Component::KubeApiserver,
                cfg.api_addr(),
                "/readyz",
                Some((&tls, admin.as_deref())),
                |s, _| s == 200,
            )
            .await?;
        info!(elapsed = ?t0.elapsed(), "kube-apiserver ready on {}", cfg.api_url());

        cluster.spawn(commands::controller_manager(&cfg))?;
        cluster.spawn(commands::scheduler(&cfg))?;
        // Their serving certs are self-signed; being up and answering HTTPS is what we check.
        for (c, port) in [
            (
                Component::KubeControllerManager,
                cfg.ports.controller_manager,
            ),
            (Component::KubeScheduler, cfg.ports.scheduler),
        ] {
            cluster.wait_listening(c, port).await?;
        }
        info!(elapsed = ?t0.elapsed(), "control plane up");
        if let Some(net) = cluster.net.clone() {
            let spec = NodesSpec {
                cfg: &cfg,
                tokens: &cluster.tokens,
                admin: Api {
                    addr: cfg.api_addr(),
                    tls: tls.clone(),
                    token: admin.clone().unwrap_or_default(),
                },
            };
            let nodes = RealNodes::start(spec, net)
                .await
                .map_err(ClusterError::Nodes)?;
            cluster.nodes = Some(Arc::new(nodes));
            info!(elapsed = ?t0.elapsed(), nodes = cfg.nodes.count, "nodes Ready");
        }
        cluster.write_state(std::process::id() as i32)?;
        Ok(cluster)
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }
    pub fn layout(&self) -> Layout {
        self.config.layout()
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.layout().kubeconfig()
    }
    pub fn api_url(&self) -> String {
        self.config.api_url()
    }
    /// The pod network's bridge, host address and /24, if any.
    pub fn network(&self) -> Option<(String, std::net::Ipv4Addr, String)> {
        self.net
            .as_ref()
            .map(|n| (n.bridge.clone(), n.host_ip(), n.cidr()))
    }

    /// The nodes (None without nodes): faults go through them ([`crate::control`]).
    pub fn nodes(&self) -> Option<Arc<RealNodes>> {
        self.nodes.clone()
    }
    pub fn tokens(&self) -> &TokenFile {
        &self.tokens
    }
    /// (component, pid) of every running component.
    pub fn pids(&self) -> Vec<(Component, i32)> {
        self.running.iter().map(|r| (r.component, r.pid)).collect()
    }

    /// Writes `<dir>/cluster.json`; `supervisor_pid` is the process `cluster down` signals.
    pub fn write_state(&self, supervisor_pid: i32) -> Result<()> {
        let st = StateFile {
            supervisor_pid,
            api_url: self.api_url(),
            kubeconfig: self.kubeconfig(),
            ports: self.config.ports,
            pids: self.pids(),
        };
        let path = self.layout().state_file();
        fs::write(&path, serde_json::to_string_pretty(&st).expect("json"))
            .map_err(io_err(format!("writing {}", path.display())))
    }

    #[allow(unsafe_code)] // pre_exec: the death signal must be set between fork and exec
    fn spawn(&mut self, cmd: ComponentCommand) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cmd.log)
            .map_err(io_err(format!("opening {}", cmd.log.display())))?;
        let log2 = log.try_clone().map_err(io_err("dup log fd"))?;
        let mut c = Command::new(&cmd.program);
        c.args(&cmd.args)
            .current_dir(&self.config.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c
            .spawn()
            .map_err(io_err(format!("starting {}", cmd.program.display())))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(-1);
        info!(component = %cmd.component, pid, log = %cmd.log.display(), "started");
        debug!(args = ?cmd.args, "{}", cmd.component);
        self.running.push(Running {
            component: cmd.component,
            child,
            pid,
            log: cmd.log,
        });
        Ok(())
    }

    fn running_mut(&mut self, c: Component) -> &mut Running {
        self.running
            .iter_mut()
            .find(|r| r.component == c)
            .expect("component started")
    }

    /// Err if the component has exited.
    fn check_alive(&mut self, c: Component) -> Result<()> {
        let r = self.running_mut(c);
        if let Ok(Some(status)) = r.child.try_wait() {
            // Give the log a moment to be flushed by the dying process's children, if any.
            return Err(ClusterError::ComponentExited {
                component: c,
                status: status.to_string(),
                log: r.log.clone(),
                tail: tail(&r.log, 25),
            });
        }
        Ok(())
    }

    async fn wait_ready(
        &mut self,
        c: Component,
        addr: std::net::SocketAddr,
        path: &'static str,
        tls: Option<(&Arc<rustls::ClientConfig>, Option<&str>)>,
        ok: impl Fn(u16, &str) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        let mut last;
        let tls_cfg = tls.map(|(t, _)| t.clone());
        let token = tls.and_then(|(_, t)| t.map(str::to_string));
        loop {
            self.check_alive(c)?;
            let (tc, tk) = (tls_cfg.clone(), token.clone());
            let res = tokio::task::spawn_blocking(move || {
                probe::get(addr, path, tc.as_ref(), tk.as_deref())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match res {
                Ok((s, b)) if ok(s, &b) => return Ok(()),
                Ok((s, b)) => {
                    last = format!(
                        "GET {path}: {s} {}",
                        b.chars().take(300).collect::<String>()
                    )
                }
                Err(e) => last = e,
            }
            if start.elapsed() > self.config.ready_timeout {
                let r = self.running_mut(c);
                return Err(ClusterError::NotReady {
                    component: c,
                    waited: start.elapsed(),
                    last,
                    log: r.log.clone(),
                    tail: tail(&r.log, 25),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_listening(&mut self, c: Component, port: u16) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive(c)?;
            match tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > self.config.ready_timeout => {
                    let r = self.running_mut(c);
                    return Err(ClusterError::NotReady {
                        component: c,
                        waited: start.elapsed(),
                        last: format!("connect 127.0.0.1:{port}: {e}"),
                        log: r.log.clone(),
                        tail: tail(&r.log, 25),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Resolves when a component (or a daemon of a real node) exits on its own (a crash: the
    /// caller should shut down): what exited and why.
    pub async fn wait_for_exit(&mut self) -> (String, String) {
        loop {
            for r in &mut self.running {
                if let Ok(Some(status)) = r.child.try_wait() {
                    return (
                        r.component.to_string(),
                        format!(
                            "{status}; last lines of {}:\n{}",
                            r.log.display(),
                            tail(&r.log, 15)
                        ),
                    );
                }
            }
            if let Some(why) = self.nodes.as_ref().and_then(|n| n.exited()) {
                return ("a node".into(), why);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops every component in reverse start order (SIGTERM to its process group, grace,
    /// SIGKILL) and checks that no process of the cluster is left.
    pub async fn shutdown(mut self) -> Result<()> {
        let grace = self.config.grace;
        if let Some(n) = self.nodes.take() {
            let _ = tokio::task::spawn_blocking(move || n.shutdown()).await;
        }
        let mut running = std::mem::take(&mut self.running);
        while let Some(mut r) = running.pop() {
            let pg = Pid::from_raw(r.pid);
            if let Ok(Some(status)) = r.child.try_wait() {
                warn!(component = %r.component, %status, "had already exited");
            } else {
                let _ = killpg(pg, Signal::SIGTERM);
                match tokio::time::timeout(grace, r.child.wait()).await {
                    Ok(Ok(status)) => info!(component = %r.component, %status, "stopped"),
                    _ => {
                        warn!(component = %r.component, ?grace, "did not stop after SIGTERM; SIGKILL");
                        let _ = killpg(pg, Signal::SIGKILL);
                        let _ = r.child.wait().await;
                    }
                }
            }
            // Anything the component forked in its group goes too.
            let _ = killpg(pg, Signal::SIGKILL);
        }
        if let Some(n) = self.net.take() {
            n.remove_all();
        }
        let _ = fs::remove_file(self.layout().state_file());
        let _ = fs::remove_file(crate::control::socket_path(&self.config.dir));
        let left = processes_mentioning(&self.config.dir);
        if left.is_empty() {
            Ok(())
        } else {
            Err(ClusterError::Leftover(left))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in &self.running {
            let _ = killpg(Pid::from_raw(r.pid), Signal::SIGKILL);
        }
        drop(self.nodes.take());
        if let Some(n) = self.net.take() {
            n.remove_all();
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn running_supervisor(l: &Layout) -> Option<i32> {
    let st: StateFile = serde_json::from_str(&fs::read_to_string(l.state_file()).ok()?).ok()?;
    process_alive(st.supervisor_pid).then_some(st.supervisor_pid)
}

/// PKI (kept if present), fresh tokens and kubeconfigs, a fresh etcd data dir, empty logs.
fn prepare_dir(cfg: &ClusterConfig) -> Result<TokenFile> {
    let l = cfg.layout();
    for d in [&cfg.dir, &l.logs()] {
        fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
    }
    let _ = fs::remove_dir_all(cfg.dir.join("pods"));
    for c in Component::ALL {
        let d = l.run_dir(c);
        fs::create_dir_all(&d).map_err(io_err(format!("creating {}", d.display())))?;
        let _ = fs::remove_file(l.log(c));
    }
    // A cluster is fresh on every `up`: a kept etcd member would remember its old peer URL.
    if l.etcd_data().exists() {
        fs::remove_dir_all(l.etcd_data())
            .map_err(io_err(format!("removing {}", l.etcd_data().display())))?;
    }
    pki::ensure(cfg)?;
    let mut tokens = TokenFile::generate()?;
    tokens.add_nodes(&cfg.nodes.names())?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::write(l.token_file(), tokens.render()).map_err(io_err("writing token file"))?;
        fs::set_permissions(l.token_file(), fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod token file"))?;
    }
    let admin = tokens
        .token_of(ADMIN_USER)
        .expect("admin token")
        .to_string();
    kubeconfig::write(&l.kubeconfig(), cfg, ADMIN_USER, &Credential::Token(admin))?;
    for (c, id) in [
        (Component::KubeControllerManager, &pki::CLIENTS[0]),
        (Component::KubeScheduler, &pki::CLIENTS[1]),
    ] {
        let (cert, key) = l.cert_pair(id.file);
        kubeconfig::write(
            &l.component_kubeconfig(c),
            cfg,
            id.user,
            &Credential::ClientCert { cert, key },
        )?;
    }
    Ok(tokens)
}

/// Stops the cluster whose state is in `dir`: SIGTERM to its supervisor (`cluster up`, which
/// then stops the components in order), and if that does not finish within `timeout`, SIGKILL
/// to every component it recorded. Processes are only signalled if their command line still
/// mentions `dir` (no stray kill after pid reuse).
pub async fn down(dir: &Path, timeout: Duration) -> Result<()> {
    let l = Layout::new(dir);
    let text =
        fs::read_to_string(l.state_file()).map_err(|_| ClusterError::NoState(dir.to_path_buf()))?;
    let st: StateFile = serde_json::from_str(&text)
        .map_err(|e| ClusterError::Config(format!("{}: {e}", l.state_file().display())))?;
    let ours = |pid: i32| processes_mentioning(dir).contains(&pid) || pid == st.supervisor_pid;
    if process_alive(st.supervisor_pid) && st.supervisor_pid != std::process::id() as i32 {
        info!(
            pid = st.supervisor_pid,
            "asking the supervisor to stop the cluster"
        );
        let _ = kill(Pid::from_raw(st.supervisor_pid), Signal::SIGTERM);
        let start = Instant::now();
        while process_alive(st.supervisor_pid) && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (c, pid) in &st.pids {
        if process_alive(*pid) && ours(*pid) {
            warn!(component = %c, pid, "still running; SIGKILL");
            let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = fs::remove_file(l.state_file());
    let left = processes_mentioning(dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err(ClusterError::Leftover(left))
    }
}
