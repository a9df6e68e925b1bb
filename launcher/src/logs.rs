//! Worker logs: torchrun's directory layout (`<base>/<run_id>_<rand>/attempt_<n>/<local_rank>/`),
//! where each worker's stdout and stderr go (inherited, a file, a file teed to the console with a
//! prefix, or nowhere), and the tee itself.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use tokio::io::AsyncBufReadExt;

use crate::config::{Std, StdSpec};
use crate::template::safe_substitute;

/// The run's log directory, or none at all for `--log-dir /dev/null`.
#[derive(Debug, Clone)]
pub struct LogLayout {
    run_dir: Option<PathBuf>,
}

impl LogLayout {
    /// Creates `<base>/<run_id>_<8 random chars>`; `base` defaults to a fresh
    /// `/tmp/torchelastic_<random>` as torchrun's does.
    pub fn create(base: Option<&Path>, run_id: &str) -> std::io::Result<Self> {
        if base == Some(Path::new("/dev/null")) {
            return Ok(LogLayout { run_dir: None });
        }
        let base = match base {
            Some(base) => {
                if base.exists() && !base.is_dir() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        format!("--log-dir {} exists and is not a directory", base.display()),
                    ));
                }
                std::fs::create_dir_all(base)?;
                base.to_path_buf()
            }
            None => tempfile::Builder::new()
                .prefix("torchelastic_")
                .tempdir()?
                .keep(),
        };
        let run_dir = tempfile::Builder::new()
            .prefix(&format!("{run_id}_"))
            .tempdir_in(&base)?
            .keep();
        Ok(LogLayout {
            run_dir: Some(run_dir),
        })
    }

    pub fn run_dir(&self) -> Option<&Path> {
        self.run_dir.as_deref()
    }

    /// Prepares `attempt_<n>/<local_rank>/` for every local rank (an old attempt of the same
    /// number is replaced, as torchrun does).
    pub fn prepare_attempt(&self, restart_count: u32, nproc: u32) -> std::io::Result<()> {
        let Some(attempt) = self.attempt_dir(restart_count) else {
            return Ok(());
        };
        if attempt.exists() {
            std::fs::remove_dir_all(&attempt)?;
        }
        for local_rank in 0..nproc {
            std::fs::create_dir_all(attempt.join(local_rank.to_string()))?;
        }
        Ok(())
    }

    pub fn attempt_dir(&self, restart_count: u32) -> Option<PathBuf> {
        self.run_dir
            .as_ref()
            .map(|d| d.join(format!("attempt_{restart_count}")))
    }

    fn rank_file(&self, restart_count: u32, local_rank: u32, name: &str) -> Option<PathBuf> {
        self.attempt_dir(restart_count)
            .map(|d| d.join(local_rank.to_string()).join(name))
    }

    /// `TORCHELASTIC_ERROR_FILE` for a worker: always set, `""` without a log directory.
    pub fn error_file(&self, restart_count: u32, local_rank: u32) -> Option<PathBuf> {
        self.rank_file(restart_count, local_rank, "error.json")
    }
}

