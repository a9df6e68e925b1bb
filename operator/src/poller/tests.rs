use std::collections::HashSet;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use elasticjob_contract::progress::{State, Training};
use futures::StreamExt;

use super::*;
use crate::observed::Phase;

const S: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg() -> PollerConfig {
    PollerConfig::default()
}

fn job(name: &str) -> JobRef {
    ObjectRef::new(name).within("ml")
}

fn target(uid: &str) -> Target {
    Target {
        pod_uid: uid.into(),
        ip: "10.0.0.1".into(),
        port: 29401,
    }
}

fn running(round: u64) -> Progress {
    Progress {
        state: State::Running,
        round: Some(round),
        world_size: Some(4),
        ..Progress::new(2, 3)
    }
}

fn training(round: u64, step: u64) -> Progress {
    Progress {
        training: Some(Training {
            step,
            total: Some(1000),
            metrics: Default::default(),
            updated: step as f64,
            steps_per_second: None,
        }),
        ..running(round)
    }
}

fn always(_: &JobRef) -> bool {
    true
}

#[test]
fn pods_spread_evenly_over_the_interval_and_keep_their_place() {
    let interval = 10 * S;
    let mut buckets = [0u32; 10];
    for i in 0..2000 {
        let uid = format!("6c1f2b9e-0000-4000-8000-{i:012}");
        let at = spread(&uid, interval);
        assert!(at < interval);
        assert_eq!(at, spread(&uid, interval), "the same place every time");
        buckets[at.as_secs() as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&n| (120..=280).contains(&n)),
        "about 200 in each second: {buckets:?}"
    );
    assert_eq!(spread("a", Duration::ZERO), Duration::ZERO);
}

#[test]
fn backoff_doubles_from_one_interval_up_to_the_cap() {
    let (i, max) = (10 * S, 300 * S);
    let waits: Vec<u64> = (0..8).map(|f| backoff(f, i, max).as_secs()).collect();
    assert_eq!(waits, [10, 10, 20, 40, 80, 160, 300, 300]);
    assert_eq!(backoff(u32::MAX, i, max), max, "no overflow");
    assert_eq!(backoff(3, i, S), i, "never below one interval");
}

#[test]
fn reads_keep_their_place_in_the_interval() {
    let (i, phase) = (10 * S, 3 * S);
    // On time: exactly one interval later.
    assert_eq!(next_due(23 * S, i, phase, i), 33 * S);
    // Late by less than half an interval: back on its place.
    assert_eq!(next_due(27 * S, i, phase, i), 33 * S);
    // A first read anywhere: the next place at least half an interval later.
    assert_eq!(next_due(S / 2, i, phase, i), 13 * S);
    assert_eq!(next_due(8 * S, i, phase, i), 13 * S);
    assert_eq!(next_due(ms(8100), i, phase, i), 23 * S);
    // Backing off: about the backoff later, on its place.
    assert_eq!(next_due(23 * S, 40 * S, phase, i), 63 * S);
    assert_eq!(next_due(S, 40 * S, phase, i), 43 * S);
}

#[test]
fn what_the_status_shows_is_a_change() {
    let a = running(1);
    assert_eq!(change(None, None), Change::None);
    assert_eq!(change(None, Some(&a)), Change::State, "first answer");
    assert_eq!(change(Some(&a), None), Change::State, "stopped answering");
    assert_eq!(change(Some(&a), Some(&a.clone())), Change::None);
    assert_eq!(change(Some(&a), Some(&running(2))), Change::State);
    for edit in [
        |p: &mut Progress| p.state = State::Rendezvous,
        |p: &mut Progress| p.world_size = Some(8),
        |p: &mut Progress| p.restart_count = 1,
        |p: &mut Progress| p.stalls = 1,
    ] {
        let mut b = a.clone();
        edit(&mut b);
        assert_eq!(change(Some(&a), Some(&b)), Change::State, "{b:?}");
    }
    assert_eq!(
        change(Some(&training(1, 10)), Some(&training(1, 20))),
        Change::Progress
    );
    assert_eq!(change(Some(&a), Some(&training(1, 20))), Change::Progress);
    let mut b = a.clone();
    b.group_rank = Some(1);
    b.re_forms = 2;
    assert_eq!(
        change(Some(&a), Some(&b)),
        Change::None,
        "not in the status"
    );
}

