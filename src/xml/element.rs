//! A tiny owned element tree for the few stanzas that are parsed deeply
//! (roster IQ, SASL, bind, disco, dialback) and for building replies.
//!
//! Parsing uses quick-xml's `NsReader` over a complete element; this is not
//! the forwarding path, which never builds a tree. Input normally comes from
//! the framer and is already validated; the checks here (restricted XML,
//! undeclared prefixes) make the parser safe on its own too.
//!
//! Names are kept as local name + resolved namespace; serialisation writes
//! unprefixed names with an `xmlns` wherever the namespace changes.
//! Attributes keep their qualified name as written (`xml:lang`); the
//! element keeps the bindings of the prefixes its attributes use (other
//! than `xml`) and writes them again, so what it writes is
//! namespace-well-formed wherever it goes.

use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, PrefixDeclaration, ResolveResult};
use quick_xml::reader::NsReader;

use crate::xml::escape::{escape_attr, escape_text, unescape};

#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Local name, without prefix.
    pub name: String,
    /// Resolved namespace ("" when none).
    pub ns: String,
    /// Unescaped values; namespace declarations are not included.
    pub attrs: Vec<(String, String)>,
    /// `(prefix, namespace)` for each prefix the attributes use, but `xml`:
    /// declared again on this element when it is written.
    pub prefixes: Vec<(String, String)>,
    pub children: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Element(Element),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElementError {
    #[error("not well-formed: {0}")]
    Xml(String),
    #[error("undeclared namespace prefix '{0}'")]
    UnknownPrefix(String),
    #[error("restricted XML: {0}")]
    Restricted(&'static str),
    #[error("expected exactly one element")]
    NotOneElement,
}

impl From<quick_xml::Error> for ElementError {
    fn from(e: quick_xml::Error) -> Self {
        ElementError::Xml(e.to_string())
    }
}

impl From<quick_xml::events::attributes::AttrError> for ElementError {
    fn from(e: quick_xml::events::attributes::AttrError) -> Self {
        ElementError::Xml(e.to_string())
    }
}

impl From<quick_xml::name::NamespaceError> for ElementError {
    fn from(e: quick_xml::name::NamespaceError) -> Self {
        ElementError::Xml(e.to_string())
    }
}

impl Element {
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Element {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            prefixes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Builder: adds an attribute (value unescaped).
    pub fn with_attr(mut self, k: impl Into<String>, v: impl Into<String>) -> Element {
        self.attrs.push((k.into(), v.into()));
        self
    }

    /// Builder: appends a child element.
    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    /// Builder: appends text (unescaped).
    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// Parses one complete element. `default_ns` is the inherited default
    /// namespace and `prefixes` the stream-level prefix bindings.
    pub fn parse(
        xml: &[u8],
        default_ns: &str,
        prefixes: &[(&str, &str)],
    ) -> Result<Element, ElementError> {
        let s = std::str::from_utf8(xml).map_err(|_| ElementError::Xml("invalid UTF-8".into()))?;
        let mut reader = NsReader::from_str(s);
        {
            let resolver = reader.resolver_mut();
            if !default_ns.is_empty() {
                resolver.add(PrefixDeclaration::Default, Namespace(default_ns))?;
            }
            for (p, ns) in prefixes {
                resolver.add(PrefixDeclaration::Named(p), Namespace(ns))?;
            }
        }

        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        loop {
            let (resolved, event) = reader.read_resolved_event()?;
            let ns = match resolved {
                ResolveResult::Bound(ns) => Ok(ns.0.to_owned()),
                ResolveResult::Unbound => Ok(String::new()),
                ResolveResult::Unknown(p) => Err(ElementError::UnknownPrefix(p)),
            };
            match event {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if root.is_some() {
                        return Err(ElementError::NotOneElement);
                    }
                    let mut el = Element::new(e.local_name().as_ref(), ns?);
                    for a in e.attributes() {
                        let a = a?;
                        let key = a.key.0;
                        if key == "xmlns" || key.starts_with("xmlns:") {
                            continue;
                        }
                        match reader.resolver().resolve_attribute(a.key).0 {
                            ResolveResult::Unknown(p) => {
                                return Err(ElementError::UnknownPrefix(p));
                            }
                            ResolveResult::Bound(ns) => {
                                if let Some((p, _)) = key.split_once(':')
                                    && p != "xml"
                                    && !el.prefixes.iter().any(|(q, _)| q == p)
                                {
                                    // The resolver keeps the raw value.
                                    let ns = unescape(ns.0)
                                        .map_err(|_| ElementError::Xml("bad reference".into()))?;
                                    el.prefixes.push((p.to_owned(), ns.into_owned()));
                                }
                            }
                            ResolveResult::Unbound => {}
                        }
                        let v = a.normalized_value(XmlVersion::Implicit1_0)?;
                        el.attrs.push((key.to_owned(), v.into_owned()));
                    }
                    if matches!(event, Event::Empty(_)) {
                        close(&mut stack, &mut root, el);
                    } else {
                        stack.push(el);
                    }
                }
                Event::End(_) => {
                    let el = stack
                        .pop()
                        .ok_or_else(|| ElementError::Xml("unexpected end tag".into()))?;
                    close(&mut stack, &mut root, el);
                }
                Event::Text(t) => match stack.last_mut() {
                    Some(top) => top.push_text(&t.xml10_content()),
                    None if t.xml10_content().trim().is_empty() => {}
                    None => return Err(ElementError::NotOneElement),
                },
                Event::CData(c) => match stack.last_mut() {
                    Some(top) => top.push_text(&c.xml10_content()),
                    None => return Err(ElementError::NotOneElement),
                },
                Event::GeneralRef(g) => {
                    let top = stack.last_mut().ok_or(ElementError::NotOneElement)?;
                    if g.is_char_ref() {
                        let c = g
                            .resolve_char_ref()?
                            .ok_or_else(|| ElementError::Xml("bad character reference".into()))?;
                        top.push_text(c.encode_utf8(&mut [0; 4]));
                    } else {
                        let name = g.xml10_content();
                        let v = resolve_predefined_entity(&name)
                            .ok_or(ElementError::Restricted("undeclared entity"))?;
                        top.push_text(v);
                    }
                }
                Event::Comment(_) => return Err(ElementError::Restricted("comment")),
                Event::PI(_) | Event::Decl(_) => {
                    return Err(ElementError::Restricted("processing instruction"));
                }
                Event::DocType(_) => return Err(ElementError::Restricted("DTD")),
                Event::Eof => break,
            }
        }
        if !stack.is_empty() {
            return Err(ElementError::Xml("unclosed element".into()));
        }
        root.ok_or(ElementError::NotOneElement)
    }

    /// Adjacent text (split by references or CDATA) becomes one node.
    fn push_text(&mut self, s: &str) {
        if let Some(Node::Text(t)) = self.children.last_mut() {
            t.push_str(s);
        } else {
            self.children.push(Node::Text(s.to_owned()));
        }
    }

    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements in document order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    pub fn children_named<'a>(
        &'a self,
        name: &'a str,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.elements().filter(move |e| e.is(name, ns))
    }

    /// The direct text children, concatenated.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                s.push_str(t);
            }
        }
        s
    }

    /// Serialises; `parent_ns` is the default namespace in scope where the
    /// element is written, so `xmlns` is written only where it changes.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            push_attr(out, ["xmlns", ""], &self.ns);
        }
        for (p, ns) in &self.prefixes {
            push_attr(out, ["xmlns:", p], ns);
        }
        for (k, v) in &self.attrs {
            push_attr(out, [k, ""], v);
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => out.push_str(&escape_text(t)),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    pub fn to_string_in(&self, parent_ns: &str) -> String {
        let mut s = String::with_capacity(128);
        self.write_to(&mut s, parent_ns);
        s
    }
}

