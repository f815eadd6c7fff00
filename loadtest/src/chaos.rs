//! `chaos`: local users send to remote contacts while the target is killed
//! (SIGKILL) and restarted, `--kills` times, every `--kill-target-after`
//! acknowledged messages. The load generator runs the target itself
//! (`--target-cmd`), so it can kill and restart it.
//!
//! Each user enables XEP-0198 on its c2s stream and asks for an ack every
//! `--window` messages; a message is *acknowledged* once the target's
//! `<a h/>` covers it. After a kill the user signs in again and, as a
//! Stream Management client whose session could not be resumed does,
//! sends again everything not acknowledged. Our remote domains record what
//! arrives. The report counts acknowledged messages that never arrived
//! (`lost`: the contract is zero), duplicates, and messages sent but not
//! acknowledged before a kill that never arrived (`unacked_lost`, allowed).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fedrouter::xml::{Stanza, StanzaKind};
use testkit::client::Client;

use crate::args::ChaosArgs;
use crate::local::client_config;
use crate::remote::{Remote, Sink};
use crate::report::Report;
use crate::world::contact_jid;

/// What our remote domains received: (user, message number) → copies.
type Arrivals = Arc<Mutex<HashMap<(usize, u64), u32>>>;

fn sink(arrivals: Arrivals) -> Sink {
    Arc::new(move |s: Stanza| {
        if s.kind() != StanzaKind::Message || s.type_().as_deref() == Some("error") {
            return;
        }
        let Some(key) = parse_id(s.id().as_deref()) else {
            return;
        };
        if let Ok(mut a) = arrivals.lock() {
            *a.entry(key).or_default() += 1;
        }
    })
}

/// `c<user>-<n>`
fn parse_id(id: Option<&str>) -> Option<(usize, u64)> {
    let (u, n) = id?.strip_prefix('c')?.split_once('-')?;
    Some((u.parse().ok()?, n.parse().ok()?))
}

/// The target process, run with `--target-cmd`.
struct TargetProcess {
    cmd: Vec<String>,
    child: Option<Child>,
}

