//! Local users of the target over c2s: STARTTLS, SCRAM (the best the
//! server offers), bind, roster get and initial presence — many at once,
//! from several loopback source addresses.

use std::sync::Arc;
use std::time::Duration;

use fedrouter::xml::Stanza;
use testkit::client::{Client, ClientConfig, Mechanism};
use tokio::sync::Semaphore;

use crate::args::Target;
use crate::conn::{self, IoStats, Stream};
use crate::progress::Progress;
use crate::remote::check_loopback;

/// The bare JID of local user `i` (0-based).
pub fn user_jid(t: &Target, i: usize) -> String {
    format!("{}{}@{}", t.user_prefix, i + 1, t.domain)
}

pub fn client_config(t: &Target, i: usize) -> ClientConfig {
    let mut c = ClientConfig::new(t.c2s, &user_jid(t, i), &t.password);
    c.mechanism = Mechanism::BestScram;
    c.timeout = Duration::from_secs(60);
    c.resource = Some("lt".into());
    if !t.source_ips.is_empty() {
        c.bind = Some(t.source_ips[i % t.source_ips.len()]);
    }
    c
}

/// Signs in users `range` (at most `t.connect_concurrency` negotiating at
/// once), each with a roster get and, when `available`, initial presence.
/// Returns per user the client or the error, and how long it took.
pub async fn sign_in(
    t: &Target,
    range: std::ops::Range<usize>,
    available: bool,
    progress: &Progress,
) -> anyhow::Result<Vec<(Result<Client, String>, Duration)>> {
    check_loopback(t.c2s.ip(), "--c2s")?;
    for ip in &t.source_ips {
        check_loopback(*ip, "--source-ips")?;
    }
    let gate = Arc::new(Semaphore::new(t.connect_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(range.len());
    for i in range {
        let cfg = client_config(t, i);
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await;
            let t0 = std::time::Instant::now();
            let r = async {
                let mut c = Client::connect(&cfg).await?;
                // Prosody delivers subscription requests only to resources
                // that fetched the roster.
                c.iq(
                    "r1",
                    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
                )
                .await?;
                if available {
                    c.send("<presence/>").await?;
                }
                Ok::<_, testkit::client::ClientError>(c)
            }
            .await
            .map_err(|e| format!("{}: {e}", cfg.username));
            (r, t0.elapsed())
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let r = t.await?;
        progress.inc(1);
        out.push(r);
    }
    Ok(out)
}

/// Starts the reader and writer of a signed-in client.
pub fn spawn(
    c: Client,
    stats: Arc<IoStats>,
    on_stanza: impl FnMut(Stanza) + Send + 'static,
) -> Stream {
    let (io, framer) = c.into_parts();
    conn::spawn(io, framer, stats, on_stanza)
}
