//! A YAML document as a tree of nodes that remember where they came from.
//!
//! Workflows are not deserialized straight into typed structs: serde stops at the
//! first problem, and we want every problem at once, each with `file:line:col`.
//! So the document is read into [`Node`]s (every value and every key carries its
//! [`Loc`]), and `load.rs` converts nodes into the model, collecting diagnostics.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// 1-based line and column in a source file; `0:0` when unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Loc {
    pub line: u32,
    pub col: u32,
}

impl Loc {
    pub fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }
    fn from_saphyr(loc: &serde_saphyr::Location) -> Self {
        Self { line: loc.line() as u32, col: loc.column() as u32 }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

impl Node {
    /// A short name of the node's type, for "expected a list, found a string".
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// Follows a path of map keys and list indexes, as produced by
    /// `serde_path_to_error`, returning the deepest node reached.
    pub fn lookup<'a>(&'a self, path: &[String]) -> &'a Node {
        let mut node = self;
        for segment in path {
            let next = match &node.value {
                Value::Map(m) => m.iter().find(|(k, _)| &k.name == segment).map(|(_, v)| v),
                Value::Seq(s) => segment.parse::<usize>().ok().and_then(|i| s.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// The location of key `name` in this mapping, if present.
    pub fn key_loc(&self, name: &str) -> Option<Loc> {
        self.as_map()?.iter().find(|(k, _)| k.name == name).map(|(k, _)| k.loc)
    }

    /// Converts to JSON, dropping locations.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }

    /// Every string in the tree with its location (for template checks).
    pub fn strings(&self, out: &mut Vec<(String, Loc)>) {
        match &self.value {
            Value::Str(s) => out.push((s.clone(), self.loc)),
            Value::Seq(items) => items.iter().for_each(|n| n.strings(out)),
            Value::Map(entries) => entries.iter().for_each(|(_, v)| v.strings(out)),
            _ => {}
        }
    }
}

/// Parses one YAML document. A syntax error carries the parser's location.
pub fn parse(text: &str) -> Result<Node, (String, Loc)> {
    if text.trim().is_empty() {
        return Ok(Node { value: Value::Null, loc: Loc::new(1, 1) });
    }
    // Repeated keys reach our visitor, so they are reported with every other
    // problem (see `duplicate_keys`) instead of stopping the parse.
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    // YAML 1.2 core schema: only true/false are booleans; `y`, `no`, `on`… are strings.
    options.strict_booleans = true;
    serde_saphyr::from_str_with_options::<Node>(text, options).map_err(|e| {
        let loc = e.location().map(|l| Loc::from_saphyr(&l)).unwrap_or_default();
        (reason_of(&e.to_string()), loc)
    })
}

/// The library's message without its `error: line L column C:` prefix and the
/// snippet it renders (we render our own).
fn reason_of(message: &str) -> String {
    let first = message.lines().next().unwrap_or("invalid YAML");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    match first.strip_prefix("line ").and_then(|rest| rest.split_once(": ")) {
        Some((position, reason)) if position.contains("column") => reason.to_string(),
        _ => first.to_string(),
    }
}

/// Every key that repeats within its mapping: (key, location, first location).
pub fn duplicate_keys(node: &Node, out: &mut Vec<(String, Loc, Loc)>) {
    match &node.value {
        Value::Map(entries) => {
            for (i, (key, value)) in entries.iter().enumerate() {
                if let Some((first, _)) = entries[..i].iter().find(|(k, _)| k.name == key.name) {
                    out.push((key.name.clone(), key.loc, first.loc));
                }
                duplicate_keys(value, out);
            }
        }
        Value::Seq(items) => items.iter().for_each(|n| duplicate_keys(n, out)),
        _ => {}
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Node { value: spanned.value, loc: Loc::from_saphyr(&spanned.referenced) })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(node) = seq.next_element::<Node>()? {
            items.push(node);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push((Key { name: key.value, loc: Loc::from_saphyr(&key.referenced) }, value));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_and_value_knows_its_line_and_column() {
        let doc = parse("name: demo\nsteps:\n  - id: a\n    uses: shell\n").unwrap();
        assert_eq!(doc.key_loc("steps"), Some(Loc::new(2, 1)));
        let steps = doc.get("steps").unwrap();
        let Value::Seq(items) = &steps.value else { panic!("steps is a list") };
        let uses = items[0].get("uses").unwrap();
        assert_eq!(uses.as_str(), Some("shell"));
        assert_eq!(uses.loc, Loc::new(4, 11));
        assert_eq!(items[0].key_loc("id"), Some(Loc::new(3, 5)));
    }

    #[test]
    fn a_syntax_error_carries_its_location() {
        let (_, loc) = parse("name: demo\nsteps: [a, b\n").unwrap_err();
        assert!(loc.line >= 2, "got {loc}");
    }

    #[test]
    fn repeated_keys_are_reported_with_both_places() {
        let doc = parse("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n").unwrap();
        let mut dups = Vec::new();
        duplicate_keys(&doc, &mut dups);
        assert_eq!(
            dups,
            vec![("c".into(), Loc::new(4, 3), Loc::new(3, 3)), ("a".into(), Loc::new(5, 1), Loc::new(1, 1))]
        );
    }

    #[test]
    fn syntax_messages_lose_the_library_position_prefix() {
        assert_eq!(reason_of("error: line 6 column 11: unclosed bracket '{'\n  --> snippet"), "unclosed bracket '{'");
    }

    #[test]
    fn only_true_and_false_are_booleans_as_in_yaml_1_2() {
        let doc = parse("a: y\nb: no\nc: on\nd: Off\ne: yes\nf: false\ng: True\n").unwrap();
        for (key, text) in [("a", "y"), ("b", "no"), ("c", "on"), ("d", "Off"), ("e", "yes")] {
            assert_eq!(doc.get(key).unwrap().as_str(), Some(text), "`{key}: {text}` is a string");
        }
        assert_eq!(doc.get("f").unwrap().value, Value::Bool(false));
        assert_eq!(doc.get("g").unwrap().value, Value::Bool(true));
    }

    #[test]
    fn scalars_keep_their_types() {
        let doc = parse("a: 1\nb: true\nc: 2.5\nd: hello\ne: ~\n").unwrap();
        assert_eq!(doc.get("a").unwrap().value, Value::Int(1));
        assert_eq!(doc.get("b").unwrap().value, Value::Bool(true));
        assert_eq!(doc.get("c").unwrap().value, Value::Float(2.5));
        assert_eq!(doc.get("d").unwrap().as_str(), Some("hello"));
        assert_eq!(doc.get("e").unwrap().value, Value::Null);
    }
}
