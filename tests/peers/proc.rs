//! Child processes of the harness: each peer runs in its own process group,
//! with stdout/stderr to a log file, and is stopped by signalling exactly the
//! processes it consists of (its group and its descendants, found in /proc
//! before the first signal), with bounded waits: SIGTERM, then SIGKILL.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a peer gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(25);

pub struct PeerProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl PeerProcess {
    /// Spawns `cmd` in a new process group, stdin from /dev/null, stdout and
    /// stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> PeerProcess {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: open {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log fd");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{name}: spawn {cmd:?}: {e} (is it installed? run tests/install-peers.sh)")
        });
        PeerProcess {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The first live descendant whose command name (`/proc/PID/comm`) is
    /// `comm`: the process that does the work when the one spawned is a
    /// wrapper (`beam.smp` under `ejabberdctl foreground`).
    pub fn descendant_named(&self, comm: &str) -> Option<u32> {
        descendants(self.pid()?).into_iter().find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim_end() == comm)
        })
    }

    /// The process's stdout/stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with `extra_log`) if the process has exited.
    pub fn check_running(&mut self, extra_log: &str) {
        let Some(child) = self.child.as_mut() else {
            panic!("{}: not running", self.name);
        };
        if let Ok(Some(status)) = child.try_wait() {
            self.child = None;
            panic!(
                "{} exited early ({status}).\n--- output ---\n{}\n--- log ---\n{}",
                self.name,
                tail(&self.log(), 60),
                tail(extra_log, 60)
            );
        }
    }

    /// Waits (bounded) until `addr` accepts TCP connections.
    pub fn wait_accepting_blocking(&mut self, addr: SocketAddr, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running("");
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not accept on {addr} within {timeout:?}.\n--- output ---\n{}",
                    self.name,
                    tail(&self.log(), 60)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (bounded) until `addr` accepts TCP connections; `log` gives the
    /// server's own log for the panic message.
    pub async fn wait_accepting(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
        log: impl Fn() -> String,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.check_running(&log());
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await;
            if let Ok(Ok(_)) = attempt {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{} did not accept on {addr} within {timeout:?}.\n--- output ---\n{}\n--- log ---\n{}",
                    self.name,
                    tail(&self.log(), 60),
                    tail(&log(), 60)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the process: SIGTERM to its group and to every descendant (some,
    /// like Erlang's `erl_child_setup`, make their own session), waits up to
    /// [`TERM_GRACE`] for all of them, then SIGKILLs what is left. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let mut pids = descendants(pid);
        pids.push(pid);
        signal(&format!("-{pid}"), "TERM");
        for p in &pids {
            signal(&p.to_string(), "TERM");
        }
        let deadline = Instant::now() + TERM_GRACE;
        let mut reaped = false;
        while Instant::now() < deadline {
            if !reaped {
                reaped = matches!(child.try_wait(), Ok(Some(_)));
            }
            if reaped && pids.iter().all(|p| !alive(*p)) {
                return;
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "{}: still running {TERM_GRACE:?} after SIGTERM, sending SIGKILL",
            self.name
        );
        signal(&format!("-{pid}"), "KILL");
        for p in pids.iter().filter(|p| alive(**p)) {
            signal(&p.to_string(), "KILL");
        }
        let _ = child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(target: &str, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// True while `/proc/<pid>` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_fields(&stat).is_some_and(|(state, _)| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// (state, ppid) from the text of /proc/<pid>/stat.
fn stat_fields(stat: &str) -> Option<(&str, u32)> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split_whitespace();
    let state = it.next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Every live descendant of `root`, from a scan of /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && let Some((_, ppid)) = stat_fields(&stat)
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(c, pp) in &parent_of {
            if pp == p && !out.contains(&c) {
                out.push(c);
                frontier.push(c);
            }
        }
    }
    out
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a command to completion (bounded), panicking with its output on
/// failure or timeout. Returns stdout.
pub fn run_checked(what: &str, cmd: Command, timeout: Duration) -> String {
    run_bounded(what, cmd, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_checked`] without the panic: the output, or what went wrong (with
/// the output).
pub fn run_bounded(what: &str, mut cmd: Command, timeout: Duration) -> Result<String, String> {
    let out_path = std::env::temp_dir().join(format!(
        "peers-cmd-{}-{}.out",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let out = File::create(&out_path).expect("cmd output file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            signal(&format!("-{}", child.id()), "KILL");
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    match status {
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(format!("{what} failed ({s}): {cmd:?}\n{output}")),
        None => Err(format!(
            "{what} timed out after {timeout:?}: {cmd:?}\n{output}"
        )),
    }
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
