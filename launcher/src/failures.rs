//! Worker failures: reading each failed worker's `error.json`, choosing the root cause, and
//! torchrun's `ChildFailedError` report text. Pure functions except [`read_error_file`].

use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use serde_json::Value;

/// One failed worker, as torchrun's `ProcessFailure`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessFailure {
    pub local_rank: u32,
    pub global_rank: u32,
    pub pid: u32,
    /// Exit code; negative when the worker was killed by a signal (`-9`).
    pub exitcode: i32,
    /// The error file, when the worker wrote one.
    pub error_file: Option<PathBuf>,
    /// The worker's own message (`"RuntimeError: boom"`) or ours when it left none.
    pub message: String,
    /// The Python traceback from the error file, if any.
    pub traceback: Option<String>,
    /// Seconds since the epoch: from the error file, else when we saw the exit.
    pub timestamp: i64,
    /// The parsed error file, kept to forward it verbatim.
    pub error_data: Option<Value>,
}

impl ProcessFailure {
    pub fn signal_name(&self) -> Option<&'static str> {
        signal_name(self.exitcode)
    }
}

pub fn signal_name(exitcode: i32) -> Option<&'static str> {
    if exitcode >= 0 {
        return None;
    }
    Signal::try_from(-exitcode).ok().map(|s| s.as_str())
}

/// What a worker's error file says.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorFileContent {
    pub message: String,
    pub traceback: Option<String>,
    pub timestamp: Option<i64>,
    pub data: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorFileError {
    #[error("cannot read worker error file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("worker error file {path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Reads a worker's error file; `Ok(None)` when the worker wrote none.
pub fn read_error_file(path: &Path) -> Result<Option<ErrorFileContent>, ErrorFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ErrorFileError::Read {
                path: path.into(),
                source,
            });
        }
    };
    let data: Value = serde_json::from_str(&text).map_err(|source| ErrorFileError::Parse {
        path: path.into(),
        source,
    })?;
    Ok(Some(parse_error_data(data)))
}

