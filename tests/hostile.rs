//! Hostile input on the c2s port: each gets its specific RFC 6120 stream
//! error, and the daemon keeps serving everyone else.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use fedrouter::error::StreamCondition;
use fedrouter::stream::scram::{ScramClient, ScramHash};
use fedrouter::xml::Stanza;
use fedrouter::xml::element::{Element, Node};
use fedrouter::xml::escape::escape_text;
use fedrouter::xml::ns::{NS_BIND, NS_CLIENT, NS_SASL};
use testkit::client::{Connection, TlsTrust};

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

// ---- hostile logins: every case gets its exact SASL failure condition,
// stanza error or stream error, and a normal login works afterwards ----

/// Many failures come from 127.0.0.1 here: the throttle must not be what
/// answers (its own tests are in tests/c2s.rs).
const NO_THROTTLE: &str = "max_auth_failures_per_account = 1000\nmax_auth_failures_per_ip = 1000\n";

/// A raw stream over STARTTLS, its features read: ready for any `<auth/>`.
async fn over_tls(server: &TestServer) -> Connection {
    let mut c = server.raw().await;
    c.open_stream(DOMAIN).await.unwrap();
    c.recv().await.unwrap();
    c.send_raw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    assert_eq!(c.recv().await.unwrap().name(), "proceed");
    c.start_tls(DOMAIN, &TlsTrust::Insecure).await.unwrap();
    c.open_stream(DOMAIN).await.unwrap();
    c.recv().await.unwrap();
    c
}

fn first_element(el: &Element) -> Option<&Element> {
    el.children.iter().find_map(|n| match n {
        Node::Element(e) => Some(e),
        _ => None,
    })
}

