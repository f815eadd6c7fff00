//! A loopback DNS server for the test domains: `dnsmasq` (Debian package
//! `dnsmasq-base`, binary only) in the foreground, configured entirely on its
//! command line, answering only from its table.
//!
//! `--local=/test/` makes every other name under `.test` NXDOMAIN (so Prosody
//! falls back from `_xmpps-server` to `_xmpp-server` to A, which it only does
//! on NXDOMAIN/no data: a SERVFAIL or REFUSED fails the connection); with
//! `--no-resolv --no-hosts` nothing is forwarded and nothing of the system is
//! read. `--bind-interfaces` binds only the given address, so several
//! instances can run side by side on distinct ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::proc::PeerProcess;

/// One DNS record served by [`Dns`].
#[derive(Clone, Debug)]
pub enum Record {
    /// `service_domain` is the full owner name, e.g. `_xmpp-server._tcp.p.test`.
    Srv {
        service_domain: String,
        target: String,
        port: u16,
        priority: u16,
        weight: u16,
    },
    A {
        name: String,
        ip: Ipv4Addr,
    },
}

impl Record {
    /// `_xmpp-server._tcp.<domain>` → `target:port` (priority 0, weight 0).
    pub fn xmpp_server(domain: &str, target: &str, port: u16) -> Record {
        Record::Srv {
            service_domain: format!("_xmpp-server._tcp.{domain}"),
            target: target.to_string(),
            port,
            priority: 0,
            weight: 0,
        }
    }

    pub fn a(name: &str, ip: Ipv4Addr) -> Record {
        Record::A {
            name: name.to_string(),
            ip,
        }
    }
}

/// A running dnsmasq; stopped on drop.
pub struct Dns {
    pub addr: SocketAddr,
    pub records: Vec<Record>,
    proc: PeerProcess,
}

impl Dns {
    /// Starts dnsmasq on `listen` (UDP and TCP; use [`super::free_port`] for
    /// the port) and waits until it accepts on TCP (bounded, 10 s). Its log
    /// (every query, `--log-queries`) goes to `dir/dnsmasq.log`.
    pub fn start(dir: &Path, listen: SocketAddr, records: &[Record]) -> Dns {
        let log = dir.join("dnsmasq.log");
        let mut args: Vec<String> = vec![
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--pid-file=".into(),
            format!("--port={}", listen.port()),
            format!("--listen-address={}", listen.ip()),
            "--bind-interfaces".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--no-negcache".into(),
            "--local=/test/".into(),
            "--log-queries".into(),
            "--log-facility=-".into(),
        ];
        for r in records {
            args.push(match r {
                Record::Srv {
                    service_domain,
                    target,
                    port,
                    priority,
                    weight,
                } => format!("--srv-host={service_domain},{target},{port},{priority},{weight}"),
                Record::A { name, ip } => format!("--host-record={name},{ip}"),
            });
        }
        let mut cmd = std::process::Command::new("dnsmasq");
        cmd.args(&args);
        let mut proc = PeerProcess::spawn("dnsmasq", cmd, &log);
        proc.wait_accepting_blocking(listen, Duration::from_secs(10));
        Dns {
            addr: listen,
            records: records.to_vec(),
            proc,
        }
    }

    /// The A records, for a private `/etc/hosts`.
    pub fn a_records(&self) -> Vec<(String, Ipv4Addr)> {
        self.records
            .iter()
            .filter_map(|r| match r {
                Record::A { name, ip } => Some((name.clone(), *ip)),
                _ => None,
            })
            .collect()
    }

    /// dnsmasq's log so far (one line per query and answer).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }
}