#[test]
fn triggers_wait_out_the_gap_and_never_move_later() {
    assert_eq!(trigger_at(None, None, 5 * S, 10 * S), 5 * S);
    assert_eq!(trigger_at(Some(S), None, 5 * S, 10 * S), 11 * S);
    assert_eq!(trigger_at(Some(S), None, 15 * S, 10 * S), 15 * S);
    assert_eq!(trigger_at(Some(S), Some(11 * S), 5 * S, S), 5 * S);
    assert_eq!(trigger_at(Some(4 * S), Some(5 * S), 4 * S, 10 * S), 5 * S);
}

#[test]
fn targets_are_running_pods_with_an_ip() {
    let mut up = crate::fixtures::pod(0, Phase::Running);
    up.uid = Some("a".into());
    up.ip = Some("10.0.0.1".into());
    let mut pending = crate::fixtures::pod(1, Phase::Pending);
    pending.uid = Some("b".into());
    pending.ip = Some("10.0.0.2".into());
    let mut no_ip = crate::fixtures::pod(2, Phase::Running);
    no_ip.uid = Some("c".into());
    no_ip.ip = None;
    let mut going = up.clone();
    going.uid = Some("d".into());
    going.deletion = Some(crate::fixtures::at(1));
    assert_eq!(
        targets(&[up, pending, no_ip, going], 29401),
        [Target {
            pod_uid: "a".into(),
            ip: "10.0.0.1".into(),
            port: 29401
        }]
    );
}

/// Reads everything due at `now`, without limits.
fn due(book: &mut Book, now: Duration) -> Vec<Read> {
    book.due(now, usize::MAX, usize::MAX, &always)
}

#[test]
fn a_new_pod_is_read_within_a_second_then_once_per_interval() {
    let (mut book, cfg) = (Book::default(), cfg());
    book.track(&job("a"), vec![target("p")], 100 * S, &cfg);
    let first = book.next_wake(true, true);
    let mut reads = due(&mut book, 101 * S);
    assert_eq!(
        reads.len(),
        1,
        "read within first_within (woke at {first:?})"
    );
    let read = reads.remove(0);
    assert_eq!(
        book.record(&read, Some(running(1)), read.started, &cfg),
        Some(job("a"))
    );
    assert_eq!(book.latest("p"), Some(&running(1)));
    let next = book.next_wake(true, true).unwrap();
    assert!(next >= read.started + cfg.interval / 2 && next < read.started + cfg.interval * 3 / 2);
    let mut reads = due(&mut book, next);
    let read = reads.remove(0);
    assert_eq!(
        book.record(&read, Some(running(1)), next, &cfg),
        None,
        "nothing changed"
    );
    assert_eq!(book.next_wake(true, true), Some(next + cfg.interval));
    // Tracking the same pods again keeps their place.
    book.track(&job("a"), vec![target("p")], next + S, &cfg);
    assert_eq!(book.next_wake(true, true), Some(next + cfg.interval));
    assert!(due(&mut book, next + S).is_empty());
}

