//! Pure parsers for single option values. Each mirrors the torchrun function named in its doc
//! and keeps torchrun's error message (so a user searching for it finds the upstream docs),
//! sometimes followed by a hint on how to fix the value. Errors are plain strings; the caller
//! prefixes the option or environment variable the value came from.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::config::{NodeRange, NprocSpec, RdzvBackend, Std, StdSpec};

/// Default port of a c10d rendezvous endpoint without one (`host` → `host:29400`).
pub const C10D_DEFAULT_PORT: u16 = 29400;
/// Default `--master-port` (the static rendezvous store).
pub const DEFAULT_MASTER_PORT: u16 = 29500;
/// Default `--signals-to-handle`.
pub const DEFAULT_SIGNALS: &str = "SIGTERM,SIGINT,SIGHUP,SIGQUIT";

/// Python's `int(s)` for the inputs that matter here: surrounding whitespace and a sign are
/// accepted (`PET_MAX_RESTARTS=" 3"` works under torchrun too).
pub(crate) fn py_int(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

/// Python's `float(s)`, finite values only (`inf`/`nan` make no sense for any of our durations).
pub(crate) fn py_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

/// `parse_min_max_nnodes` plus `config_from_args`' `0 < min <= max` check: `N` or `MIN:MAX`.
pub fn parse_min_max_nnodes(nnodes: &str) -> Result<NodeRange, String> {
    let int = |part: &str| {
        py_int(part).ok_or_else(|| {
            format!(
                "nnodes={nnodes}: invalid literal for int() with base 10: '{part}' \
                 (expected N or MIN:MAX, e.g. 2 or 1:4)"
            )
        })
    };
    let parts: Vec<&str> = nnodes.split(':').collect();
    let (min, max) = match parts.as_slice() {
        [n] => {
            let n = int(n)?;
            (n, n)
        }
        [min, max] => (int(min)?, int(max)?),
        _ => return Err(format!("nnodes={nnodes} is not in \"MIN:MAX\" format")),
    };
    if !(0 < min && min <= max) {
        return Err(format!(
            "min_nodes must be > 0 and <= max_nodes, got min_nodes={min}, max_nodes={max}"
        ));
    }
    let max =
        u32::try_from(max).map_err(|_| format!("nnodes={nnodes}: {max} nodes is too many"))?;
    Ok(NodeRange {
        min: min as u32,
        max,
    })
}

/// `--nproc-per-node` before device discovery (`determine_local_world_size` without the
/// counting): a positive integer, `cpu`, `gpu`, `xpu` or `auto`.
pub fn parse_nproc_per_node(value: &str) -> Result<NprocSpec, String> {
    if let Some(n) = py_int(value) {
        // torchrun leaves the check to `WorkerSpec` (`local_world_size > 0`); we fail early.
        return u32::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .map(NprocSpec::Count)
            .ok_or_else(|| format!("nproc_per_node must be a positive integer, got {n}"));
    }
    match value {
        "cpu" => Ok(NprocSpec::Cpu),
        "gpu" => Ok(NprocSpec::Gpu),
        "xpu" => Ok(NprocSpec::Xpu),
        "auto" => Ok(NprocSpec::Auto),
        _ => Err(format!(
            "Unsupported nproc_per_node value: {value} \
             (expected a positive integer, auto, cpu, gpu or xpu)"
        )),
    }
}

/// `--rdzv-backend`: torchrun's registry also has `etcd` and `etcd-v2`, which need an etcd
/// server and a Python client; elastic-launch implements only `static` and `c10d`.
pub fn parse_rdzv_backend(value: &str) -> Result<RdzvBackend, String> {
    match value {
        "static" => Ok(RdzvBackend::Static),
        "c10d" => Ok(RdzvBackend::C10d),
        "etcd" | "etcd-v2" => Err(format!(
            "the '{value}' rendezvous backend is not supported by elastic-launch; \
             use c10d (elastic, no etcd server needed) or static"
        )),
        _ => Err(format!(
            "The rendezvous backend '{value}' is not registered; \
             elastic-launch supports c10d and static"
        )),
    }
}

/// `_parse_rendezvous_config`: `k1=v1,k2=v2`. Keys and values are stripped; values stay
/// strings; unknown keys are kept (the rendezvous ignores them). Quotes are not stripped:
/// torchrun's own test passes `'join_timeout=5,...,timeout=5'` quotes included, and must work.
pub fn parse_rendezvous_config(config: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let config = config.trim();
    if config.is_empty() {
        return Ok(out);
    }
    for kv in config.split(',') {
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (kv.trim(), None),
        };
        if key.is_empty() {
            return Err("The rendezvous configuration string must be in format \
                        <key1>=<value1>,...,<keyN>=<valueN>."
                .to_string());
        }
        match value {
            Some(v) if !v.is_empty() => {
                out.insert(key.to_string(), v.to_string());
            }
            _ => {
                return Err(format!(
                    "The rendezvous configuration option '{key}' must have a value specified."
                ));
            }
        }
    }
    Ok(out)
}

