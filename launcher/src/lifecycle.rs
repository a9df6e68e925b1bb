//! What the agent does when the wait for a round ends ([`after_wait`]) and when a round's worker
//! group ends ([`decide`]): pure decisions over the way it ended,
//! whether this node was the first to claim the round's failure, and the restart budget. The
//! agent (`agent.rs`) does the IO the decision names: stopping workers, the exit barrier,
//! reconnecting, re-joining.
//!
//! The rules, as torch elastic's agent has them, plus the charge-once rule: one worker failure
//! breaks every node's collectives, so every node sees its workers fail; only the node that
//! claims the round's failure first is charged a restart, the others re-form for free.

use nix::sys::signal::Signal;

use crate::progress::State;

/// How a round's worker group ended, as the monitor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupEnd {
    /// Every local worker exited 0.
    Succeeded,
    /// A local worker failed on its own.
    Failed,
    /// A node waits to join the next round (scale-up, or a peer re-forming after a failure).
    MembershipChanged,
    /// A peer of this round stopped heartbeating.
    PeerLost,
    /// The rendezvous store is unreachable.
    StoreLost,
    /// One of `--signals-to-handle` arrived.
    Signal(Signal),
}

impl GroupEnd {
    /// Whether the agent claims the round's failure before stopping its workers: a failure of
    /// its own, or leaving on a signal (which breaks the others' collectives, so their
    /// failures are not theirs).
    pub fn claims_round_failure(self) -> bool {
        matches!(self, GroupEnd::Failed | GroupEnd::Signal(_))
    }
}

/// Worker-group restarts spent on this node's failures, and `--max-restarts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub used: u32,
    pub max: u32,
}

/// How long workers get between the stop signal and SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grace {
    /// `--shutdown-timeout` (leaving for good).
    Shutdown,
    /// torchrun's 30 s between rounds.
    Restart,
}

/// What comes after the workers are stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Wait at the exit barrier, mark the rendezvous closed, exit 0.
    Finish,
    /// Exit, reporting the signal.
    Exit(Signal),
    /// Join the next round; first reconnect to the store when it was lost.
    Rejoin { reconnect: bool },
    /// Announce the failure to the other nodes and exit with the workers' failure.
    GiveUp,
}

/// The decision for one ended round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The state to publish at once, before stopping.
    pub state: Option<State>,
    /// The signal the remaining workers get, and their grace.
    pub stop: (Signal, Grace),
    /// The round re-forms without a failure charged here (`/status` `reForms`).
    pub re_form: bool,
    /// Charge one restart to this node's budget.
    pub charge_restart: bool,
    pub next: Next,
}

/// Decides what follows `end`. `first_to_claim` is whether this node claimed the round's
/// failure first (only read when [`GroupEnd::claims_round_failure`]).
pub fn decide(end: GroupEnd, first_to_claim: bool, budget: Budget) -> Decision {
    let between_rounds = |reconnect| Decision {
        state: None,
        stop: (Signal::SIGTERM, Grace::Restart),
        re_form: true,
        charge_restart: false,
        next: Next::Rejoin { reconnect },
    };
    match end {
        GroupEnd::Succeeded => Decision {
            state: Some(State::Succeeded),
            // Whatever the workers left running in their process groups goes now, as
            // torchrun's context close does; this also drains their teed output.
            stop: (Signal::SIGTERM, Grace::Shutdown),
            re_form: false,
            charge_restart: false,
            next: Next::Finish,
        },
        GroupEnd::Signal(sig) => Decision {
            state: Some(State::Stopping),
            stop: (sig, Grace::Shutdown),
            re_form: false,
            charge_restart: false,
            next: Next::Exit(sig),
        },
        GroupEnd::MembershipChanged | GroupEnd::PeerLost => between_rounds(false),
        GroupEnd::StoreLost => between_rounds(true),
        // Another node's workers failed first; this node's failed with them.
        GroupEnd::Failed if !first_to_claim => between_rounds(false),
        GroupEnd::Failed if budget.used >= budget.max => Decision {
            state: None,
            stop: (Signal::SIGTERM, Grace::Restart),
            re_form: false,
            charge_restart: false,
            next: Next::GiveUp,
        },
        GroupEnd::Failed => Decision {
            state: None,
            stop: (Signal::SIGTERM, Grace::Restart),
            re_form: false,
            charge_restart: true,
            next: Next::Rejoin { reconnect: false },
        },
    }
}

/// How waiting for a round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// A round formed with this node in it.
    Formed,
    /// The job is over: the store says the rendezvous is closed.
    JobClosed,
    /// Joining failed (timeout, store error).
    Failed,
    /// One of `--signals-to-handle` arrived.
    Signal(Signal),
}

