//! The control socket: a Unix socket in the data directory through which
//! `fedrouter user …` (and later `reload`, `partners`) talk to a running
//! daemon, the way prosodyctl and ejabberdctl do. The store is opened by
//! one process only, so while the daemon runs every admin command goes
//! through here.
//!
//! Whoever can connect can add users and set passwords, so only the
//! daemon's own user may: the socket is bound inside a directory of its own
//! (`data/control/`, mode 0700, owned by the daemon's user, checked or made
//! so before binding), which closes the window between `bind` and `chmod`
//! in which anyone could connect; and every connection's peer uid
//! (SO_PEERCRED) must be the daemon's effective uid, or root's.
//!
//! Protocol: one request line per connection, words separated by spaces,
//! passwords base64-encoded; the answer is `ok` or `error`, then text lines.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use crate::admin;
use crate::storage::Store;

/// Longest request line accepted.
const MAX_LINE: usize = 4096;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control").join("control.sock")
}

fn refused(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg)
}

/// Makes `dir` private to this user: created with mode 0700, or, if it
/// exists, a real directory (not a symlink) owned by this user, its mode
/// narrowed to 0700. Another user's directory is refused: they could
/// swap the socket under us.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(refused(format!("{} is not a directory", dir.display())));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refused(format!(
            "{} belongs to uid {}, not to this user (uid {me})",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Whether a process running as `uid` may use the control socket: the
/// daemon's own user, or root.
fn may_connect(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Binds the socket in its private directory, replacing a stale file from
/// a daemon that died, but refusing to steal the socket of one that is
/// running.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another fedrouter is running with this data directory",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

pub struct ControlContext {
    pub store: Arc<dyn Store>,
    pub domains: Vec<String>,
    /// `c2s.scram_iterations`, for new and changed passwords.
    pub scram_iterations: u32,
    pub reloader: Option<crate::Reloader>,
}

pub async fn serve(listener: UnixListener, ctx: ControlContext) {
    let ctx = Arc::new(ctx);
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // The directory already keeps others out; this is the second lock.
        let uid = sock.peer_cred().ok().map(|c| c.uid());
        if !uid.is_some_and(may_connect) {
            crate::events::daemon::ControlPeerRefused { uid }.emit();
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), handle(sock, ctx)).await;
        });
    }
}

async fn handle(sock: UnixStream, ctx: Arc<ControlContext>) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = tokio::io::BufReader::new(rd).take(MAX_LINE as u64);
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    let ctx2 = ctx.clone();
    let answer = tokio::task::spawn_blocking(move || execute(line.trim_end(), &ctx2))
        .await
        .unwrap_or_else(|e| Err(format!("internal error: {e}")));
    let text = match answer {
        Ok(body) => format!("ok\n{body}"),
        Err(msg) => format!("error\n{msg}\n"),
    };
    wr.write_all(text.as_bytes()).await?;
    wr.shutdown().await
}

fn password_arg(w: Option<&str>) -> Result<String, String> {
    let raw = B64
        .decode(w.unwrap_or_default())
        .map_err(|_| "bad password encoding".to_string())?;
    String::from_utf8(raw).map_err(|_| "the password is not UTF-8".to_string())
}

fn execute(line: &str, ctx: &ControlContext) -> Result<String, String> {
    let mut w = line.split(' ');
    let store = &*ctx.store;
    let jid = |s: Option<&str>| {
        admin::user_jid(s.unwrap_or_default(), &ctx.domains).map_err(|e| e.to_string())
    };
    match w.next().unwrap_or_default() {
        "user-add" => {
            let j = jid(w.next())?;
            let p = password_arg(w.next())?;
            admin::add_user(store, &j, &p, ctx.scram_iterations).map_err(|e| e.to_string())?;
            Ok(format!("added {j}\n"))
        }
        "user-passwd" => {
            let j = jid(w.next())?;
            let p = password_arg(w.next())?;
            admin::set_password(store, &j, &p, ctx.scram_iterations).map_err(|e| e.to_string())?;
            Ok(format!("password changed for {j}\n"))
        }
        "user-remove" => {
            let j = jid(w.next())?;
            admin::remove_user(store, &j).map_err(|e| e.to_string())?;
            Ok(format!("removed {j}\n"))
        }
        "user-list" => {
            let users = admin::list_users(store).map_err(|e| e.to_string())?;
            Ok(users.iter().map(|u| format!("{u}\n")).collect())
        }
        "reload" => {
            let r = ctx.reloader.as_ref().ok_or("reload is not available")?;
            let warnings = r.reload()?;
            let mut out = String::from("configuration reloaded\n");
            for w in warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
            Ok(out)
        }
        "partners" => {
            let r = ctx.reloader.as_ref().ok_or("partners is not available")?;
            Ok(r.partners())
        }
        "ping" => Ok("pong\n".into()),
        other => Err(format!("unknown command {other:?}")),
    }
}

/// Client side, for the CLI: `Ok(None)` when no daemon is listening.
pub fn request(data_dir: &Path, words: &[&str]) -> std::io::Result<Option<Result<String, String>>> {
    let path = socket_path(data_dir);
    let mut sock = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    sock.write_all(format!("{}\n", words.join(" ")).as_bytes())?;
    let mut rd = BufReader::new(sock);
    let mut status = String::new();
    rd.read_line(&mut status)?;
    let mut body = String::new();
    for l in rd.lines() {
        body.push_str(&l?);
        body.push('\n');
    }
    Ok(Some(match status.trim() {
        "ok" => Ok(body),
        _ => Err(body.trim_end().to_string()),
    }))
}

/// Encodes a password for the request line.
pub fn encode_password(p: &str) -> String {
    B64.encode(p.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_daemons_user_and_root_may_connect() {
        let me = rustix::process::geteuid().as_raw();
        assert!(may_connect(me));
        assert!(may_connect(0));
        if me != 0 {
            assert!(!may_connect(me + 1));
        }
    }

    #[test]
    fn the_socket_directory_is_made_private_and_a_symlink_or_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("control");
        private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        // An existing directory of ours that is too open is narrowed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(private_dir(&file).is_err());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