/// `Std.from_str` for `-r/--redirects` and `-t/--tee`: `^[0123]$` (all ranks) or
/// `^(\d:[0123],)*(\d:[0123])$` (per local rank; single-digit ranks only, as upstream).
pub fn parse_std_spec(value: &str) -> Result<StdSpec, String> {
    fn std_of(c: u8) -> Option<Std> {
        match c {
            b'0' => Some(Std {
                out: false,
                err: false,
            }),
            b'1' => Some(Std {
                out: true,
                err: false,
            }),
            b'2' => Some(Std {
                out: false,
                err: true,
            }),
            b'3' => Some(Std {
                out: true,
                err: true,
            }),
            _ => None,
        }
    }
    let no_match =
        || format!(r"{value} does not match: <^[0123]$> or <^(\d:[0123],)*(\d:[0123])$>");
    if let [c] = value.as_bytes() {
        return std_of(*c).map(StdSpec::All).ok_or_else(no_match);
    }
    let mut map = BTreeMap::new();
    for entry in value.split(',') {
        match entry.as_bytes() {
            [rank @ b'0'..=b'9', b':', std] => {
                let std = std_of(*std).ok_or_else(no_match)?;
                map.insert(u32::from(rank - b'0'), std);
            }
            _ => return Err(no_match()),
        }
    }
    Ok(StdSpec::PerRank(map))
}

/// `--local-ranks-filter`: empty → no filter; else a comma list of local ranks.
pub fn parse_local_ranks_filter(value: &str) -> Result<Option<BTreeSet<u32>>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value
        .split(',')
        .map(|r| py_int(r).and_then(|r| u32::try_from(r).ok()))
        .collect::<Option<BTreeSet<u32>>>()
        .map(Some)
        .ok_or_else(|| {
            "--local_ranks_filter must be a comma-separated list of integers \
             e.g. --local_ranks_filter=0,1,2"
                .to_string()
        })
}

/// `--duplicate-std{out,err}-filters` (torchrun's `comma_separated_list`): split on `,`, where
/// `,,` stands for a literal comma. Deviation: empty items are dropped, because an empty
/// needle would match (and duplicate) every line, which is never what `""` or `a,` means.
pub fn parse_comma_list(value: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                items.last_mut().expect("never empty").push(',');
            }
            ',' => items.push(String::new()),
            c => items.last_mut().expect("never empty").push(c),
        }
    }
    items.retain(|i| !i.is_empty());
    items
}

/// `--signals-to-handle`: comma list of signal names (`SIGTERM,SIGUSR1`). torchrun logs and
/// skips an unknown name; we refuse it, since a silently unhandled signal is found only when
/// a job is preempted. Empty items (`SIGTERM,`) are skipped; duplicates are dropped.
pub fn parse_signals(value: &str) -> Result<Vec<Signal>, String> {
    let mut signals = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let signal = Signal::from_str(name).map_err(|_| {
            format!("unknown signal '{name}' (use names like SIGTERM,SIGINT,SIGUSR1)")
        })?;
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            return Err(format!("{name} cannot be caught, so it cannot be handled"));
        }
        if !signals.contains(&signal) {
            signals.push(signal);
        }
    }
    Ok(signals)
}

/// `parse_rendezvous_endpoint(endpoint, default_port)`: `host[:port]`, `[v6]` or `[v6]:port`.
/// Empty → `("localhost", default_port)`. As upstream, an unbracketed IPv6 address is split at
/// its last colon (`::1` → host `:`, port 1): bracket it.
pub fn parse_endpoint(endpoint: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = split_endpoint(endpoint)?;
    Ok((host, port.unwrap_or(default_port)))
}