fn first_child(s: &Stanza) -> String {
    let el = Element::parse(s.bytes(), NS_CLIENT, &[]).expect("parsable");
    first_element(&el)
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// The server's answer to one SASL element: `success`, `challenge`, or
/// `failure:<condition>`.
async fn sasl(c: &mut Connection, xml: &str) -> String {
    c.send_raw(xml).await.unwrap();
    let s = c.recv().await.unwrap();
    match s.name() {
        "failure" => format!("failure:{}", first_child(&s)),
        other => other.to_string(),
    }
}

fn plain(blob: &[u8]) -> String {
    format!(
        "<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{}</auth>",
        B64.encode(blob)
    )
}

fn scram_first(client_first: &[u8]) -> String {
    format!(
        "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        B64.encode(client_first)
    )
}

/// A full SCRAM-SHA-256 exchange on a raw stream; the last answer.
async fn scram(c: &mut Connection, user: &str, password: &str) -> String {
    let (mut client, first) = ScramClient::new(ScramHash::Sha256, user, password).unwrap();
    c.send_raw(scram_first(&first)).await.unwrap();
    let s = c.recv().await.unwrap();
    if s.name() != "challenge" {
        return format!("failure:{}", first_child(&s));
    }
    let el = Element::parse(s.bytes(), NS_CLIENT, &[]).unwrap();
    let server_first = B64.decode(el.text().trim()).unwrap();
    let fin = client.handle_server_first(&server_first).unwrap();
    sasl(
        c,
        &format!("<response xmlns='{NS_SASL}'>{}</response>", B64.encode(fin)),
    )
    .await
}

/// Signs in with PLAIN on a raw stream and asks to bind `resource`; the
/// bind answer (a result or an error).
async fn bind(server: &TestServer, user: &str, password: &str, resource: &str) -> Stanza {
    let mut c = over_tls(server).await;
    let blob = format!("\0{user}\0{password}");
    assert_eq!(sasl(&mut c, &plain(blob.as_bytes())).await, "success");
    c.restart();
    c.open_stream(DOMAIN).await.unwrap();
    c.recv().await.unwrap();
    c.send_raw(format!(
        "<iq type='set' id='b1'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
        fedrouter::xml::escape::escape_text(resource)
    ))
    .await
    .unwrap();
    c.recv().await.unwrap()
}

/// The stanza error condition of an `<iq type='error'/>`, or `result`.
fn iq_outcome(s: &Stanza) -> String {
    if s.type_().as_deref() == Some("result") {
        return "result".into();
    }
    let el = Element::parse(s.bytes(), NS_CLIENT, &[]).unwrap();
    let err = el.child("error", NS_CLIENT).expect("an <error/>");
    first_element(err)
        .map(|e| format!("error:{}", e.name))
        .unwrap_or_default()
}

async fn normal_login_still_works(server: &TestServer, case: &str) {
    let mut alice = server.config("alice", "a");
    alice.timeout = TIMEOUT;
    testkit::client::Client::connect(&alice)
        .await
        .unwrap_or_else(|e| panic!("after {case}: {e}"));
}

#[tokio::test]
async fn hostile_logins_get_their_exact_sasl_condition_and_normal_logins_keep_working() {
    let server = TestServer::start_with_c2s(NO_THROTTLE, "").await;
    server.add_user("alice", "a");
    let e = |n: usize| "\u{e9}".repeat(n);
    let ascii_1023 = "a".repeat(1023);
    let multi_1023 = format!("{}a", e(511));
    server.add_user(&ascii_1023, "long");
    server.add_user(&multi_1023, "long");

    // (case, the SASL exchange, the exact answer)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "PLAIN with a 1023-byte ASCII localpart",
            format!("\0{ascii_1023}\0long").into_bytes(),
            "success",
        ),
        (
            "PLAIN with a 1024-byte ASCII localpart",
            format!("\0{}\0long", "a".repeat(1024)).into_bytes(),
            "failure:not-authorized",
        ),
        (
            "PLAIN with a 1023-byte multi-byte localpart",
            format!("\0{multi_1023}\0long").into_bytes(),
            "success",
        ),
        (
            "PLAIN with a 1024-byte multi-byte localpart",
            format!("\0{}\0long", e(512)).into_bytes(),
            "failure:not-authorized",
        ),
        (
            "PLAIN with a nodeprep-prohibited no-break space",
            "\0al\u{a0}ice\0a".as_bytes().to_vec(),
            "failure:not-authorized",
        ),
        (
            "PLAIN with a bidi violation (RTL then LTR)",
            "\0\u{5d0}alice\0a".as_bytes().to_vec(),
            "failure:not-authorized",
        ),
        (
            "PLAIN with extra NULs",
            b"\0a\0b\0c".to_vec(),
            "failure:malformed-request",
        ),
        (
            "PLAIN with an empty password",
            b"\0alice\0".to_vec(),
            "failure:not-authorized",
        ),
        (
            "PLAIN with the authzid of another user",
            b"bob@localhost\0alice\0a".to_vec(),
            "failure:invalid-authzid",
        ),
    ];
    let mut count = 0;
    for (case, blob, want) in cases {
        let mut c = over_tls(&server).await;
        assert_eq!(sasl(&mut c, &plain(&blob)).await, want, "{case}");
        normal_login_still_works(&server, case).await;
        count += 1;
    }

    // SCRAM: lengths and a bidi username through the whole exchange.
    for (case, user, password, want) in [
        (
            "SCRAM with a 1023-byte ASCII username",
            ascii_1023.clone(),
            "long",
            "success",
        ),
        (
            "SCRAM with a 1023-byte multi-byte username",
            multi_1023.clone(),
            "long",
            "success",
        ),
        // A name no JID can have is refused at once, as a wrong password is.
        (
            "SCRAM with a 1024-byte ASCII username",
            "a".repeat(1024),
            "long",
            "failure:not-authorized",
        ),
        (
            "SCRAM with a 1024-byte multi-byte username",
            e(512),
            "long",
            "failure:not-authorized",
        ),
    ] {
        let mut c = over_tls(&server).await;
        assert_eq!(scram(&mut c, &user, password).await, want, "{case}");
        normal_login_still_works(&server, case).await;
        count += 1;
    }
    // SCRAM client-first messages no client would send.
    for (case, first) in [
        // SASLprep (RFC 4013) itself refuses mixed-direction text.
        (
            "SCRAM with a bidi violation in the username",
            "n,,n=\u{5d0}alice,r=abcdefgh",
        ),
        (
            "SCRAM with a =2D escape in the username",
            "n,,n=al=2Dice,r=abcdefgh",
        ),
        (
            "SCRAM with a trailing = in the username",
            "n,,n=alice=,r=abcdefgh",
        ),
        (
            "SCRAM with a lower-case =2c escape",
            "n,,n=al=2cice,r=abcdefgh",
        ),
    ] {
        let mut c = over_tls(&server).await;
        assert_eq!(
            sasl(&mut c, &scram_first(first.as_bytes())).await,
            "failure:malformed-request",
            "{case}"
        );
        normal_login_still_works(&server, case).await;
        count += 1;
    }

    // Resources at bind: the stanza error of RFC 6120 §7.7.2.1.
    for (case, resource, want) in [
        ("a 1023-byte resource", "r".repeat(1023), "result"),
        (
            "a 1024-byte resource",
            "r".repeat(1024),
            "error:bad-request",
        ),
        (
            "a 1024-byte multi-byte resource",
            e(512),
            "error:bad-request",
        ),
        (
            "a bidi violation in the resource",
            "\u{5d0}a".into(),
            "error:bad-request",
        ),
        (
            "a right-to-left override in the resource",
            "x\u{202e}y".into(),
            "error:bad-request",
        ),
    ] {
        let answer = bind(&server, "alice", "a", &resource).await;
        assert_eq!(iq_outcome(&answer), want, "{case}");
        normal_login_still_works(&server, case).await;
        count += 1;
    }
    assert_eq!(count, 22, "every case ran");
}

