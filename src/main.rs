//! The `fedrouter` command: run the daemon, check a configuration, manage
//! users. Admin commands talk to a running daemon through its control
//! socket, or open the store directly when none is running.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fedrouter::config::Config;
use fedrouter::{admin, control, events};

#[derive(Parser)]
#[command(name = "fedrouter", version, about = "An XMPP federation router")]
struct Cli {
    /// Configuration file (default: $FEDROUTER_CONFIG, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Validate the configuration and exit.
    CheckConfig,
    /// Manage local user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Print the effective federation partner table (with live state when the daemon runs).
    Partners,
    /// Make the running daemon re-read its configuration (as SIGHUP does).
    Reload,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user; the password is prompted for, or read from standard input, without --password.
    Add {
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Remove a user with their roster and offline messages.
    Remove { jid: String },
    /// List users.
    List,
    /// Change a user's password.
    Passwd {
        jid: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Add many users at once: lines `JID PASSWORD` on standard input (the
    /// password is the rest of the line; blank lines and `#` comments are
    /// skipped). Every line is checked before the first user is added; the
    /// first failure (an existing user, say) stops the import.
    Import,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load_or_default(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fedrouter: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(config),
        Command::CheckConfig => {
            match &config.source {
                Some(p) => println!("{}: configuration is valid", p.display()),
                None => println!("no configuration file: the built-in defaults are valid"),
            }
            Ok(())
        }
        Command::User(u) => user(config, u),
        Command::Partners => partners(config),
        Command::Reload => reload(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fedrouter: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> Result<(), String> {
    events::init_logging(&config.log);
    if let Some(n) = fedrouter::transport::raise_fd_limit() {
        events::daemon::FdLimitRaised { limit: n }.emit();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("fedrouter")
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let ran = rt.block_on(async move {
        events::daemon::DaemonStarting {
            config: config.source.as_deref(),
        }
        .emit();
        let daemon = fedrouter::start(config).await.map_err(|e| e.to_string())?;
        events::daemon::DaemonRunning {
            domains: &daemon.config.server.domains,
            data_dir: &daemon.config.server.data_dir,
        }
        .emit();
        let reloader = daemon.reloader.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let r = reloader.clone();
                match tokio::task::spawn_blocking(move || r.reload()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => events::daemon::ReloadRefused { error: &e }.emit(),
                    Err(e) => events::daemon::ReloadFailed { error: &e }.emit(),
                }
            }
        });
        wait_for_shutdown_signal().await;
        events::daemon::ShuttingDown.emit();
        daemon.shutdown().await;
        Ok(())
    });
    // Whatever shutdown_grace abandoned must not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    ran
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

fn partners(config: Config) -> Result<(), String> {
    match control::request(&config.server.data_dir, &["partners"]) {
        Ok(Some(Ok(out))) => {
            print!("{out}");
            Ok(())
        }
        Ok(Some(Err(msg))) => Err(msg),
        Ok(None) => {
            // Not running: the table from the file, without live state.
            let policy = fedrouter::policy::Policy::from_config(&config);
            print!("{}", admin::partners_table(&policy, None));
            println!("(the daemon is not running: no live state)");
            Ok(())
        }
        Err(e) => Err(format!("control socket: {e}")),
    }
}

fn reload(config: Config) -> Result<(), String> {
    match control::request(&config.server.data_dir, &["reload"]) {
        Ok(Some(Ok(out))) => {
            print!("{out}");
            Ok(())
        }
        Ok(Some(Err(msg))) => Err(format!(
            "reload refused, the running configuration stays: {msg}"
        )),
        Ok(None) => Err(format!(
            "no running fedrouter answers on {}",
            control::socket_path(&config.server.data_dir).display()
        )),
        Err(e) => Err(format!("control socket: {e}")),
    }
}

fn read_password(given: Option<String>) -> Result<String, String> {
    if let Some(p) = given {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if p != again {
            return Err("the passwords differ".into());
        }
        Ok(p)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}

fn user(config: Config, cmd: UserCommand) -> Result<(), String> {
    let data_dir = config.server.data_dir.clone();
    let domains = config.server.domains.clone();
    let iterations = config.c2s.scram_iterations;
    if let UserCommand::Import = cmd {
        return import_users(&data_dir, &domains, iterations);
    }
    let (words, password): (Vec<String>, Option<String>) = match &cmd {
        UserCommand::Add { jid, password } => {
            admin::user_jid(jid, &domains).map_err(|e| e.to_string())?;
            let p = read_password(password.clone())?;
            (
                vec!["user-add".into(), jid.clone(), control::encode_password(&p)],
                Some(p),
            )
        }
        UserCommand::Passwd { jid, password } => {
            admin::user_jid(jid, &domains).map_err(|e| e.to_string())?;
            let p = read_password(password.clone())?;
            (
                vec![
                    "user-passwd".into(),
                    jid.clone(),
                    control::encode_password(&p),
                ],
                Some(p),
            )
        }
        UserCommand::Remove { jid } => (vec!["user-remove".into(), jid.clone()], None),
        UserCommand::List => (vec!["user-list".into()], None),
        UserCommand::Import => unreachable!("handled above"),
    };
    let refs: Vec<&str> = words.iter().map(|s| s.as_str()).collect();
    // A running daemon owns the store: ask it.
    match control::request(&data_dir, &refs) {
        Ok(Some(Ok(out))) => {
            print!("{out}");
            return Ok(());
        }
        Ok(Some(Err(msg))) => return Err(msg),
        Ok(None) => {}
        Err(e) => return Err(format!("control socket: {e}")),
    }
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let store = open_store(&data_dir)?;
    let out = match cmd {
        UserCommand::Add { jid, .. } => {
            let j = admin::user_jid(&jid, &domains).map_err(|e| e.to_string())?;
            admin::add_user(
                &store,
                &j,
                password.as_deref().unwrap_or_default(),
                iterations,
            )
            .map_err(|e| e.to_string())?;
            format!("added {j}\n")
        }
        UserCommand::Passwd { jid, .. } => {
            let j = admin::user_jid(&jid, &domains).map_err(|e| e.to_string())?;
            admin::set_password(
                &store,
                &j,
                password.as_deref().unwrap_or_default(),
                iterations,
            )
            .map_err(|e| e.to_string())?;
            format!("password changed for {j}\n")
        }
        UserCommand::Remove { jid } => {
            let j = admin::user_jid(&jid, &domains).map_err(|e| e.to_string())?;
            admin::remove_user(&store, &j).map_err(|e| e.to_string())?;
            format!("removed {j}\n")
        }
        UserCommand::List => admin::list_users(&store)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|u| format!("{u}\n"))
            .collect(),
        UserCommand::Import => unreachable!("handled above"),
    };
    print!("{out}");
    Ok(())
}

/// Opens the store of a stopped daemon (creating the data directory).
fn open_store(data_dir: &std::path::Path) -> Result<fedrouter::storage::RedbStore, String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    fedrouter::storage::RedbStore::open(data_dir).map_err(|e| match e {
        fedrouter::storage::StoreError::Locked => format!(
            "the store in {} is held by another fedrouter process, but its control socket {} did not answer \
             (is the daemon still starting?)",
            data_dir.display(),
            control::socket_path(data_dir).display()
        ),
        e => e.to_string(),
    })
}

/// `user import`: one process for many accounts, so provisioning thousands
/// of users (the load generator's) takes seconds rather than a process
/// start per user. Through the control socket when the daemon runs (it owns
/// the store), else straight into the store, opened once.
fn import_users(
    data_dir: &std::path::Path,
    domains: &[String],
    iterations: u32,
) -> Result<(), String> {
    let mut users = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| format!("standard input: {e}"))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let (jid, password) = line.trim_start().split_once(' ').unwrap_or((line, ""));
        let j = admin::user_jid(jid, domains).map_err(|e| format!("line {}: {e}", n + 1))?;
        if password.is_empty() {
            return Err(format!("line {}: {jid}: no password", n + 1));
        }
        users.push((j, password.to_string()));
    }
    let mut local = None;
    for (i, (jid, password)) in users.iter().enumerate() {
        let stopped_at = |e: String| format!("{e} ({i} of {} users imported)", users.len());
        let words = [
            "user-add",
            jid.as_str(),
            &control::encode_password(password),
        ];
        if local.is_none() {
            match control::request(data_dir, &words) {
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(msg))) => return Err(stopped_at(msg)),
                Ok(None) => {
                    // No daemon: derive the rest on every core, then add.
                    let store = open_store(data_dir)?;
                    local = Some((store, derive_all(&users[i..], iterations)));
                }
                Err(e) => return Err(stopped_at(format!("control socket: {e}"))),
            }
        }
        if let Some((store, creds)) = &mut local {
            let c = creds
                .next()
                .unwrap_or_else(|| Err(admin::AdminError::Password("key derivation failed".into())))
                .map_err(|e| stopped_at(e.to_string()))?;
            admin::add_user_with(store, jid, &c).map_err(|e| stopped_at(e.to_string()))?;
        }
    }
    println!("imported {} users", users.len());
    Ok(())
}

/// The credentials of `users`, in order, derived on all cores: with
/// `c2s.scram_iterations` at its default, the key derivation is most of
/// an import's time.
fn derive_all(
    users: &[(fedrouter::jid::BareJid, String)],
    iterations: u32,
) -> std::vec::IntoIter<Result<fedrouter::stream::scram::Credentials, admin::AdminError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = users.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = users
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(_, p)| admin::credentials(p, iterations))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Err(admin::AdminError::Password(
                        "key derivation failed".into(),
                    ))]
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    })
}
