//! The command line: one subcommand per scenario, sharing the target and
//! output options.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for XMPP servers: local users over c2s, whole remote domains over s2s"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Local users chatting with federated contacts (and the reverse).
    Im(ImArgs),
    /// One presence update fanned out to C federated contacts over D domains.
    Presence(PresenceArgs),
    /// A reconnect storm: D remote domains and S local sessions at once.
    Connect(ConnectArgs),
    /// Mixed load for a duration, sampling the target's RSS and CPU.
    Soak(SoakArgs),
    /// Local users send to remote contacts while the target is killed
    /// (SIGKILL) and restarted; counts acknowledged messages lost.
    Chaos(ChaosArgs),
    /// Writes a test CA and certificates for the remote domains (for SASL
    /// EXTERNAL: the target must trust `ca.pem`).
    Ca(CaArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Server Dialback (XEP-0220): the target verifies our keys by
    /// connecting back to our domains (found through our DNS).
    Dialback,
    /// SASL EXTERNAL with certificates from `--ca-dir`.
    External,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Local users send to remote contacts (c2s in, s2s out).
    Out,
    /// Remote contacts send to local users (s2s in, c2s out).
    In,
    /// Both at once.
    Both,
}

/// Where the target is and who we play.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// A label for the report (fedrouter, prosody, ejabberd …).
    #[arg(long, default_value = "target")]
    pub label: String,
    /// The target's XMPP domain (local users live there).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// The target's c2s listener (STARTTLS).
    #[arg(long, default_value = "127.0.0.1:5222")]
    pub c2s: SocketAddr,
    /// The target's s2s listener (STARTTLS), where our domains connect.
    #[arg(long, default_value = "127.0.0.1:5269")]
    pub s2s: SocketAddr,
    /// Local users are `<prefix><n>@<domain>`, n from 1; they must exist
    /// with `--password` (see the README for provisioning).
    #[arg(long, default_value = "lt")]
    pub user_prefix: String,
    #[arg(long, default_value = "loadtest")]
    pub password: String,
    /// Our remote domains are `r<n>.<suffix>`, n from 1.
    #[arg(long, default_value = "lt.test")]
    pub remote_suffix: String,
    /// Where we accept the target's s2s connections for our domains.
    #[arg(long, default_value = "127.0.0.1:15269")]
    pub s2s_listen: SocketAddr,
    /// Serve DNS on this address: SRV `_xmpp-server._tcp.r<n>.<suffix>`
    /// → `--s2s-listen`. The target must use it as its resolver. Without
    /// it the target must route our domains to `--s2s-listen` itself.
    #[arg(long)]
    pub dns_listen: Option<SocketAddr>,
    /// How our domains authenticate when connecting to the target.
    #[arg(long, value_enum, default_value = "dialback")]
    pub auth: Auth,
    /// CA and certificates for `--auth external` (written by `loadtest ca`;
    /// generated into a temporary directory when absent).
    #[arg(long)]
    pub ca_dir: Option<PathBuf>,
    /// The target's process, for RSS and CPU sampling.
    #[arg(long)]
    pub target_pid: Option<u32>,
    /// Source addresses for our c2s connections, round-robin (beyond
    /// ~28,000 connections per address the ephemeral ports run out).
    /// Default: the kernel's choice.
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Connections opened at once while setting up.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
}

/// What to write.
#[derive(Args, Debug, Clone)]
pub struct Output {
    /// Write the report as JSON to this file (`-` for stdout, which then
    /// carries only the JSON).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write `index.html` with SVG plots into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ImArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// Local users (each chats with its own remote contacts).
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Remote contacts in all, spread over `--domains`.
    #[arg(long, default_value_t = 100)]
    pub contacts: usize,
    /// Remote domains.
    #[arg(long, default_value_t = 10)]
    pub domains: usize,
    #[arg(long, value_enum, default_value = "both")]
    pub direction: Direction,
    /// Messages in all (bounded run).
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Target rate in messages/s over all senders; 0 = flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Flat out: messages in flight per sender stream (closed loop).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Upper bound of the measured phase.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub duration: Duration,
    /// How long to wait for stragglers after the last send.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain: Duration,
    /// Body size in bytes (padding after the timestamp).
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// Local users sending updates (each has its own contacts).
    #[arg(long, default_value_t = 1)]
    pub users: usize,
    /// Federated contacts per local user.
    #[arg(long, default_value_t = 10_000)]
    pub contacts: usize,
    /// Remote domains the contacts are spread over.
    #[arg(long, default_value_t = 100)]
    pub domains: usize,
    /// Presence updates per user, one after the other completes.
    #[arg(long, default_value_t = 10)]
    pub updates: u64,
    /// Upper bound for each update to reach every contact.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub update_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// Remote domains connecting in at once.
    #[arg(long, default_value_t = 100)]
    pub domains: usize,
    /// Local c2s sessions (STARTTLS + SCRAM + bind) at once.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Keep everything up this long after the last came up, sampling RSS.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub hold: Duration,
    /// Upper bound for everything to come up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    pub timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    #[arg(long, default_value_t = 20)]
    pub users: usize,
    #[arg(long, default_value_t = 200)]
    pub contacts: usize,
    #[arg(long, default_value_t = 10)]
    pub domains: usize,
    /// Messages/s over all senders, both directions.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// A presence update from one user every this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub presence_every: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub duration: Duration,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub drain: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub output: Output,
    /// The command that runs the target in the foreground, as words
    /// (`--target-cmd fedrouter --target-cmd --config --target-cmd f.toml
    /// --target-cmd run`, or one string split on spaces). Its c2s (and
    /// s2s) addresses must stay the same across restarts.
    #[arg(long, required = true, num_args = 1.., value_delimiter = ' ')]
    pub target_cmd: Vec<String>,
    /// SIGKILL the target (then restart it) each time this many more
    /// messages were acknowledged.
    #[arg(long, default_value_t = 1000)]
    pub kill_target_after: u64,
    /// How many times to kill the target.
    #[arg(long, default_value_t = 2)]
    pub kills: u32,
    #[arg(long, default_value_t = 4)]
    pub users: usize,
    #[arg(long, default_value_t = 40)]
    pub contacts: usize,
    #[arg(long, default_value_t = 4)]
    pub domains: usize,
    /// Messages in all, over all users.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Messages between two ack requests (`<r/>`).
    #[arg(long, default_value_t = 100)]
    pub window: usize,
    /// Upper bound of the run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub duration: Duration,
    /// How long to wait for acknowledged messages to arrive at the end.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain: Duration,
}

impl ChaosArgs {
    /// Messages per user.
    pub fn per_user(&self) -> u64 {
        self.messages / self.users.max(1) as u64
    }
}

#[derive(Args, Debug, Clone)]
pub struct CaArgs {
    /// Output directory: `ca.pem`, and `<domain>.pem` (certificate and key)
    /// per remote domain.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 100)]
    pub domains: usize,
    #[arg(long, default_value = "lt.test")]
    pub remote_suffix: String,
}