#[tokio::test]
async fn an_8_kib_scram_nonce_is_refused_by_the_stanza_limit_or_as_malformed() {
    let first = format!("n,,n=alice,r={}", "n".repeat(8 * 1024));
    // At the default pre-authentication limit (8 KiB) the <auth/> is too big.
    let server = TestServer::start_with_c2s(NO_THROTTLE, "").await;
    server.add_user("alice", "a");
    let mut c = over_tls(&server).await;
    let _ = c.send_raw(scram_first(first.as_bytes())).await;
    let e = c.expect_stream_error().await.unwrap();
    assert_eq!(e.condition, StreamCondition::PolicyViolation);
    normal_login_still_works(&server, "an 8 KiB nonce").await;
    // With room for it, SCRAM itself refuses nonces over 1 KiB.
    let server =
        TestServer::start_with_c2s(NO_THROTTLE, "[gateway]\nmax_stanza_size_pre_auth = 65536\n")
            .await;
    server.add_user("alice", "a");
    let mut c = over_tls(&server).await;
    assert_eq!(
        sasl(&mut c, &scram_first(first.as_bytes())).await,
        "failure:malformed-request"
    );
    // The stream stays open for another try.
    assert_eq!(sasl(&mut c, &plain(b"\0alice\0a")).await, "success");
    normal_login_still_works(&server, "an 8 KiB nonce, allowed in size").await;
}

/// How a parser case is sent.
enum Input {
    /// On a fresh unauthenticated TCP connection, each piece written (and
    /// flushed) on its own.
    Raw(Vec<Vec<u8>>),
    /// On a fresh authenticated session, each piece written on its own.
    Signed(Vec<Vec<u8>>),
    /// From alice to bob, each piece written on its own.
    ToBob(Vec<Vec<u8>>),
}

