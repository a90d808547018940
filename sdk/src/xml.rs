//! A tiny XML tree for the documents storage APIs answer with (S3
//! listings, WebDAV multistatus, Azure enumerations): small (a list page
//! is at most a few thousand entries), so read whole and queried rather
//! than streamed.

use quick_xml::Reader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesRef, Event};

/// An element: its local name (namespace prefix dropped), the text of a
/// leaf, and its children.
#[derive(Debug, Default)]
pub struct Node {
    /// Local name (namespace prefix dropped).
    pub name: String,
    /// The text of a leaf (entities resolved, kept verbatim).
    pub text: String,
    /// Child elements, in document order.
    pub children: Vec<Node>,
}

impl Node {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    /// Every child called `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// A child's text, if the child is there.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// Parse a whole document into its root element.
pub fn parse(body: &[u8]) -> Result<Node, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("response is not UTF-8: {e}"))?;
    let mut reader = Reader::from_str(text);
    // Text is kept verbatim: keys may begin or end with spaces, and
    // entities arrive as separate events that trimming would glue wrongly.
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Node> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| format!("malformed XML: {e}"))?;
        match event {
            Event::Start(e) => stack.push(Node { name: local(e.local_name().as_ref()), ..Node::default() }),
            Event::Empty(e) => {
                let node = Node { name: local(e.local_name().as_ref()), ..Node::default() };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or("unbalanced XML")?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::Text(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&t.decode().map_err(|e| format!("bad XML text: {e}"))?);
                }
            }
            Event::CData(t) => {
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&String::from_utf8_lossy(&t.into_inner()));
                }
            }
            Event::GeneralRef(r) => {
                let resolved = resolve_reference(&r)?;
                if let Some(node) = stack.last_mut() {
                    node.text.push_str(&resolved);
                }
            }
            Event::Eof => return Err("XML document ended early".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
}

/// The text a character reference (`&#38;`) or predefined entity
/// (`&amp;`) stands for.
fn resolve_reference(r: &BytesRef<'_>) -> Result<String, String> {
    Ok(match r.resolve_char_ref().map_err(|e| format!("bad XML reference: {e}"))? {
        Some(c) => c.to_string(),
        None => {
            let name = r.decode().map_err(|e| format!("bad XML reference: {e}"))?;
            resolve_predefined_entity(&name).ok_or_else(|| format!("unknown XML entity &{name};"))?.to_string()
        }
    })
}

fn local(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}
