//! The setting every scenario plays in: our remote domains (listener, DNS,
//! outbound streams) and the target's local users signed in over c2s, with
//! readers that route what arrives to the trackers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fedrouter::xml::{Stanza, StanzaKind};

use crate::args::Target;
use crate::conn::{IoStats, Stream, Writer};
use crate::local;
use crate::presence_track::PresenceTracker;
use crate::progress::Progress;
use crate::remote::{Remote, Sink, domain_name};
use crate::stamp;
use crate::tracker::Tracker;

/// Contact `g` lives in domain `g % domains`.
pub fn contact_jid(t: &Target, g: usize, domains: usize) -> String {
    format!("c{g}@{}", domain_name(&t.remote_suffix, g % domains))
}

/// Where arrivals are counted.
#[derive(Clone)]
pub struct Trackers {
    pub msgs: Arc<Tracker>,
    pub pres: Arc<PresenceTracker>,
}

impl Trackers {
    /// What the target sends to our contacts.
    pub fn sink(&self) -> Sink {
        let tr = self.clone();
        Arc::new(move |s: Stanza| match s.kind() {
            StanzaKind::Message => {
                let Some(st) = stamp::find(s.bytes()) else {
                    return;
                };
                let bounce = s.type_().as_deref() == Some("error");
                let at = s.to().and_then(|to| stamp::index_in(&to, "c"));
                tr.msgs.arrive(st, at, bounce);
            }
            StanzaKind::Presence => tr.pres.on_stanza(&s),
            _ => {}
        })
    }

    /// What reaches local user `me`; subscription requests are approved.
    fn local(&self, me: u32, writer: Arc<OnceLock<Writer>>) -> impl FnMut(Stanza) + Send + 'static {
        let tr = self.clone();
        move |s: Stanza| match s.kind() {
            StanzaKind::Message => {
                if let Some(st) = stamp::find(s.bytes()) {
                    let bounce = s.type_().as_deref() == Some("error");
                    tr.msgs.arrive(st, Some(me), bounce);
                }
            }
            StanzaKind::Presence if s.type_().as_deref() == Some("subscribe") => {
                if let (Some(from), Some(w)) = (s.from(), writer.get()) {
                    let bare = from.split('/').next().unwrap_or_default();
                    w.send(format!("<presence type='subscribed' to='{bare}'/>"));
                }
            }
            _ => {}
        }
    }
}

pub struct World {
    pub remote: Remote,
    pub sessions: Vec<Stream>,
    pub outbound: Vec<Stream>,
    pub stats: Arc<IoStats>,
    pub trackers: Trackers,
    pub domains: usize,
}

impl World {
    /// Starts our domains, signs in `users` local users (available), and
    /// opens one outbound stream per domain when `outbound`.
    pub async fn setup(
        t: &Target,
        users: usize,
        domains: usize,
        outbound: bool,
        trackers: Trackers,
        show_progress: bool,
    ) -> anyhow::Result<World> {
        let remote = Remote::start(t, domains, trackers.sink()).await?;
        let stats = Arc::new(IoStats::default());
        let p = Progress::new("signing in", Some(users as u64), show_progress);
        let signed = local::sign_in(t, 0..users, true, &p).await?;
        p.finish();
        let mut sessions = Vec::with_capacity(users);
        for (i, (r, _)) in signed.into_iter().enumerate() {
            let c = r.map_err(|e| anyhow::anyhow!("sign-in failed: {e}"))?;
            let cell = Arc::new(OnceLock::new());
            let s = local::spawn(c, stats.clone(), trackers.local(i as u32, cell.clone()));
            let _ = cell.set(s.writer.clone());
            sessions.push(s);
        }
        let mut out = Vec::new();
        if outbound {
            let p = Progress::new("s2s streams", Some(domains as u64), show_progress);
            for d in 0..domains {
                let tr = trackers.msgs.clone();
                out.push(
                    remote
                        .connect(d, move |s| {
                            // Bounces come on the stream the target opens
                            // to us; anything here is odd but counted.
                            if let Some(st) = stamp::find(s.bytes()) {
                                tr.arrive(st, None, s.type_().as_deref() == Some("error"));
                            }
                        })
                        .await?,
                );
                p.inc(1);
            }
            p.finish();
        }
        Ok(World {
            remote,
            sessions,
            outbound: out,
            stats,
            trackers,
            domains,
        })
    }

    /// Contacts `first..first+n` (each of user `g / per_user`) ask for the
    /// user's presence over s2s; waits until the target answered every one
    /// with `subscribed` (the user approves, or the server does).
    pub async fn subscribe_contacts(
        &self,
        t: &Target,
        per_user: usize,
        n: usize,
        limit: Duration,
        show_progress: bool,
    ) -> anyhow::Result<()> {
        const CHUNK: usize = 500;
        let p = Progress::new("subscribing", Some(n as u64), show_progress);
        let pres = &self.trackers.pres;
        let base = pres.subscribed_count.load(Ordering::Relaxed);
        let end = tokio::time::Instant::now() + limit;
        let mut next = 0usize;
        while next < n || pres.subscribed_count.load(Ordering::Relaxed) < base + n as u64 {
            let done = (pres.subscribed_count.load(Ordering::Relaxed) - base) as usize;
            p.set_position(done as u64);
            // Keep at most CHUNK requests unanswered.
            while next < n && next < done + CHUNK {
                let g = next;
                let d = g % self.domains;
                let user = local::user_jid(t, g / per_user.max(1));
                self.outbound[d].writer.send(format!(
                    "<presence type='subscribe' from='{}' to='{user}'/>",
                    contact_jid(t, g, self.domains)
                ));
                next += 1;
            }
            if tokio::time::Instant::now() >= end {
                anyhow::bail!(
                    "subscriptions: {done} of {n} contacts got `subscribed` within {limit:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        p.finish();
        Ok(())
    }

    pub async fn close(self) {
        for s in self.sessions.into_iter().chain(self.outbound) {
            s.close().await;
        }
    }
}