/// Both formats torch elastic writes: `{"message": {"message": .., "extraInfo": {"py_callstack":
/// .., "timestamp": "<int>"}}}` and the older `{"message": "<str>", "timestamp": <int>}`.
pub fn parse_error_data(data: Value) -> ErrorFileContent {
    let as_int = |v: &Value| {
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
    };
    match data.get("message") {
        Some(Value::Object(inner)) => {
            let extra = inner.get("extraInfo");
            ErrorFileContent {
                message: inner
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("<NONE>")
                    .to_string(),
                traceback: extra
                    .and_then(|e| e.get("py_callstack"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                timestamp: extra.and_then(|e| e.get("timestamp")).and_then(as_int),
                data,
            }
        }
        Some(Value::String(message)) => ErrorFileContent {
            message: message.clone(),
            traceback: None,
            timestamp: Some(data.get("timestamp").and_then(as_int).unwrap_or(0)),
            data,
        },
        _ => ErrorFileContent {
            message: "<NONE>".into(),
            traceback: None,
            timestamp: None,
            data,
        },
    }
}

/// Builds a failure from an exit and the (optional) error file content, as torchrun does when
/// a worker left no file: a signal line for signals, a pointer to `@record` otherwise.
pub fn failure_from_exit(
    local_rank: u32,
    global_rank: u32,
    pid: u32,
    exitcode: i32,
    error_file: &Path,
    content: Option<ErrorFileContent>,
    now: i64,
) -> ProcessFailure {
    match content {
        Some(c) => ProcessFailure {
            local_rank,
            global_rank,
            pid,
            exitcode,
            error_file: Some(error_file.into()),
            message: c.message,
            traceback: c.traceback,
            timestamp: c.timestamp.unwrap_or(now),
            error_data: Some(c.data),
        },
        None => ProcessFailure {
            local_rank,
            global_rank,
            pid,
            exitcode,
            error_file: None,
            message: match signal_name(exitcode) {
                Some(name) => format!("Signal {} ({name}) received by PID {pid}", -exitcode),
                None => {
                    "To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html"
                        .into()
                }
            },
            traceback: None,
            timestamp: now,
            error_data: None,
        },
    }
}

/// The first observed failure: smallest timestamp, ties to the earliest in `failures`' order.
pub fn root_cause(failures: &[ProcessFailure]) -> Option<&ProcessFailure> {
    failures
        .iter()
        .enumerate()
        .min_by_key(|(i, f)| (f.timestamp, *i))
        .map(|(_, f)| f)
}

/// torchrun's `ChildFailedError` text: title, other failures, root cause, 60-column rules.
pub fn format_report(name: &str, failures: &[ProcessFailure], host: &str) -> String {
    let Some(root) = root_cause(failures) else {
        return String::new();
    };
    let blocks: Vec<String> = failures
        .iter()
        .enumerate()
        .map(|(i, f)| format_failure(i, f, host))
        .collect();
    let root_index = failures
        .iter()
        .position(|f| std::ptr::eq(f, root))
        .unwrap_or(0);
    let others: Vec<&str> = blocks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != root_index)
        .map(|(_, b)| b.as_str())
        .collect();
    let title = format!("{name} FAILED");
    let longest = blocks
        .iter()
        .flat_map(|b| b.lines())
        .map(str::len)
        .chain([title.len()])
        .max()
        .unwrap_or(0);
    let width = longest.clamp(0, 60);
    let others = if others.is_empty() {
        "  <NO_OTHER_FAILURES>".to_string()
    } else {
        others.join("\n")
    };
    format!(
        "\n{eq}\n{title}\n{dash}\nFailures:\n{others}\n{dash}\nRoot Cause (first observed failure):\n{root}\n{eq}",
        eq = "=".repeat(width),
        dash = "-".repeat(width),
        root = blocks[root_index],
    )
}

fn format_failure(index: usize, f: &ProcessFailure, host: &str) -> String {
    let time = chrono::DateTime::from_timestamp(f.timestamp, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d_%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| f.timestamp.to_string());
    let signal = f
        .signal_name()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let error_file = f
        .error_file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or("<N/A>".into());
    let traceback = f
        .traceback
        .as_deref()
        .unwrap_or(&f.message)
        .replace('\n', "\n  ");
    format!(
        "[{index}]:\n  time      : {time}\n  host      : {host}\n  rank      : {} (local_rank: {})\n  exitcode  : {} (pid: {}) {signal}\n  error_file: {error_file}\n  traceback : {traceback}",
        f.global_rank, f.local_rank, f.exitcode, f.pid
    )
}

/// What torchrun's `@record` on `main` writes to the launcher's own `TORCHELASTIC_ERROR_FILE`:
/// the root cause's error file, with `errorCode` added to a dict message; `None` when the root
/// cause left no file (torchrun then writes nothing either).
pub fn forwarded_error(root: &ProcessFailure) -> Option<Value> {
    let mut data = root.error_data.clone()?;
    if root.exitcode != 0
        && let Some(Value::Object(message)) = data.get_mut("message")
    {
        message.insert("errorCode".into(), Value::from(root.exitcode));
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failure(rank: u32, exitcode: i32, ts: i64) -> ProcessFailure {
        failure_from_exit(
            rank,
            rank + 4,
            100 + rank,
            exitcode,
            Path::new("/e.json"),
            None,
            ts,
        )
    }

    #[test]
    fn parses_both_error_file_formats() {
        let new = parse_error_data(json!({"message": {"message": "RuntimeError: boom",
            "extraInfo": {"py_callstack": "Traceback...\nRuntimeError: boom", "timestamp": "1700000000"}}}));
        assert_eq!(new.message, "RuntimeError: boom");
        assert_eq!(new.timestamp, Some(1700000000));
        assert!(new.traceback.unwrap().starts_with("Traceback"));
        let old = parse_error_data(json!({"message": "boom", "timestamp": 17}));
        assert_eq!(
            (old.message.as_str(), old.timestamp, old.traceback),
            ("boom", Some(17), None)
        );
    }

    #[test]
    fn missing_file_messages() {
        let killed = failure(0, -9, 5);
        assert_eq!(killed.message, "Signal 9 (SIGKILL) received by PID 100");
        assert!(
            failure(1, 3, 5)
                .message
                .starts_with("To enable traceback see")
        );
    }

    #[test]
    fn root_cause_is_earliest_then_first() {
        let fs = vec![failure(0, 1, 20), failure(1, 1, 10), failure(2, 1, 10)];
        assert_eq!(root_cause(&fs).unwrap().local_rank, 1);
    }

    #[test]
    fn report_has_torchruns_shape() {
        let fs = vec![failure(0, 1, 20), failure(1, -15, 10)];
        let text = format_report("train.py", &fs, "node-a");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "=".repeat(60));
        assert_eq!(lines[2], "train.py FAILED");
        assert!(text.contains("Failures:\n[0]:\n"));
        assert!(text.contains("Root Cause (first observed failure):\n[1]:\n"));
        assert!(text.contains("  rank      : 5 (local_rank: 1)\n"));
        assert!(text.contains("  exitcode  : -15 (pid: 101)  (SIGTERM)\n"));
        assert!(text.contains("  exitcode  : 1 (pid: 100) \n"));
        assert!(text.contains("  error_file: <N/A>\n"));
        let single = format_report("x", &fs[..1], "h");
        assert!(single.contains("Failures:\n  <NO_OTHER_FAILURES>\n"));
    }

    #[test]
    fn forwarding_adds_error_code() {
        let content =
            parse_error_data(json!({"message": {"message": "E", "extraInfo": {"timestamp": "1"}}}));
        let f = failure_from_exit(0, 0, 1, 2, Path::new("/e"), Some(content), 0);
        assert_eq!(
            forwarded_error(&f).unwrap()["message"]["errorCode"],
            json!(2)
        );
        assert_eq!(forwarded_error(&failure(0, 1, 0)), None);
    }
}
