//! Progress the workers report, with no dependency on us: each local rank may append one JSON
//! object per line to its own file (`ELASTICJOB_PROGRESS_FILE`), e.g.
//! `{"step": 120, "total": 1000, "loss": 0.31}`. The agent reads what was appended since it
//! last looked, keeps the newest report for `/status`, measures the step rate over the round,
//! and tells a stall: local ranks that reported in this round and then fell silent. Ranks that
//! never report are never called silent, so reporting from rank 0 alone is fine.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

pub use elasticjob_contract::progress::{PROGRESS_FILE_ENV, Training};

/// One progress line, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub step: u64,
    pub total: Option<u64>,
    pub metrics: BTreeMap<String, f64>,
}

/// Reads one line: a JSON object with a non-negative integer `step`, an optional `total`, and
/// any other numeric fields as metrics (other fields are ignored).
pub fn parse_line(line: &str) -> Result<Report, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("not a JSON object like {\"step\": 1}")?;
    let step = object
        .get("step")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no \"step\" (a non-negative integer)")?;
    let total = object.get("total").and_then(serde_json::Value::as_u64);
    let metrics = object
        .iter()
        .filter(|(k, _)| *k != "step" && *k != "total")
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Ok(Report {
        step,
        total,
        metrics,
    })
}

/// The progress files of one round's workers.
pub struct RoundProgress {
    ranks: Vec<RankFile>,
    latest: Option<Training>,
    /// The first report of the round: (when, step), for the step rate.
    first: Option<(Instant, u64)>,
    warned: bool,
}

struct RankFile {
    path: PathBuf,
    global_rank: u32,
    offset: u64,
    partial: String,
    last_report: Option<Instant>,
}

impl RoundProgress {
    /// `files` are (global rank, path) per local rank; any file left from an earlier round is
    /// removed, so a round starts with no progress.
    pub fn start(files: Vec<(u32, PathBuf)>) -> RoundProgress {
        for (_, path) in &files {
            let _ = std::fs::remove_file(path);
        }
        RoundProgress {
            ranks: files
                .into_iter()
                .map(|(global_rank, path)| RankFile {
                    path,
                    global_rank,
                    offset: 0,
                    partial: String::new(),
                    last_report: None,
                })
                .collect(),
            latest: None,
            first: None,
            warned: false,
        }
    }

    /// The file local rank `i` appends to.
    pub fn path(dir: &Path, local_rank: u32) -> PathBuf {
        dir.join(format!("progress_{local_rank}.jsonl"))
    }

    /// Reads what the workers appended; the newest report when there is a new one.
    pub fn read(&mut self, now: Instant, unix_now: f64) -> Option<&Training> {
        let mut newest: Option<Report> = None;
        for rank in &mut self.ranks {
            let Ok(text) = read_from(&rank.path, &mut rank.offset) else {
                continue;
            };
            rank.partial.push_str(&text);
            let Some(end) = rank.partial.rfind('\n') else {
                continue;
            };
            let complete: String = rank.partial.drain(..=end).collect();
            for line in complete.lines().filter(|l| !l.trim().is_empty()) {
                match parse_line(line) {
                    Ok(report) => {
                        rank.last_report = Some(now);
                        if newest.as_ref().is_none_or(|n| report.step >= n.step) {
                            newest = Some(report);
                        }
                    }
                    Err(e) if !self.warned => {
                        self.warned = true;
                        tracing::warn!(path = %rank.path.display(), line, error = %e, "ignoring a progress line that is not {{\"step\": <int>, ...}} (said once)");
                    }
                    Err(_) => {}
                }
            }
        }
        let report = newest?;
        let first = *self.first.get_or_insert((now, report.step));
        let elapsed = now.duration_since(first.0).as_secs_f64();
        let steps_per_second = (elapsed > 0.0 && report.step > first.1)
            .then(|| (report.step - first.1) as f64 / elapsed);
        self.latest = Some(Training {
            step: report.step,
            total: report.total,
            metrics: report.metrics,
            updated: unix_now,
            steps_per_second,
        });
        self.latest.as_ref()
    }

    /// Whether every rank has reported at least once in this round.
    pub fn all_reported(&self) -> bool {
        self.ranks.iter().all(|r| r.last_report.is_some())
    }

    /// Global ranks that reported in this round and have been silent for `timeout` or more,
    /// with the longest silence.
    pub fn silent(&self, now: Instant, timeout: Duration) -> (Vec<u32>, Duration) {
        let mut longest = Duration::ZERO;
        let ranks = self
            .ranks
            .iter()
            .filter_map(|r| {
                let quiet = now.duration_since(r.last_report?);
                longest = longest.max(quiet);
                (quiet >= timeout).then_some(r.global_rank)
            })
            .collect();
        (ranks, longest)
    }
}

/// What was appended to `path` since `offset` (which moves on); a file that shrank (rewritten)
/// is read again from its start.
fn read_from(path: &Path, offset: &mut u64) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    if len < *offset {
        *offset = 0;
    }
    f.seek(SeekFrom::Start(*offset))?;
    let mut bytes = Vec::new();
    f.take(1 << 20).read_to_end(&mut bytes)?;
    *offset += bytes.len() as u64;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_are_step_total_and_numeric_metrics() {
        let r = parse_line(r#"{"step": 12, "total": 100, "loss": 0.5, "lr": 1e-3, "tag": "x"}"#)
            .unwrap();
        assert_eq!((r.step, r.total), (12, Some(100)));
        assert_eq!(
            r.metrics,
            BTreeMap::from([("loss".into(), 0.5), ("lr".into(), 1e-3)])
        );
        for bad in [r#"{"loss": 1}"#, "step 3", r#"{"step": -1}"#, "[1]"] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_appended_lines_measures_the_rate_and_names_silent_ranks() {
        let dir = tempfile::tempdir().unwrap();
        let (p0, p1) = (
            RoundProgress::path(dir.path(), 0),
            RoundProgress::path(dir.path(), 1),
        );
        std::fs::write(&p0, "{\"step\": 99}\n").unwrap();
        let mut progress = RoundProgress::start(vec![(4, p0.clone()), (5, p1.clone())]);
        let t0 = Instant::now();
        assert!(progress.read(t0, 0.0).is_none(), "a stale file is removed");
        let append = |p: &Path, text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append(&p0, "{\"step\": 10, \"total\": 50}\n{\"step\": 11, \"to");
        let t = progress.read(t0, 100.0).unwrap();
        assert_eq!((t.step, t.total, t.steps_per_second), (10, Some(50), None));
        append(&p0, "tal\": 50, \"loss\": 0.25}\n");
        append(&p1, "not json\n");
        tokio::time::advance(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        let t = progress.read(t1, 102.0).unwrap();
        assert_eq!((t.step, t.updated), (11, 102.0));
        assert_eq!(t.steps_per_second, Some(0.5));
        assert_eq!(t.metrics["loss"], 0.25);
        assert!(progress.read(t1, 102.0).is_none(), "nothing new");
        // Rank 5 never reported: never silent. Rank 4 is, once the timeout passed.
        assert_eq!(
            progress.silent(t1, Duration::from_secs(5)).0,
            Vec::<u32>::new()
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        let (silent, longest) = progress.silent(Instant::now(), Duration::from_secs(5));
        assert_eq!((silent, longest), (vec![4], Duration::from_secs(5)));
        assert!(!progress.all_reported(), "rank 5's line was not a report");
        append(&p1, "{\"step\": 11}\n");
        progress.read(Instant::now(), 107.0);
        assert!(progress.all_reported());
    }
}