/// Where one of a worker's streams goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPlan {
    /// The launcher's own stdout/stderr, unprefixed.
    Inherit,
    /// Dropped: the rank is not in `--local-ranks-filter`.
    Null,
    /// Written to this file only.
    File(PathBuf),
    /// Written to the file and copied, line by line with a prefix, to the launcher's console.
    Tee(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// The settings that decide where worker output goes.
#[derive(Debug, Clone)]
pub struct OutputPolicy {
    pub redirects: StdSpec,
    pub tee: StdSpec,
    pub local_ranks_filter: Option<BTreeSet<u32>>,
}

impl OutputPolicy {
    /// torchrun's rules: the effective redirect is `redirects | tee`; ranks outside the filter
    /// are not teed and their non-redirected output is dropped.
    pub fn plan(
        &self,
        layout: &LogLayout,
        restart_count: u32,
        local_rank: u32,
        kind: StreamKind,
    ) -> StreamPlan {
        let pick = |s: Std| match kind {
            StreamKind::Stdout => s.out,
            StreamKind::Stderr => s.err,
        };
        let teed = pick(self.tee.for_rank(local_rank));
        let redirected = teed || pick(self.redirects.for_rank(local_rank));
        let shown = self
            .local_ranks_filter
            .as_ref()
            .is_none_or(|f| f.contains(&local_rank));
        let name = match kind {
            StreamKind::Stdout => "stdout.log",
            StreamKind::Stderr => "stderr.log",
        };
        match (
            redirected,
            layout.rank_file(restart_count, local_rank, name),
        ) {
            (false, _) if shown => StreamPlan::Inherit,
            (false, _) => StreamPlan::Null,
            (true, None) => StreamPlan::Null,
            (true, Some(path)) if teed && shown => StreamPlan::Tee(path),
            (true, Some(path)) => StreamPlan::File(path),
        }
    }
}

/// The console prefix of teed lines: `[<role><local_rank>]:` or the user's template with
/// `${role_name}`, `${rank}`, `${local_rank}`, `${hostname}`.
pub fn line_prefix(
    template: Option<&str>,
    role: &str,
    rank: u32,
    local_rank: u32,
    hostname: &str,
) -> String {
    match template {
        Some(t) => safe_substitute(
            t,
            &[
                ("role_name", role),
                ("rank", &rank.to_string()),
                ("local_rank", &local_rank.to_string()),
                ("hostname", hostname),
            ],
        ),
        None => format!("[{role}{local_rank}]:"),
    }
}

/// A stream ready to hand to the worker, plus what the launcher keeps to tee it.
pub struct PreparedStream {
    /// The worker's end as a file descriptor (None: the launcher's own stream, which a child
    /// inherits). A descriptor, not a `Stdio`, so a standby interpreter can be handed it too
    /// ([`crate::prewarm`]).
    pub worker: Option<OwnedFd>,
    /// The read end of a teed stream's pipe and the log file it is copied to.
    pub tee: Option<(OwnedFd, std::fs::File)>,
}

/// The read end of a teed stream and where its copy goes.
pub struct TeeSource {
    pub read: OwnedFd,
    pub file: std::fs::File,
    pub prefix: String,
    pub kind: StreamKind,
    /// Lines containing any of these also go to `filtered_<stream>.log` of the attempt.
    pub filters: Vec<String>,
    pub filtered_file: Option<PathBuf>,
}

pub fn prepare_stream(plan: &StreamPlan) -> std::io::Result<PreparedStream> {
    let (worker, tee) = match plan {
        StreamPlan::Inherit => (None, None),
        StreamPlan::Null => (
            Some(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/null")?
                    .into(),
            ),
            None,
        ),
        StreamPlan::File(path) => (Some(std::fs::File::create(path)?.into()), None),
        StreamPlan::Tee(path) => {
            let file = std::fs::File::create(path)?;
            let (read, write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
            (Some(write), Some((read, file)))
        }
    };
    Ok(PreparedStream { worker, tee })
}

/// Copies a teed stream to its file and, line by line with the prefix, to the console until
/// the worker (and anything it started that holds the pipe) closes it.
pub async fn run_tee(source: TeeSource) -> std::io::Result<()> {
    let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(source.read)?;
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut file = source.file;
    let mut filtered = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        file.write_all(&line)?;
        let mut console_line = Vec::with_capacity(source.prefix.len() + line.len() + 1);
        console_line.extend_from_slice(source.prefix.as_bytes());
        console_line.extend_from_slice(&line);
        if !line.ends_with(b"\n") {
            console_line.push(b'\n');
        }
        // One write per line so lines of different ranks never interleave mid-line.
        let _ = match source.kind {
            StreamKind::Stdout => std::io::stdout().lock().write_all(&console_line),
            StreamKind::Stderr => std::io::stderr().lock().write_all(&console_line),
        };
        let text = String::from_utf8_lossy(&line);
        if let Some(path) = &source.filtered_file
            && source
                .filters
                .iter()
                .any(|needle| text.contains(needle.as_str()))
        {
            if filtered.is_none() {
                filtered = Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?,
                );
            }
            if let Some(f) = filtered.as_mut() {
                f.write_all(&console_line)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn policy(redirects: StdSpec, tee: StdSpec, filter: Option<&[u32]>) -> OutputPolicy {
        OutputPolicy {
            redirects,
            tee,
            local_ranks_filter: filter.map(|f| f.iter().copied().collect()),
        }
    }
    const ALL: Std = Std {
        out: true,
        err: true,
    };
    const OUT: Std = Std {
        out: true,
        err: false,
    };

    #[test]
    fn layout_is_torchruns() {
        let base = tempfile::tempdir().unwrap();
        let layout = LogLayout::create(Some(base.path()), "myrun").unwrap();
        let run = layout.run_dir().unwrap();
        assert_eq!(run.parent().unwrap(), base.path());
        let name = run.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("myrun_") && name.len() > "myrun_".len(),
            "{name}"
        );
        layout.prepare_attempt(1, 2).unwrap();
        assert!(run.join("attempt_1/0").is_dir() && run.join("attempt_1/1").is_dir());
        assert_eq!(
            layout.error_file(1, 1).unwrap(),
            run.join("attempt_1/1/error.json")
        );
    }

    #[test]
    fn dev_null_means_no_files() {
        let layout = LogLayout::create(Some(Path::new("/dev/null")), "r").unwrap();
        assert_eq!(layout.error_file(0, 0), None);
        let p = policy(StdSpec::All(ALL), StdSpec::All(ALL), None);
        assert_eq!(p.plan(&layout, 0, 0, StreamKind::Stdout), StreamPlan::Null);
    }

    #[test]
    fn log_dir_that_is_a_file_is_an_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = LogLayout::create(Some(file.path()), "r").unwrap_err();
        assert!(err.to_string().contains("is not a directory"));
    }

    #[test]
    fn plans_follow_redirect_tee_and_filter() {
        let base = tempfile::tempdir().unwrap();
        let layout = LogLayout::create(Some(base.path()), "r").unwrap();
        let run = layout.run_dir().unwrap().to_path_buf();
        let none = policy(StdSpec::none(), StdSpec::none(), None);
        assert_eq!(
            none.plan(&layout, 0, 0, StreamKind::Stdout),
            StreamPlan::Inherit
        );
        let per_rank = StdSpec::PerRank(BTreeMap::from([(1, OUT)]));
        let p = policy(
            StdSpec::All(Std {
                out: false,
                err: true,
            }),
            per_rank,
            Some(&[1]),
        );
        assert_eq!(
            p.plan(&layout, 0, 1, StreamKind::Stdout),
            StreamPlan::Tee(run.join("attempt_0/1/stdout.log"))
        );
        assert_eq!(
            p.plan(&layout, 0, 1, StreamKind::Stderr),
            StreamPlan::File(run.join("attempt_0/1/stderr.log"))
        );
        assert_eq!(p.plan(&layout, 0, 0, StreamKind::Stdout), StreamPlan::Null);
        assert_eq!(
            p.plan(&layout, 0, 0, StreamKind::Stderr),
            StreamPlan::File(run.join("attempt_0/0/stderr.log"))
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(line_prefix(None, "default", 5, 1, "h"), "[default1]:");
        assert_eq!(
            line_prefix(Some("[rank${rank}]: "), "default", 5, 1, "h"),
            "[rank5]: "
        );
        assert_eq!(
            line_prefix(
                Some("${hostname}/${role_name}${local_rank}|"),
                "t",
                5,
                1,
                "h"
            ),
            "h/t1|"
        );
    }
}