/// Writes ` name='value'`, the name in pieces, the value escaped.
fn push_attr(out: &mut String, name: [&str; 2], value: &str) {
    out.push(' ');
    out.push_str(name[0]);
    out.push_str(name[1]);
    out.push_str("='");
    out.push_str(&escape_attr(value));
    out.push('\'');
}

fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(el)),
        None => *root = Some(el),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::ns::{NS_CLIENT, NS_SERVER, NS_STREAMS};

    const ROSTER: &str = "jabber:iq:roster";

    #[test]
    fn parse_resolves_inherited_and_declared_namespaces() {
        let xml = b"<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='v&amp;1'>\
            <item jid='a@b' name='A &#x263A;'><group>Friends</group></item></query></iq>";
        let iq = Element::parse(xml, NS_CLIENT, &[]).expect("parses");
        assert!(iq.is("iq", NS_CLIENT));
        assert_eq!(iq.attr("type"), Some("result"));
        let q = iq.child("query", ROSTER).expect("query");
        assert_eq!(q.attr("ver"), Some("v&1"));
        let item = q.child("item", ROSTER).expect("item");
        assert_eq!(item.attr("name"), Some("A ☺"));
        assert_eq!(
            item.child("group", ROSTER).map(Element::text).as_deref(),
            Some("Friends")
        );
        assert!(q.attrs.iter().all(|(k, _)| k != "xmlns"));
    }

    #[test]
    fn parse_uses_stream_level_prefixes() {
        let xml = b"<db:result from='a.example' to='b.example'>key</db:result>";
        let e = Element::parse(
            xml,
            NS_SERVER,
            &[("stream", NS_STREAMS), ("db", "jabber:server:dialback")],
        )
        .expect("parses");
        assert!(e.is("result", "jabber:server:dialback"));
        assert_eq!(e.text(), "key");
    }

    #[test]
    fn parse_refuses_undeclared_prefixes_entities_and_trailing_elements() {
        assert!(matches!(
            Element::parse(b"<x:a/>", NS_CLIENT, &[]),
            Err(ElementError::UnknownPrefix(_))
        ));
        assert!(matches!(
            Element::parse(b"<a y:b='1'/>", NS_CLIENT, &[]),
            Err(ElementError::UnknownPrefix(_))
        ));
        assert!(matches!(
            Element::parse(b"<a>&foo;</a>", NS_CLIENT, &[]),
            Err(ElementError::Restricted(_))
        ));
        assert!(matches!(
            Element::parse(b"<a><!--c--></a>", NS_CLIENT, &[]),
            Err(ElementError::Restricted(_))
        ));
        assert_eq!(
            Element::parse(b"<a/><b/>", NS_CLIENT, &[]),
            Err(ElementError::NotOneElement)
        );
        assert!(Element::parse(b"<a><b></a>", NS_CLIENT, &[]).is_err());
        assert!(Element::parse(b"<a>", NS_CLIENT, &[]).is_err());
    }

    #[test]
    fn prefixed_attributes_keep_their_declarations_when_written() {
        // One prefix declared on the element, one on the stream header,
        // one on an ancestor; `xml:` needs none.
        let xml = b"<presence xmlns:p='urn:p&amp;q'><x xmlns='urn:x' xmlns:a='urn:a'>\
            <y a:k='1' p:k='2' h:k='3' xml:lang='en'/></x></presence>";
        let e = Element::parse(xml, NS_CLIENT, &[("h", "urn:h")]).expect("parses");
        let y = e
            .child("x", "urn:x")
            .and_then(|x| x.child("y", "urn:x"))
            .expect("y");
        assert_eq!(
            y.prefixes,
            vec![
                ("a".into(), "urn:a".into()),
                ("p".into(), "urn:p&q".into()),
                ("h".into(), "urn:h".into())
            ]
        );
        // Written alone, with no stream header around it, it still parses
        // to the same tree.
        let s = e.to_string_in(NS_CLIENT);
        assert!(s.contains("xmlns:p='urn:p&amp;q'"), "{s}");
        assert_eq!(Element::parse(s.as_bytes(), NS_CLIENT, &[]), Ok(e));
    }

    #[test]
    fn text_split_by_references_and_cdata_is_one_node() {
        let e = Element::parse(b"<body>a &lt; b<![CDATA[ <c> ]]>d</body>", NS_CLIENT, &[])
            .expect("parses");
        assert_eq!(e.children, vec![Node::Text("a < b <c> d".into())]);
    }

    #[test]
    fn serialise_then_parse_round_trips_with_namespaces() {
        let e = Element::new("iq", NS_CLIENT)
            .with_attr("type", "set")
            .with_attr("id", "a'b\"c")
            .with_child(
                Element::new("query", ROSTER).with_child(
                    Element::new("item", ROSTER)
                        .with_attr("jid", "x@y")
                        .with_child(Element::new("group", ROSTER).with_text("<Friends & Co>")),
                ),
            )
            .with_child(Element::new("x", "").with_text("no namespace"));
        let s = e.to_string_in(NS_CLIENT);
        assert!(s.starts_with(
            "<iq type='set' id='a&apos;b&quot;c'><query xmlns='jabber:iq:roster'><item"
        ));
        assert!(s.contains("<group>&lt;Friends &amp; Co&gt;</group>"));
        assert!(s.contains("<x xmlns=''>"));
        assert_eq!(Element::parse(s.as_bytes(), NS_CLIENT, &[]), Ok(e.clone()));

        // Written into a parent with another default namespace, it declares its own.
        let s = e.to_string_in(NS_SERVER);
        assert!(s.starts_with("<iq xmlns='jabber:client'"));
        assert_eq!(Element::parse(s.as_bytes(), NS_SERVER, &[]), Ok(e));
    }
}
