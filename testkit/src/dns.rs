//! A tiny authoritative DNS server on loopback for tests: SRV, A and AAAA
//! records from a table the test edits while the server runs. Unknown
//! names get NXDOMAIN; a known name without records of the asked type gets
//! NOERROR with no answers; names marked with [`TestDns::add_servfail`] get
//! SERVFAIL. Answers over UDP and, on the same port, TCP. Stops when
//! dropped.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

const TTL: u32 = 60;

#[derive(Debug, Clone)]
enum Entry {
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    ServFail,
    /// Answer queries for the name only after this long.
    Delay(Duration),
}

type Table = Arc<Mutex<HashMap<String, Vec<Entry>>>>;

/// See the module docs.
#[derive(Debug)]
pub struct TestDns {
    addr: SocketAddr,
    table: Table,
    tasks: Vec<JoinHandle<()>>,
}

impl TestDns {
    /// Binds UDP on `addr` (port 0 picks one) and TCP on the same port when
    /// that port is free for TCP too.
    pub async fn start(addr: SocketAddr) -> std::io::Result<TestDns> {
        let udp = UdpSocket::bind(addr).await?;
        let addr = udp.local_addr()?;
        let table: Table = Arc::default();
        let mut tasks = vec![tokio::spawn(serve_udp(udp, table.clone()))];
        match TcpListener::bind(addr).await {
            Ok(tcp) => tasks.push(tokio::spawn(serve_tcp(tcp, table.clone()))),
            Err(e) => tracing::debug!(%addr, error = %e, "test DNS: no TCP listener"),
        }
        Ok(TestDns { addr, table, tasks })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `name` like `_xmpp-server._tcp.a.test`; `target` `"."` means "no
    /// service".
    pub fn add_srv(&self, name: &str, priority: u16, weight: u16, port: u16, target: &str) {
        self.push(
            name,
            Entry::Srv {
                priority,
                weight,
                port,
                target: target.to_string(),
            },
        );
    }

    pub fn add_a(&self, name: &str, ip: Ipv4Addr) {
        self.push(name, Entry::A(ip));
    }

    pub fn add_aaaa(&self, name: &str, ip: Ipv6Addr) {
        self.push(name, Entry::Aaaa(ip));
    }

    /// Every query for `name` is answered with SERVFAIL.
    pub fn add_servfail(&self, name: &str) {
        self.push(name, Entry::ServFail);
    }

    /// Every answer for `name` (of any type) is sent `delay` late, as from
    /// a slow or distant name server.
    pub fn add_delay(&self, name: &str, delay: Duration) {
        self.push(name, Entry::Delay(delay));
    }

    /// Forgets every record.
    pub fn clear(&self) {
        lock(&self.table).clear();
    }

    fn push(&self, name: &str, e: Entry) {
        lock(&self.table).entry(key(name)).or_default().push(e);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock(t: &Table) -> MutexGuard<'_, HashMap<String, Vec<Entry>>> {
    t.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

async fn serve_udp(sock: UdpSocket, table: Table) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some(resp) = answer(&buf[..n], &table) else {
            continue;
        };
        match delay(&buf[..n], &table) {
            None => {
                let _ = sock.send_to(&resp, peer).await;
            }
            Some(d) => {
                // Late answers must not hold up the others.
                let sock = sock.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = sock.send_to(&resp, peer).await;
                });
            }
        }
    }
}

/// How late the answer to the wire query `q` is due, if it is delayed.
fn delay(q: &[u8], table: &Table) -> Option<Duration> {
    let query = Message::from_vec(q).ok()?;
    let name = query.queries.first()?.name.to_ascii();
    lock(table).get(&key(&name))?.iter().find_map(|e| match e {
        Entry::Delay(d) => Some(*d),
        _ => None,
    })
}