/// What follows the wait for a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterWait {
    /// Start this round's workers.
    StartWorkers,
    /// The job finished before this node ever ran workers (it arrived late or waited in
    /// reserve): nothing failed, exit 0.
    NotNeeded,
    /// Publish `Stopping` and exit, reporting the signal.
    Exit(Signal),
    /// Exit with the wait's error: a node that ran workers must not find the job closed
    /// under it.
    Fail,
}

/// Decides what follows the wait for a round; `started_once` is whether this node has run
/// workers in an earlier round.
pub fn after_wait(end: WaitEnd, started_once: bool) -> AfterWait {
    match end {
        WaitEnd::Formed => AfterWait::StartWorkers,
        WaitEnd::JobClosed if !started_once => AfterWait::NotNeeded,
        WaitEnd::Signal(sig) => AfterWait::Exit(sig),
        WaitEnd::JobClosed | WaitEnd::Failed => AfterWait::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal as Sig;

    /// Every way a round ends × (first to claim or not) × (budget left or spent).
    #[rustfmt::skip]
    #[test]
    fn decision_table() {
        use GroupEnd::*;
        use Grace::{Restart, Shutdown};
        let left = Budget { used: 1, max: 3 };
        let spent = Budget { used: 3, max: 3 };
        let none = Budget { used: 0, max: 0 };
        let rejoin = Next::Rejoin { reconnect: false };
        let done = Some(State::Succeeded);
        let stopping = Some(State::Stopping);
        let term = Sig::SIGTERM;
        // (end, first, budget) → (state, stop signal, grace, re_form, charge, next)
        let table = [
            (Succeeded, false, left, (done, term, Shutdown, false, false, Next::Finish)),
            (Succeeded, true, spent, (done, term, Shutdown, false, false, Next::Finish)),
            (Signal(term), true, left, (stopping, term, Shutdown, false, false, Next::Exit(term))),
            (Signal(Sig::SIGINT), false, spent, (stopping, Sig::SIGINT, Shutdown, false, false, Next::Exit(Sig::SIGINT))),
            (MembershipChanged, false, spent, (None, term, Restart, true, false, rejoin)),
            (PeerLost, false, none, (None, term, Restart, true, false, rejoin)),
            (StoreLost, false, spent, (None, term, Restart, true, false, Next::Rejoin { reconnect: true })),
            // The charge-once rule: only the first claimant pays, whatever its budget.
            (Failed, false, left, (None, term, Restart, true, false, rejoin)),
            (Failed, false, spent, (None, term, Restart, true, false, rejoin)),
            (Failed, true, left, (None, term, Restart, false, true, rejoin)),
            (Failed, true, spent, (None, term, Restart, false, false, Next::GiveUp)),
            (Failed, true, none, (None, term, Restart, false, false, Next::GiveUp)),
        ];
        for (end, first, budget, (state, sig, grace, re_form, charge_restart, next)) in table {
            let want = Decision { state, stop: (sig, grace), re_form, charge_restart, next };
            assert_eq!(decide(end, first, budget), want, "{end:?} first={first} {budget:?}");
        }
    }

    /// Every way the wait for a round ends, before and after this node first ran workers.
    #[rustfmt::skip]
    #[test]
    fn wait_table() {
        use WaitEnd::*;
        let table = [
            (Formed, false, AfterWait::StartWorkers),
            (Formed, true, AfterWait::StartWorkers),
            (JobClosed, false, AfterWait::NotNeeded),
            (JobClosed, true, AfterWait::Fail),
            (Failed, false, AfterWait::Fail),
            (Failed, true, AfterWait::Fail),
            (Signal(Sig::SIGTERM), false, AfterWait::Exit(Sig::SIGTERM)),
            (Signal(Sig::SIGINT), true, AfterWait::Exit(Sig::SIGINT)),
        ];
        for (end, started_once, want) in table {
            assert_eq!(after_wait(end, started_once), want, "{end:?} started_once={started_once}");
        }
    }

    #[test]
    fn only_failures_and_signals_claim_the_round() {
        use GroupEnd::*;
        for end in [Failed, Signal(Sig::SIGTERM)] {
            assert!(end.claims_round_failure(), "{end:?}");
        }
        for end in [Succeeded, MembershipChanged, PeerLost, StoreLost] {
            assert!(!end.claims_round_failure(), "{end:?}");
        }
    }

    /// A job with --max-restarts=N survives exactly N charged failures on one node.
    #[test]
    fn the_budget_allows_exactly_max_restarts() {
        let mut used = 0;
        let max = 2;
        let mut rounds = 0;
        loop {
            rounds += 1;
            let d = decide(GroupEnd::Failed, true, Budget { used, max });
            if d.next == Next::GiveUp {
                break;
            }
            assert!(d.charge_restart);
            used += 1;
        }
        assert_eq!((used, rounds), (2, 3));
    }
}