/// [`parse_endpoint`] without a default: `None` when the endpoint names no port.
pub fn split_endpoint(endpoint: &str) -> Result<(String, Option<u16>), String> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Ok(("localhost".to_string(), None));
    }
    let (mut host, port) = if endpoint.starts_with('[') && endpoint.ends_with(']') {
        (endpoint, None)
    } else {
        match endpoint.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (endpoint, None),
        }
    };
    if host.len() > 1 && host.starts_with('[') && host.ends_with(']') {
        host = &host[1..host.len() - 1];
    }
    let port = match port {
        None => None,
        Some(p) => {
            let valid = (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
            match p.parse::<u16>() {
                Ok(port) if valid => Some(port),
                _ => {
                    return Err(format!(
                        "The port number of the rendezvous endpoint '{endpoint}' must be an \
                         integer between 0 and 65536."
                    ));
                }
            }
        }
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if !host_ok {
        return Err(format!(
            "The hostname of the rendezvous endpoint '{endpoint}' must be a dot-separated list \
             of labels, an IPv4 address, or an IPv6 address."
        ));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nnodes_single_and_range() {
        assert_eq!(parse_min_max_nnodes("1"), Ok(NodeRange { min: 1, max: 1 }));
        assert_eq!(
            parse_min_max_nnodes("2:20"),
            Ok(NodeRange { min: 2, max: 20 })
        );
        assert_eq!(
            parse_min_max_nnodes(" 2 : 4 "),
            Ok(NodeRange { min: 2, max: 4 })
        );
    }

    #[test]
    fn nnodes_errors() {
        assert_eq!(
            parse_min_max_nnodes("2:20:30").unwrap_err(),
            r#"nnodes=2:20:30 is not in "MIN:MAX" format"#
        );
        let e = parse_min_max_nnodes("x").unwrap_err();
        assert!(
            e.contains("invalid literal for int() with base 10: 'x'"),
            "{e}"
        );
        assert!(parse_min_max_nnodes("1:").unwrap_err().contains("''"));
        assert!(parse_min_max_nnodes("").is_err());
        for bad in ["0", "0:2", "3:2", "-1:2"] {
            let e = parse_min_max_nnodes(bad).unwrap_err();
            assert!(
                e.starts_with("min_nodes must be > 0 and <= max_nodes"),
                "{bad}: {e}"
            );
        }
        assert!(parse_min_max_nnodes("1:99999999999").is_err());
    }

    #[test]
    fn nproc_values() {
        assert_eq!(parse_nproc_per_node("4"), Ok(NprocSpec::Count(4)));
        assert_eq!(parse_nproc_per_node("cpu"), Ok(NprocSpec::Cpu));
        assert_eq!(parse_nproc_per_node("gpu"), Ok(NprocSpec::Gpu));
        assert_eq!(parse_nproc_per_node("xpu"), Ok(NprocSpec::Xpu));
        assert_eq!(parse_nproc_per_node("auto"), Ok(NprocSpec::Auto));
        let e = parse_nproc_per_node("unknown").unwrap_err();
        assert!(
            e.starts_with("Unsupported nproc_per_node value: unknown"),
            "{e}"
        );
        assert!(parse_nproc_per_node("Auto").is_err());
        assert!(parse_nproc_per_node("0").unwrap_err().contains("positive"));
        assert!(parse_nproc_per_node("-2").unwrap_err().contains("positive"));
    }

    #[test]
    fn rdzv_backends() {
        assert_eq!(parse_rdzv_backend("static"), Ok(RdzvBackend::Static));
        assert_eq!(parse_rdzv_backend("c10d"), Ok(RdzvBackend::C10d));
        for etcd in ["etcd", "etcd-v2"] {
            let e = parse_rdzv_backend(etcd).unwrap_err();
            assert!(e.contains("not supported by elastic-launch"), "{e}");
        }
        assert!(
            parse_rdzv_backend("zmq")
                .unwrap_err()
                .contains("is not registered")
        );
    }

    #[test]
    fn rdzv_conf() {
        assert!(parse_rendezvous_config("  ").unwrap().is_empty());
        let c = parse_rendezvous_config(" join_timeout = 5 ,last_call_timeout=1,x=a=b").unwrap();
        assert_eq!(c["join_timeout"], "5");
        assert_eq!(c["last_call_timeout"], "1");
        assert_eq!(c["x"], "a=b");
        // torchrun's own test passes literal quotes: tolerated, keys and values keep them.
        let c = parse_rendezvous_config("'join_timeout=5,last_call_timeout=1,timeout=5'").unwrap();
        assert_eq!(c["'join_timeout"], "5");
        assert_eq!(c["timeout"], "5'");
        let format = "The rendezvous configuration string must be in format \
                      <key1>=<value1>,...,<keyN>=<valueN>.";
        assert_eq!(parse_rendezvous_config("=1").unwrap_err(), format);
        assert_eq!(parse_rendezvous_config("a=1,").unwrap_err(), format);
        for bad in ["timeout", "timeout=", "timeout= "] {
            assert_eq!(
                parse_rendezvous_config(bad).unwrap_err(),
                "The rendezvous configuration option 'timeout' must have a value specified."
            );
        }
    }

    #[test]
    fn std_specs() {
        let all = Std {
            out: true,
            err: true,
        };
        assert_eq!(parse_std_spec("0"), Ok(StdSpec::none()));
        assert_eq!(parse_std_spec("3"), Ok(StdSpec::All(all)));
        assert_eq!(
            parse_std_spec("1"),
            Ok(StdSpec::All(Std {
                out: true,
                err: false
            }))
        );
        let map = parse_std_spec("0:1,1:2").unwrap();
        assert_eq!(
            map.for_rank(0),
            Std {
                out: true,
                err: false
            }
        );
        assert_eq!(
            map.for_rank(1),
            Std {
                out: false,
                err: true
            }
        );
        assert_eq!(map.for_rank(2), Std::default());
        let msg = r"4 does not match: <^[0123]$> or <^(\d:[0123],)*(\d:[0123])$>";
        assert_eq!(parse_std_spec("4").unwrap_err(), msg);
        for bad in ["", "03", "10:1", "0:4", "0:1,", "0:1,,1:2", "a:1", " 3"] {
            let e = parse_std_spec(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("{bad} does not match: ")),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn local_ranks_filter() {
        assert_eq!(parse_local_ranks_filter(""), Ok(None));
        assert_eq!(
            parse_local_ranks_filter("0, 2,2"),
            Ok(Some(BTreeSet::from([0, 2])))
        );
        let msg = "--local_ranks_filter must be a comma-separated list of integers \
                   e.g. --local_ranks_filter=0,1,2";
        for bad in ["a", "0,,1", "0,", "-1"] {
            assert_eq!(parse_local_ranks_filter(bad).unwrap_err(), msg, "{bad}");
        }
    }

    #[test]
    fn comma_lists() {
        assert_eq!(parse_comma_list("apple,orange"), ["apple", "orange"]);
        assert_eq!(parse_comma_list("a,,b,c"), ["a,b", "c"]);
        assert_eq!(parse_comma_list("loss,,,acc"), ["loss,", "acc"]);
        assert!(parse_comma_list("").is_empty());
        assert_eq!(parse_comma_list("a,"), ["a"]);
    }

    #[test]
    fn signals() {
        assert_eq!(
            parse_signals(DEFAULT_SIGNALS).unwrap(),
            [
                Signal::SIGTERM,
                Signal::SIGINT,
                Signal::SIGHUP,
                Signal::SIGQUIT
            ]
        );
        assert_eq!(
            parse_signals(" SIGUSR1 ,SIGUSR2,SIGUSR1,").unwrap(),
            [Signal::SIGUSR1, Signal::SIGUSR2]
        );
        assert!(parse_signals("").unwrap().is_empty());
        assert!(
            parse_signals("SIGTERM,SIGFOO")
                .unwrap_err()
                .contains("unknown signal 'SIGFOO'")
        );
        assert!(parse_signals("TERM").unwrap_err().contains("'TERM'"));
        assert!(
            parse_signals("SIGKILL")
                .unwrap_err()
                .contains("cannot be caught")
        );
    }

    #[test]
    fn endpoints() {
        let ok = |e: &str, d: u16| parse_endpoint(e, d).unwrap();
        assert_eq!(ok("", 29400), ("localhost".into(), 29400));
        assert_eq!(ok(" node-0.svc:1234 ", 29400), ("node-0.svc".into(), 1234));
        assert_eq!(ok("node-0", 29400), ("node-0".into(), 29400));
        assert_eq!(ok("localhost:0", 29400), ("localhost".into(), 0));
        assert_eq!(ok("[::1]:29400", 1), ("::1".into(), 29400));
        assert_eq!(ok("[::1]", 29400), ("::1".into(), 29400));
        assert_eq!(ok("10.0.0.1:65535", 1), ("10.0.0.1".into(), 65535));
        // Upstream's mis-split of a bare IPv6 address, kept for compatibility.
        assert_eq!(ok("::1", 29400), (":".into(), 1));
        assert_eq!(split_endpoint("host").unwrap(), ("host".into(), None));

        let port_msg = |e: &str| {
            format!(
                "The port number of the rendezvous endpoint '{e}' must be an integer between \
                 0 and 65536."
            )
        };
        for bad in [
            "host:65536",
            "host:x",
            "host:",
            "host:123456",
            "host:-1",
            "host:+1",
        ] {
            assert_eq!(parse_endpoint(bad, 1).unwrap_err(), port_msg(bad));
        }
        for bad in [":29400", "a b:1", "ho/st", "[]:1"] {
            let e = parse_endpoint(bad, 1).unwrap_err();
            assert!(e.starts_with(&format!("The hostname of the rendezvous endpoint '{bad}'")));
        }
    }
}