async fn serve_tcp(l: TcpListener, table: Table) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let table = table.clone();
        tokio::spawn(async move {
            loop {
                let Ok(len) = s.read_u16().await else { return };
                let mut q = vec![0u8; usize::from(len)];
                if s.read_exact(&mut q).await.is_err() {
                    return;
                }
                let Some(resp) = answer(&q, &table) else {
                    return;
                };
                if let Some(d) = delay(&q, &table) {
                    tokio::time::sleep(d).await;
                }
                let Ok(len) = u16::try_from(resp.len()) else {
                    return;
                };
                if s.write_u16(len).await.is_err() || s.write_all(&resp).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The wire response to the wire query `q`; `None` for garbage.
fn answer(q: &[u8], table: &Table) -> Option<Vec<u8>> {
    let query = Message::from_vec(q).ok()?;
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(query.queries.iter().cloned());
    let Some(question) = query.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp.to_vec().ok();
    };
    if query.metadata.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return resp.to_vec().ok();
    }
    let name = question.name.clone();
    let entries = lock(table).get(&key(&name.to_ascii())).cloned();
    match entries {
        None => resp.metadata.response_code = ResponseCode::NXDomain,
        Some(entries) if entries.iter().any(|e| matches!(e, Entry::ServFail)) => {
            resp.metadata.response_code = ResponseCode::ServFail;
        }
        Some(entries) => {
            for e in entries {
                if let Some(rdata) = rdata_for(&e, question.query_type) {
                    resp.add_answer(Record::from_rdata(name.clone(), TTL, rdata));
                }
            }
        }
    }
    resp.to_vec().ok()
}

fn rdata_for(e: &Entry, qtype: RecordType) -> Option<RData> {
    match (e, qtype) {
        (
            Entry::Srv {
                priority,
                weight,
                port,
                target,
            },
            RecordType::SRV,
        ) => {
            let target = if target == "." {
                Name::root()
            } else {
                Name::from_ascii(format!("{}.", target.trim_end_matches('.'))).ok()?
            };
            Some(RData::SRV(SRV::new(*priority, *weight, *port, target)))
        }
        (Entry::A(ip), RecordType::A) => Some(RData::A(A(*ip))),
        (Entry::Aaaa(ip), RecordType::AAAA) => Some(RData::AAAA(AAAA(*ip))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::op::Query;

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    async fn ask_udp(dns: &TestDns, name: &str, qtype: RecordType) -> Message {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.send_to(&query(name, qtype), dns.addr()).await.unwrap();
        let mut buf = [0u8; 4096];
        let n = s.recv(&mut buf).await.unwrap();
        Message::from_vec(&buf[..n]).unwrap()
    }

    #[tokio::test]
    async fn unknown_names_are_nxdomain_and_missing_types_are_empty_noerror() {
        let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dns.add_a("host.test", Ipv4Addr::new(192, 0, 2, 1));
        let r = ask_udp(&dns, "nothing.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r = ask_udp(&dns, "host.test.", RecordType::AAAA).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = ask_udp(&dns, "HOST.test.", RecordType::A).await;
        assert_eq!(r.answers.len(), 1);
        dns.clear();
        let r = ask_udp(&dns, "host.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }

    #[tokio::test]
    async fn a_delayed_name_is_answered_late_and_others_meanwhile() {
        let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dns.add_a("slow.test", Ipv4Addr::new(192, 0, 2, 1));
        dns.add_delay("slow.test", Duration::from_millis(400));
        dns.add_a("fast.test", Ipv4Addr::new(192, 0, 2, 2));
        let started = tokio::time::Instant::now();
        let (slow, fast) = tokio::join!(ask_udp(&dns, "slow.test.", RecordType::A), async {
            // Asked after the slow one, answered before it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let r = ask_udp(&dns, "fast.test.", RecordType::A).await;
            (r, started.elapsed())
        });
        assert_eq!(slow.answers.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(fast.0.answers.len(), 1);
        assert!(fast.1 < Duration::from_millis(350), "{:?}", fast.1);
    }

    #[tokio::test]
    async fn srv_records_and_servfail_are_served_and_tcp_answers_too() {
        let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dns.add_srv("_xmpp-server._tcp.a.test", 1, 2, 5269, "x.a.test");
        dns.add_servfail("broken.test");
        let r = ask_udp(&dns, "broken.test.", RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);

        let mut s = tokio::net::TcpStream::connect(dns.addr()).await.unwrap();
        let q = query("_xmpp-server._tcp.a.test.", RecordType::SRV);
        s.write_u16(q.len() as u16).await.unwrap();
        s.write_all(&q).await.unwrap();
        let len = s.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        s.read_exact(&mut buf).await.unwrap();
        let r = Message::from_vec(&buf).unwrap();
        match &r.answers[0].data {
            RData::SRV(srv) => {
                assert_eq!((srv.priority, srv.weight, srv.port), (1, 2, 5269));
                assert_eq!(srv.target.to_ascii(), "x.a.test.");
            }
            other => panic!("{other:?}"),
        }
    }
}
