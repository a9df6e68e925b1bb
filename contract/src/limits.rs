//! Process limits both sides raise at start.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit, and says what it was and is. Both
/// sides hold a connection per peer: the launcher that hosts the store one per node (1,000
/// nodes exhaust the common default of 1,024), the operator's launcher poller one kept-alive
/// connection per running pod.
pub fn raise_open_files_limit() -> Result<(u64, u64), nix::Error> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, soft.max(hard)))
}
