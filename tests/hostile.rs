//! Hostile input on the c2s port: each gets its specific RFC 6120 stream
//! error, and the daemon keeps serving everyone else.

mod common;

use common::*;
use fedrouter::error::StreamCondition;
use testkit::client::Connection;

const HEADER: &str = "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
                      xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Sends `input` on a fresh connection and returns the stream error.
async fn error_for(server: &TestServer, input: &[u8]) -> StreamCondition {
    let mut c: Connection = server.raw().await;
    // The server may close while we are still writing: that is fine.
    let _ = c.send_raw(input).await;
    match c.expect_stream_error().await {
        Ok(e) => e.condition,
        Err(e) => panic!(
            "no stream error for {:?}: {e}",
            String::from_utf8_lossy(&input[..input.len().min(120)])
        ),
    }
}

#[tokio::test]
async fn each_hostile_input_gets_its_specific_stream_error_and_others_keep_working() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    let mut alice = server.client("alice", "a").await;
    let mut bob = server.client("bob", "b").await;
    bob.send("<presence/>").await.unwrap();

    let billion_laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>\
        <!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>\
        <stream:stream to='localhost' version='1.0' xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams'>&lol2;";
    let mut huge = HEADER.as_bytes().to_vec();
    huge.extend_from_slice(b"<message to='bob@localhost'><body>");
    huge.extend(std::iter::repeat_n(b'x', 1024 * 1024));
    huge.extend_from_slice(b"</body></message>");
    let mut bad_utf8 = HEADER.as_bytes().to_vec();
    bad_utf8.extend_from_slice(b"<message><body>\xff\xfe\xc3</body></message>");

    let cases: Vec<(&str, Vec<u8>, StreamCondition)> = vec![
        ("a DTD with entity expansion", billion_laughs.as_bytes().to_vec(), StreamCondition::RestrictedXml),
        ("a comment", format!("{HEADER}<!-- hi -->").into_bytes(), StreamCondition::RestrictedXml),
        ("a processing instruction", format!("{HEADER}<?evil data?>").into_bytes(), StreamCondition::RestrictedXml),
        ("a 1 MiB stanza", huge, StreamCondition::PolicyViolation),
        ("invalid UTF-8", bad_utf8, StreamCondition::UnsupportedEncoding),
        ("mismatched tags", format!("{HEADER}<message><body>x</message></body>").into_bytes(), StreamCondition::NotWellFormed),
        ("a stanza before authentication", format!("{HEADER}<message to='bob@localhost'><body>x</body></message>").into_bytes(), StreamCondition::NotAuthorized),
        (
            "a wrong stream namespace",
            b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' xmlns:stream='urn:wrong'>".to_vec(),
            StreamCondition::InvalidNamespace,
        ),
        (
            "a wrong content namespace",
            b"<stream:stream to='localhost' version='1.0' xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>".to_vec(),
            StreamCondition::InvalidNamespace,
        ),
        ("an undeclared entity", format!("{HEADER}<message>&foo;</message>").into_bytes(), StreamCondition::RestrictedXml),
        ("an unknown host", b"<stream:stream to='elsewhere.example' version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>".to_vec(), StreamCondition::HostUnknown),
    ];
    for (what, input, want) in cases {
        let got = error_for(&server, &input).await;
        assert_eq!(got, want, "{what}");
        // Everyone else keeps working after each attack.
        alice
            .send(format!(
                "<message to='bob@{DOMAIN}'><body>after {what}</body></message>"
            ))
            .await
            .unwrap();
        let m = expect(&mut bob, "a message after an attack", |s| {
            s.name() == "message"
        })
        .await;
        assert_eq!(body(&m).as_deref(), Some(format!("after {what}").as_str()));
    }
}

#[tokio::test]
async fn an_oversize_stanza_after_authentication_is_a_policy_violation() {
    let server = TestServer::start_with("[gateway]\nmax_stanza_size = 65536\n").await;
    server.add_user("alice", "a");
    let mut alice = server.client("alice", "a").await;
    let big = format!(
        "<message to='alice@{DOMAIN}'><body>{}</body></message>",
        "y".repeat(200_000)
    );
    let _ = alice.send(big).await;
    let e = alice.conn.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::PolicyViolation);
}

#[tokio::test]
async fn bytes_pipelined_after_starttls_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.raw().await;
    c.send_raw(HEADER).await.unwrap();
    // Features, then a STARTTLS with a plaintext command glued behind it.
    c.recv().await.unwrap();
    c.send_raw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='get' id='injected'/>")
        .await
        .unwrap();
    let e = c.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::PolicyViolation);
}

#[tokio::test]
async fn a_client_that_never_finishes_negotiation_is_timed_out() {
    let server = TestServer::start_with("[gateway]\nstream_establishment_timeout = 1\n").await;
    let mut c = server.raw().await;
    c.send_raw(HEADER).await.unwrap();
    let e = c.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::ConnectionTimeout);
}
