//! `elastic-launch __install DIR`: the launcher copies itself into `DIR`, an `emptyDir` the
//! operator's init container shares with the user's container, so that any image can run it.

/// The hidden first argument that selects the install mode.
pub const ARG: &str = "__install";
/// The launcher's file name, in `DIR` and on `PATH`.
pub const BINARY_NAME: &str = "elastic-launch";
/// The torchrun alias next to it in `DIR`, so commands written for torchrun find it too.
pub const TORCHRUN_LINK: &str = "torchrun";

/// The hidden first argument that runs a shell command calling `torchrun` once per pod, this
/// launcher standing in as that `torchrun` (`elastic-launch __wrap sh -c "... && torchrun ..."`).
pub const WRAP_ARG: &str = "__wrap";