impl TargetProcess {
    fn start(&mut self) -> anyhow::Result<()> {
        let (prog, args) = self.cmd.split_first().context("--target-cmd is empty")?;
        let child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start the target: {}", self.cmd.join(" ")))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits (bounded) until the target's c2s port accepts connections.
async fn wait_up(addr: std::net::SocketAddr, within: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("the target did not listen on {addr} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One user's progress, across target restarts.
struct UserState {
    /// Messages acknowledged (all below this number).
    acked: AtomicU64,
    /// Messages sent at least once (all below this number).
    sent: AtomicU64,
    resent: AtomicU64,
}

/// Signs user `u` in, enables Stream Management, and sends from its first
/// unacknowledged message until `total` are acknowledged or the stream
/// breaks (the target was killed).
async fn run_user(
    a: &ChaosArgs,
    u: usize,
    st: &UserState,
    total_acked: &AtomicU64,
) -> anyhow::Result<()> {
    let t = &a.target;
    let mut c = Client::connect(&client_config(t, u)).await?;
    c.set_timeout(Duration::from_secs(30));
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await?;
    let mut received: u32 = 0;
    loop {
        let s = c.recv().await?;
        match s.local_name() {
            "enabled" => break,
            "failed" => bail!("the target refused Stream Management"),
            _ => {}
        }
    }
    let base = st.acked.load(Ordering::SeqCst);
    let contacts = (a.contacts / a.users.max(1)).max(1);
    let per_user = a.per_user();
    let mut n = base;
    while st.acked.load(Ordering::SeqCst) < per_user {
        let end = (n + a.window.max(1) as u64).min(per_user);
        for i in n..end {
            let to = contact_jid(t, u * contacts + (i as usize % contacts), a.domains);
            c.send(format!(
                "<message to='{to}' type='chat' id='c{u}-{i}'><body>chaos {u} {i}</body></message>"
            ))
            .await?;
            if i < st.sent.load(Ordering::SeqCst) {
                st.resent.fetch_add(1, Ordering::SeqCst);
            } else {
                st.sent.store(i + 1, Ordering::SeqCst);
            }
        }
        n = end;
        c.send("<r xmlns='urn:xmpp:sm:3'/>").await?;
        // Wait for the ack, answering the target's own requests.
        loop {
            let s = c.recv().await?;
            match s.local_name() {
                "a" => {
                    let h: u64 = attr(&s, "h")
                        .and_then(|h| h.parse().ok())
                        .context("an <a/> without h")?;
                    let now = base + h;
                    let before = st.acked.swap(now, Ordering::SeqCst);
                    total_acked.fetch_add(now.saturating_sub(before), Ordering::SeqCst);
                    break;
                }
                "r" => {
                    c.send(format!("<a xmlns='urn:xmpp:sm:3' h='{received}'/>"))
                        .await?;
                }
                _ if s.kind() != StanzaKind::Other => received = received.wrapping_add(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// An attribute of the element as received.
fn attr(s: &Stanza, name: &str) -> Option<String> {
    let el = fedrouter::xml::Element::parse(s.bytes(), "", &[]).ok()?;
    el.attr(name).map(str::to_string)
}

pub async fn run(a: &ChaosArgs, _progress: bool) -> anyhow::Result<Report> {
    let t = &a.target;
    let arrivals: Arrivals = Arc::default();
    let remote = Remote::start(t, a.domains, sink(arrivals.clone())).await?;
    let mut target = TargetProcess {
        cmd: a.target_cmd.clone(),
        child: None,
    };
    target.start()?;
    wait_up(t.c2s, Duration::from_secs(30)).await?;

    let users: Arc<Vec<UserState>> = Arc::new(
        (0..a.users)
            .map(|_| UserState {
                acked: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                resent: AtomicU64::new(0),
            })
            .collect(),
    );
    let total_acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut kills = 0;
    let mut kill_points: Vec<Vec<u64>> = Vec::new();
    let mut next_kill = a.kill_target_after;
    let deadline = started + a.duration;
    loop {
        let mut tasks = Vec::new();
        for u in 0..a.users {
            let (a, users, total) = (a.clone(), users.clone(), total_acked.clone());
            tasks.push(tokio::spawn(async move {
                run_user(&a, u, &users[u], &total).await
            }));
        }
        // Until every user finished, or it is time to kill the target.
        let all_done = loop {
            if tasks.iter().all(|t| t.is_finished()) {
                break true;
            }
            if kills < a.kills && total_acked.load(Ordering::SeqCst) >= next_kill {
                break false;
            }
            if Instant::now() > deadline {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if all_done {
            for task in tasks {
                if let Ok(Err(e)) = task.await {
                    tracing::warn!(error = %e, "chaos: a user stopped");
                }
            }
            if users
                .iter()
                .all(|s| s.acked.load(Ordering::SeqCst) >= a.per_user())
                || Instant::now() > deadline
            {
                break;
            }
            // A user failed without a kill (the target was still starting):
            // sign in again.
            continue;
        }
        kill_points.push(
            users
                .iter()
                .map(|s| s.acked.load(Ordering::SeqCst))
                .collect::<Vec<_>>(),
        );
        target.kill();
        kills += 1;
        next_kill = total_acked.load(Ordering::SeqCst) + a.kill_target_after;
        for task in tasks {
            let _ = task.await;
        }
        target.start()?;
        wait_up(t.c2s, Duration::from_secs(30)).await?;
    }
    let elapsed = started.elapsed();

    // Wait (bounded) for everything acknowledged to arrive.
    let expected: u64 = users.iter().map(|s| s.acked.load(Ordering::SeqCst)).sum();
    let drain_until = Instant::now() + a.drain;
    let arrived_acked = |arr: &HashMap<(usize, u64), u32>| -> u64 {
        users
            .iter()
            .enumerate()
            .map(|(u, s)| {
                (0..s.acked.load(Ordering::SeqCst))
                    .filter(|i| arr.contains_key(&(u, *i)))
                    .count() as u64
            })
            .sum()
    };
    loop {
        let got = arrived_acked(&*arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        if got >= expected || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(remote);

    let arr = arrivals.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let lost = expected - arrived_acked(&arr);
    let duplicates: u64 = arr.values().map(|c| u64::from(c.saturating_sub(1))).sum();
    let sent: u64 = users.iter().map(|s| s.sent.load(Ordering::SeqCst)).sum();
    let resent: u64 = users.iter().map(|s| s.resent.load(Ordering::SeqCst)).sum();
    let unacked_lost = users
        .iter()
        .enumerate()
        .map(|(u, s)| {
            (s.acked.load(Ordering::SeqCst)..s.sent.load(Ordering::SeqCst))
                .filter(|i| !arr.contains_key(&(u, *i)))
                .count() as u64
        })
        .sum::<u64>();

    let mut r = Report::new("chaos", &t.label);
    r.param("users", a.users);
    r.param("contacts", a.contacts);
    r.param("domains", a.domains);
    r.param("messages", a.messages);
    r.param("window", a.window);
    r.param("kill_target_after", a.kill_target_after);
    r.param("kills", a.kills);
    r.elapsed = elapsed;
    r.figure(
        "acknowledged/s",
        expected as f64 / elapsed.as_secs_f64().max(1e-9),
        "msg/s",
    );
    r.count("sent", sent);
    r.count("resent", resent);
    r.count("acknowledged", expected);
    r.count("received", arr.len() as u64);
    r.count("lost", lost);
    r.count("duplicate", duplicates);
    r.count("unacked_lost", unacked_lost);
    r.count("kills", kills as u64);
    if kills < a.kills {
        r.fail(format!(
            "the target was killed {kills} times, not {} (the run ended first)",
            a.kills
        ));
    }
    let all = a.per_user() * a.users as u64;
    if expected < all {
        r.fail(format!(
            "{expected} of {all} messages acknowledged within {:?}",
            a.duration
        ));
    }
    if lost > 0 {
        let arrived: &HashMap<(usize, u64), u32> = &arr;
        let mut missing: Vec<(usize, u64)> = users
            .iter()
            .enumerate()
            .flat_map(|(u, s)| {
                (0..s.acked.load(Ordering::SeqCst))
                    .filter(move |i| !arrived.contains_key(&(u, *i)))
                    .map(move |i| (u, i))
            })
            .collect();
        missing.sort_unstable();
        // As ranges: c1-0..=97 c2-300..=311 …
        let mut first: Vec<String> = Vec::new();
        let mut i = 0;
        while i < missing.len() && first.len() < 12 {
            let (u, lo) = missing[i];
            let mut j = i;
            while j + 1 < missing.len() && missing[j + 1] == (u, missing[j].1 + 1) {
                j += 1;
            }
            first.push(format!("c{u}-{lo}..={}", missing[j].1));
            i = j + 1;
        }
        r.fail(format!(
            "{lost} acknowledged messages never arrived after {kills} kills (acknowledged when killed: {kill_points:?}; first missing: {})",
            first.join(" ")
        ));
    }
    Ok(r)
}