#[test]
fn a_pod_that_does_not_answer_backs_off_and_costs_no_trigger() {
    let (mut book, cfg) = (Book::default(), cfg());
    book.track(&job("a"), vec![target("p")], Duration::ZERO, &cfg);
    let mut now = S;
    let mut gaps = Vec::new();
    for _ in 0..8 {
        let read = due(&mut book, now).pop().expect("due");
        assert_eq!(book.record(&read, None, now, &cfg), None);
        assert_eq!(book.pods_in_backoff(), 1);
        let next = book.next_wake(true, true).unwrap();
        gaps.push((next - now).as_secs_f64().round() as u64);
        assert!(due(&mut book, next - ms(1)).is_empty());
        now = next;
    }
    // About 10, 20, 40, ... (each on the pod's place in the interval), up to 300.
    assert!((5..=15).contains(&gaps[0]), "{gaps:?}");
    assert_eq!(gaps[1..5], [20, 40, 80, 160], "{gaps:?}");
    assert_eq!(gaps[5..], [300, 300, 300], "{gaps:?}");
    // It answers: back to every interval, and the job hears of it.
    let read = due(&mut book, now).pop().unwrap();
    assert_eq!(
        book.record(&read, Some(running(1)), now, &cfg),
        Some(job("a"))
    );
    assert_eq!(book.pods_in_backoff(), 0);
    assert_eq!(book.next_wake(true, true), Some(now + cfg.interval));
    // It stops answering: a change (it no longer counts as training).
    let later = now + cfg.interval;
    let read = due(&mut book, later).pop().unwrap();
    assert_eq!(book.record(&read, None, later, &cfg), Some(job("a")));
    assert_eq!(book.latest("p"), None);
}

#[test]
fn triggers_are_held_back_per_job_and_sent_once_due() {
    let (mut book, cfg) = (Book::default(), cfg());
    let pods: Vec<Target> = ["p0", "p1", "p2"].into_iter().map(target).collect();
    book.track(&job("a"), pods, Duration::ZERO, &cfg);
    let reads = due(&mut book, S);
    assert_eq!(reads.len(), 3);
    let fired: Vec<Option<JobRef>> = reads
        .iter()
        .map(|r| book.record(r, Some(training(1, 10)), S, &cfg))
        .collect();
    assert_eq!(
        fired,
        [Some(job("a")), None, None],
        "one trigger for the job"
    );
    assert_eq!(
        book.next_wake(false, false),
        Some(S + cfg.state_gap),
        "the others' first answers are held back a state gap"
    );
    assert_eq!(book.due_triggers(S + cfg.state_gap), [job("a")]);
    assert!(book.due_triggers(100 * S).is_empty(), "sent once");
    // Progress alone: at most once per progress gap (30 s).
    let t = S + cfg.state_gap;
    let (mut progress_triggers, mut now, mut step) = (0, t, 10);
    while now < t + 120 * S {
        now += ms(250);
        progress_triggers += book.due_triggers(now).len();
        for r in due(&mut book, now) {
            step += 1;
            progress_triggers += book
                .record(&r, Some(training(1, step)), now, &cfg)
                .into_iter()
                .count();
        }
    }
    assert!(
        (3..=5).contains(&progress_triggers),
        "about one per 30 s over 120 s: {progress_triggers}"
    );
    // A state change soon after: within the state gap, not the interval.
    let r = loop {
        now += ms(250);
        let _ = book.due_triggers(now);
        if let Some(r) = due(&mut book, now).pop() {
            break r;
        }
    };
    let fired = book.record(&r, Some(training(2, step)), now, &cfg);
    let at = fired
        .map(|_| now)
        .or_else(|| book.next_wake(false, false))
        .unwrap();
    assert!(at <= now + cfg.state_gap, "{at:?} {now:?}");
}