/// What the daemon must do with it.
enum Want {
    Error(StreamCondition),
    /// Close the stream without an error.
    Close,
    /// Deliver it to bob with this body.
    Body(&'static str),
}

fn bytes(s: impl Into<String>) -> Vec<Vec<u8>> {
    vec![s.into().into_bytes()]
}

fn pieces(p: &[&str]) -> Vec<Vec<u8>> {
    p.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn one_byte_each(s: &str) -> Vec<Vec<u8>> {
    s.bytes().map(|b| vec![b]).collect()
}

fn in_stream(body: &str) -> Vec<Vec<u8>> {
    bytes(format!("{HEADER}{body}"))
}

/// A stanza to bob whose start tag is `size` bytes of attributes full of
/// `>`, so that every read of it might be the one completing the tag.
fn gt_laden(size: usize) -> String {
    let mut s = format!("<message to='bob@{DOMAIN}'");
    let mut i = 0;
    while s.len() < size {
        s.push_str(&format!(" a{i}='>>>>>>>>'"));
        i += 1;
    }
    s + "><body>trickled</body></message>"
}

/// A stream header with `extra` attributes.
fn header_with(extra: &str) -> String {
    format!(
        "<stream:stream to='{DOMAIN}' version='1.0' xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'{extra}>"
    )
}

/// An empty message with `attrs`, after login.
fn signed_message_with(attrs: String) -> Input {
    Input::Signed(bytes(format!("<message{attrs}/>")))
}

fn attributes(n: usize) -> String {
    (0..n).map(|i| format!(" a{i}=''")).collect()
}

fn declarations(n: usize) -> String {
    (0..n).map(|i| format!(" xmlns:p{i}='urn:p:{i}'")).collect()
}

fn nested(depth: usize, body: &str) -> String {
    // The message itself is level 1.
    let inner = depth - 1;
    format!(
        "<message to='bob@{DOMAIN}'><body>{body}</body>{}{}</message>",
        "<a>".repeat(inner),
        "</a>".repeat(inner)
    )
}

async fn error_after_login(server: &TestServer, input: &[Vec<u8>]) -> StreamCondition {
    let mut carol = server.client("carol", "c").await;
    for p in input {
        if carol.send(p).await.is_err() {
            // Closed while we wrote: the error is on its way.
            break;
        }
    }
    match carol.conn.expect_stream_error().await {
        Ok(e) => e.condition,
        Err(e) => panic!("no stream error after login: {e}"),
    }
}

async fn outcome_raw(server: &TestServer, input: &[Vec<u8>]) -> Result<StreamCondition, String> {
    let mut c: Connection = server.raw().await;
    for p in input {
        if c.send_raw(p).await.is_err() {
            break;
        }
    }
    match c.expect_stream_error().await {
        Ok(e) => Ok(e.condition),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::test]
async fn each_hostile_parser_input_gets_its_exact_outcome_and_logins_and_messages_keep_working() {
    let server = TestServer::start().await;
    server.add_user("alice", "a");
    server.add_user("bob", "b");
    server.add_user("carol", "c");
    server.add_user("dave", "d");
    let mut alice = server.client("alice", "a").await;
    let mut bob = server.client("bob", "b").await;
    bob.send("<presence/>").await.unwrap();

    use StreamCondition::*;
    let header_over_limit =
        header_with(&(0..900).map(|i| format!(" a{i}='>>'")).collect::<String>());
    assert!(header_over_limit.len() > 8192);
    let mut cases: Vec<(&str, Input, Want)> = vec![
        (
            "a stanza whose tag is trickled one byte at a time",
            Input::ToBob(one_byte_each(&gt_laden(2048))),
            Want::Body("trickled"),
        ),
        (
            "a stream header over the size limit trickled one byte at a time",
            Input::Raw(one_byte_each(&header_over_limit)),
            Want::Error(PolicyViolation),
        ),
        (
            "20k namespace declarations in a stanza",
            signed_message_with(declarations(20_000)),
            Want::Error(PolicyViolation),
        ),
        (
            "one namespace declaration more than the limit in a stanza",
            signed_message_with(declarations(fedrouter::xml::MAX_PREFIX_DECLARATIONS + 1)),
            Want::Error(PolicyViolation),
        ),
        (
            "20k namespace declarations on the stream header",
            Input::Raw(bytes(header_with(&declarations(20_000)))),
            Want::Error(PolicyViolation),
        ),
        (
            "100k attributes",
            signed_message_with(attributes(100_000)),
            Want::Error(PolicyViolation),
        ),
        (
            "one attribute more than the limit",
            signed_message_with(attributes(fedrouter::xml::MAX_ATTRIBUTES + 1)),
            Want::Error(PolicyViolation),
        ),
        (
            "nesting at the depth limit (64)",
            Input::ToBob(bytes(nested(fedrouter::xml::MAX_DEPTH, "depth 64"))),
            Want::Body("depth 64"),
        ),
        (
            "nesting one deeper than the limit (65)",
            Input::Signed(bytes(nested(fedrouter::xml::MAX_DEPTH + 1, "depth 65"))),
            Want::Error(PolicyViolation),
        ),
        (
            "a CDATA section and its ]]> split across reads",
            Input::ToBob(pieces(&[
                &format!("<message to='bob@{DOMAIN}'><body><![CDA"),
                "TA[<x> & ]]",
                "]>",
                " ok</body></message>",
            ])),
            Want::Body("<x> & ] ok"),
        ),
        (
            "]]> in text split across reads",
            Input::Raw(pieces(&[
                HEADER,
                "<message><body>a]]",
                ">b</body></message>",
            ])),
            Want::Error(NotWellFormed),
        ),
        (
            "a duplicate to on the stream header",
            Input::Raw(bytes(header_with(" to='elsewhere.example'"))),
            Want::Error(NotWellFormed),
        ),
        (
            "a UTF-16 encoding declaration",
            Input::Raw(bytes(format!(
                "<?xml version='1.0' encoding='UTF-16'?>{}",
                &HEADER["<?xml version='1.0'?>".len()..]
            ))),
            Want::Error(UnsupportedEncoding),
        ),
        (
            "a byte order mark before the stream header",
            Input::Raw(bytes(format!(
                "\u{FEFF}{}",
                &HEADER["<?xml version='1.0'?>".len()..]
            ))),
            Want::Error(NotWellFormed),
        ),
        (
            "bytes after </stream:stream>",
            Input::Raw(in_stream("</stream:stream><message>&#0;<garbage")),
            Want::Close,
        ),
    ];
    // After a valid header, on an unauthenticated stream: the framer
    // refuses them before any stanza reaches the session.
    let in_stream_cases = [
        (
            "&#0;",
            "<message><body>&#0;</body></message>",
            NotWellFormed,
        ),
        (
            "&#xD800;",
            "<message><body>&#xD800;</body></message>",
            NotWellFormed,
        ),
        (
            "&#x110000;",
            "<message><body>&#x110000;</body></message>",
            NotWellFormed,
        ),
        (
            "&#0; in an attribute value",
            "<message id='&#0;'/>",
            NotWellFormed,
        ),
        (
            "an undeclared entity in an attribute value",
            "<message id='&foo;'/>",
            RestrictedXml,
        ),
        (
            "a control character in an attribute value",
            "<message id='a\u{1}b'/>",
            NotWellFormed,
        ),
        (
            "a duplicate attribute in a stanza",
            "<message id='1' id=\"2\"/>",
            NotWellFormed,
        ),
        (
            "an undeclared prefix in a stanza",
            "<message><foo:bar/></message>",
            NotWellFormed,
        ),
        (
            "a prefix bound to the empty namespace",
            "<message xmlns:p=''/>",
            NotWellFormed,
        ),
        (
            "an XML declaration inside the stream",
            "<?xml version='1.0'?>",
            RestrictedXml,
        ),
    ];
    cases.extend(
        in_stream_cases
            .map(|(what, body, want)| (what, Input::Raw(in_stream(body)), Want::Error(want))),
    );
    for (what, input, want) in cases {
        match (input, want) {
            (Input::Raw(input), Want::Error(want)) => {
                assert_eq!(outcome_raw(&server, &input).await, Ok(want), "{what}");
            }
            (Input::Raw(input), Want::Close) => {
                let got = outcome_raw(&server, &input).await;
                assert_eq!(got, Err("the server closed the stream".into()), "{what}");
            }
            (Input::Signed(input), Want::Error(want)) => {
                assert_eq!(error_after_login(&server, &input).await, want, "{what}");
            }
            (Input::ToBob(input), Want::Body(want)) => {
                for p in &input {
                    alice.send(p).await.unwrap();
                }
                let m = expect(&mut bob, what, |s| s.name() == "message").await;
                assert_eq!(body(&m).as_deref(), Some(want), "{what}: {}", text(&m));
            }
            _ => unreachable!("{what}: no such combination"),
        }
        // A normal login still works, and a message still flows.
        let dave = server.client("dave", "d").await;
        dave.close().await.unwrap();
        alice
            .send(format!(
                "<message to='bob@{DOMAIN}'><body>after {}</body></message>",
                escape_text(what)
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