#[test]
fn untracked_pods_and_jobs_leave_nothing_behind() {
    let (mut book, cfg) = (Book::default(), cfg());
    let pods = |names: &[&str]| names.iter().map(|n| target(n)).collect::<Vec<_>>();
    book.track(
        &job("a"),
        pods(&["p0", "p1", "p2", "p3"]),
        Duration::ZERO,
        &cfg,
    );
    book.track(&job("b"), pods(&["q0"]), Duration::ZERO, &cfg);
    // p1 is being read; p2 did not answer; p3's first answer holds a trigger back.
    let reads = due(&mut book, S);
    assert_eq!(reads.len(), 5);
    let read = |uid: &str| reads.iter().find(|r| &*r.uid == uid).unwrap().clone();
    assert!(
        book.record(&read("p0"), Some(running(1)), S, &cfg)
            .is_some()
    );
    assert!(
        book.record(&read("p3"), Some(running(1)), S, &cfg)
            .is_none()
    );
    book.record(&read("p2"), None, S, &cfg);
    book.record(&read("q0"), Some(running(1)), S, &cfg);
    assert_eq!(book.pods_in_backoff(), 1);
    assert_eq!(book.triggers.len(), 1);
    // p0 recreated under the same name: a new UID.
    book.track(&job("a"), pods(&["p0-new"]), 2 * S, &cfg);
    assert_eq!(book.tracked_pods(), 2);
    assert_eq!(book.pods_in_backoff(), 0);
    assert_eq!(book.latest("p0"), None);
    assert_eq!(
        book.record(&read("p1"), Some(running(1)), 2 * S, &cfg),
        None,
        "a read of a pod no longer tracked is dropped"
    );
    book.track(&job("a"), vec![], 3 * S, &cfg);
    book.forget(&job("b"));
    assert_eq!(book.tracked_pods(), 0);
    assert!(book.jobs.is_empty());
    assert!(book.answering.is_empty() && book.backing_off.is_empty());
    assert!(book.triggers.is_empty());
    assert_eq!(book.next_wake(true, true), None);
}

#[test]
fn a_pod_tracked_again_while_being_read_starts_afresh() {
    let (mut book, cfg) = (Book::default(), cfg());
    book.track(&job("a"), vec![target("p")], Duration::ZERO, &cfg);
    let read = due(&mut book, S).pop().unwrap();
    book.track(&job("a"), vec![], S, &cfg);
    book.track(&job("a"), vec![target("p")], S, &cfg);
    assert_eq!(book.record(&read, Some(running(1)), S, &cfg), None);
    assert_eq!(book.latest("p"), None);
    assert_eq!(due(&mut book, 2 * S).len(), 1, "scheduled once, not twice");
}

#[test]
fn reads_of_pods_that_do_not_answer_get_a_small_share_and_come_last() {
    let (mut book, cfg) = (Book::default(), cfg());
    let pods = (0..6).map(|i| target(&format!("p{i}"))).collect();
    book.track(&job("a"), pods, Duration::ZERO, &cfg);
    // Three pods miss twice.
    let mut now = S;
    for _ in 0..2 {
        let reads = due(&mut book, now);
        assert_eq!(reads.len(), 6);
        assert!(
            reads.iter().all(|r| !r.backing_off),
            "a pod that missed once is not behind"
        );
        for r in &reads {
            let answer = ["p0", "p2", "p4"].contains(&&*r.uid).then(|| running(1));
            book.record(r, answer, now, &cfg);
        }
        now += 2 * cfg.interval;
    }
    assert_eq!(book.pods_in_backoff(), 3);
    // All six are due again.
    let later = now + 2 * cfg.interval;
    let reads = book.due(later, 4, 1, &always);
    let backing_off = reads.iter().filter(|r| r.backing_off).count();
    assert_eq!((reads.len(), backing_off), (4, 1));
    assert!(!reads[0].backing_off && !reads[1].backing_off && !reads[2].backing_off);
    let rest = book.due(later, 10, 0, &always);
    assert!(rest.is_empty(), "no room for those backing off");
    assert_eq!(book.due(later, 10, 10, &always).len(), 2);
}

#[test]
fn a_job_gone_unseen_is_forgotten_at_its_pods_next_read() {
    let (mut book, cfg) = (Book::default(), cfg());
    book.track(
        &job("a"),
        vec![target("p"), target("q")],
        Duration::ZERO,
        &cfg,
    );
    book.track(&job("b"), vec![target("r")], Duration::ZERO, &cfg);
    let reads = book.due(S, 10, 10, &|j: &JobRef| j.name != "a");
    assert_eq!(reads.len(), 1);
    assert_eq!(&*reads[0].uid, "r");
    assert_eq!(book.tracked_pods(), 1);
}

/// A launcher's status endpoint as the launcher serves it (axum), counting the connections its
/// requests came on.
async fn launcher(progress: Arc<Mutex<Progress>>) -> (i32, Arc<Mutex<HashSet<SocketAddr>>>) {
    let peers = Arc::new(Mutex::new(HashSet::new()));
    let seen = peers.clone();
    let app = Router::new().route(
        "/status",
        get(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
            seen.lock().unwrap().insert(peer);
            let body = serde_json::to_string(&*progress.lock().unwrap()).unwrap();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port() as i32;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (port, peers)
}

/// A server that accepts connections and never answers; counts them.
async fn hanging() -> (i32, Arc<Mutex<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port() as i32;
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            open.push(s);
        }
    });
    (port, accepted)
}

fn at(uid: &str, port: i32) -> Target {
    Target {
        pod_uid: uid.into(),
        ip: "127.0.0.1".into(),
        port,
    }
}

/// The poller against real servers on loopback, with short intervals: the launcher that answers
/// is read over one kept-alive connection, its first answer and a later change trigger one
/// reconcile each; those that do not answer back off and trigger nothing.
#[tokio::test]
async fn polls_real_launchers_in_the_background() {
    let progress = Arc::new(Mutex::new(running(1)));
    let (up, peers) = launcher(progress.clone()).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port() as i32
    };
    let (hung, accepted) = hanging().await;
    let cfg = PollerConfig {
        interval: ms(100),
        first_within: ms(20),
        max_backoff: ms(400),
        timeout: ms(50),
        concurrency: 4,
        backoff_concurrency: 2,
        state_gap: ms(10),
        progress_gap: ms(100),
    };
    let metrics = Arc::new(Metrics::default());
    let (poller, mut triggers, task) = Poller::start(cfg, metrics.clone(), always);
    poller.track(&job("good"), vec![at("up", up)]);
    poller.track(&job("bad"), vec![at("closed", closed), at("hung", hung)]);

    // The first answer arrives within first_within and triggers once.
    let first = tokio::time::timeout(S, triggers.next())
        .await
        .expect("a trigger");
    assert_eq!(first, Some(job("good")));
    assert_eq!(poller.latest("up"), Some(running(1)));
    tokio::time::sleep(ms(1200)).await;
    assert!(
        triggers.try_recv().is_err(),
        "nothing changed, nothing triggered (and nothing from the unreachable job)"
    );
    let reads_up = metrics
        .poll
        .results
        .get_or_create(&crate::metrics::OutcomeLabel { outcome: "ok" })
        .get();
    assert!(reads_up >= 8, "read about every 100 ms: {reads_up}");
    assert_eq!(peers.lock().unwrap().len(), 1, "one kept-alive connection");
    // Without backoff each would be read 12 times; with it: at ~0, 0.1, 0.3, 0.7, 1.1 s.
    let refused = metrics
        .poll
        .results
        .get_or_create(&crate::metrics::OutcomeLabel { outcome: "refused" })
        .get();
    assert!((2..=6).contains(&refused), "refused {refused} times");
    let hung_reads = *accepted.lock().unwrap();
    assert!(
        (2..=6).contains(&hung_reads),
        "timed out {hung_reads} times"
    );
    assert_eq!(metrics.poll.tracked_pods.get(), 3);
    assert_eq!(metrics.poll.pods_in_backoff.get(), 2);

    // A change is seen at the next read and triggers again.
    *progress.lock().unwrap() = running(2);
    let again = tokio::time::timeout(S, triggers.next())
        .await
        .expect("a trigger");
    assert_eq!(again, Some(job("good")));
    let mut pods = [crate::fixtures::pod(0, Phase::Running)];
    pods[0].uid = Some("up".into());
    poller.fill(&mut pods);
    assert_eq!(pods[0].launcher, Some(running(2)));

    poller.untrack(&job("bad"));
    poller.untrack(&job("good"));
    assert_eq!(metrics.poll.tracked_pods.get(), 0);
    let before = *accepted.lock().unwrap();
    tokio::time::sleep(ms(500)).await;
    assert_eq!(
        *accepted.lock().unwrap(),
        before,
        "untracked pods are not read"
    );
    drop(task);
}
