//! Operational transformation for plain text (PROTOCOL §8): the pure core.
//!
//! An [`Operation`] is a list of [`Component`]s that walks a document from
//! start to end: retain `n` characters, insert text, or delete `n`
//! characters. This module parses and emits the wire form, applies an
//! operation to a string, and implements the two OT primitives the edit
//! sessions need: [`transform`] (make concurrent operations commute) and
//! [`compose`] (fold two consecutive operations into one).
//!
//! Invariants:
//! - Pure: no I/O, no clocks, no shared state; every function is
//!   deterministic, so the server and every client compute the same text.
//! - Every length counts Unicode scalar values (Rust `char`s), never bytes
//!   or UTF-16 units; "👍🏽" is 2 and "👩‍👩‍👧" is 5.
//! - An operation spans its whole base document: retained plus deleted
//!   length is [`Operation::base_len`]; retained plus inserted length is
//!   [`Operation::target_len`].
//! - Operations are always normalised, so equal edits compare equal: no
//!   zero-length components, no two adjacent components of the same kind,
//!   and an insert next to a delete comes first.
//! - Conventions are ot.js's (`TextOperation`): the same normal form and the
//!   same tie-break in [`transform`] (the first operation's insert goes
//!   first), so our results match a client running ot.js.

use serde_json::{Map, Value};

use crate::names::is_storable_text;
use crate::whole;

/// Why an operation could not be parsed, applied, transformed or composed.
/// The message is meant for API clients (it becomes the 422 detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OtError(pub String);

impl OtError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// One step of an operation. Lengths are in `char`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Component {
    /// Keep the next `n` characters.
    Retain(usize),
    /// Insert this text at the current position.
    Insert(String),
    /// Remove the next `n` characters.
    Delete(usize),
}

/// A normalised edit spanning a whole document.
///
/// Build one with [`Operation::from_json`], [`Operation::from_components`] or
/// the builder methods ([`retain`](Operation::retain),
/// [`insert`](Operation::insert), [`delete`](Operation::delete)), which
/// normalise as they go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Operation {
    components: Vec<Component>,
    // Cached so length checks are O(1); always derived from `components`.
    base_len: usize,
    target_len: usize,
}

impl Operation {
    /// The empty operation: a no-op on the empty document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Normalises any list of components (drops empty ones, merges
    /// neighbours, moves inserts before deletes).
    pub fn from_components(components: impl IntoIterator<Item = Component>) -> Self {
        let mut op = Self::new();
        for c in components {
            match c {
                Component::Retain(n) => op.retain(n),
                Component::Insert(s) => op.insert(&s),
                Component::Delete(n) => op.delete(n),
            };
        }
        op
    }

    /// Appends "keep `n` characters".
    ///
    /// # Panics
    /// If the operation's lengths would overflow `usize`.
    pub fn retain(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len = add(self.base_len, n);
        self.target_len = add(self.target_len, n);
        if let Some(Component::Retain(last)) = self.components.last_mut() {
            *last += n;
        } else {
            self.components.push(Component::Retain(n));
        }
        self
    }

    /// Appends an insert of `text`.
    ///
    /// # Panics
    /// If the operation's lengths would overflow `usize`.
    pub fn insert(&mut self, text: &str) -> &mut Self {
        self.insert_counted(text, text.chars().count())
    }

    /// [`insert`](Self::insert) with the char count already known, so the
    /// transform and compose loops never count the same text twice.
    fn insert_counted(&mut self, text: &str, chars: usize) -> &mut Self {
        if chars == 0 {
            return self;
        }
        self.target_len = add(self.target_len, chars);
        let len = self.components.len();
        match self.components.as_mut_slice() {
            [.., Component::Insert(last)] => last.push_str(text),
            // ot.js normal form: an insert never follows a delete. Deleting
            // then inserting at one position is the same edit as inserting
            // then deleting, so pick one order and let equal edits compare equal.
            [.., Component::Insert(prev), Component::Delete(_)] => prev.push_str(text),
            [.., Component::Delete(_)] => self
                .components
                .insert(len - 1, Component::Insert(text.to_owned())),
            _ => self.components.push(Component::Insert(text.to_owned())),
        }
        self
    }

    /// Appends "remove `n` characters".
    ///
    /// # Panics
    /// If the operation's lengths would overflow `usize`.
    pub fn delete(&mut self, n: usize) -> &mut Self {
        if n == 0 {
            return self;
        }
        self.base_len = add(self.base_len, n);
        if let Some(Component::Delete(last)) = self.components.last_mut() {
            *last += n;
        } else {
            self.components.push(Component::Delete(n));
        }
        self
    }

    /// The normalised components.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Length in chars of the document this operation applies to.
    pub fn base_len(&self) -> usize {
        self.base_len
    }

    /// Length in chars of the document this operation produces.
    pub fn target_len(&self) -> usize {
        self.target_len
    }

    /// True when applying the operation changes nothing (it only retains).
    pub fn is_noop(&self) -> bool {
        self.components
            .iter()
            .all(|c| matches!(c, Component::Retain(_)))
    }

    /// Parses the wire form: an array of `{"retain":n}`, `{"insert":"text"}`
    /// and `{"delete":n}` objects. Lengths must be positive integers and
    /// inserts non-empty; the result is normalised. `[]` is accepted: it is
    /// the no-op on the empty document (length checks happen on apply).
    pub fn from_json(value: &Value) -> Result<Self, OtError> {
        let items = value
            .as_array()
            .ok_or_else(|| OtError::new("operation must be a JSON array of components"))?;
        let mut components = Vec::with_capacity(items.len());
        // Checked totals up front: the builder panics on overflow, and a
        // client must not be able to trigger that with huge lengths.
        let (mut base, mut target) = (0usize, 0usize);
        for (i, item) in items.iter().enumerate() {
            let c = parse_component(i, item)?;
            let (db, dt) = match &c {
                Component::Retain(n) => (*n, *n),
                Component::Insert(s) => (0, s.chars().count()),
                Component::Delete(n) => (*n, 0),
            };
            base = base.checked_add(db).ok_or_else(overflow)?;
            target = target.checked_add(dt).ok_or_else(overflow)?;
            components.push(c);
        }
        Ok(Self::from_components(components))
    }

    /// The wire form of this (normalised) operation.
    pub fn to_json(&self) -> Value {
        let items = self
            .components
            .iter()
            .map(|c| {
                let (key, value) = match c {
                    Component::Retain(n) => ("retain", Value::from(*n)),
                    Component::Insert(s) => ("insert", Value::from(s.as_str())),
                    Component::Delete(n) => ("delete", Value::from(*n)),
                };
                let mut obj = Map::with_capacity(1);
                obj.insert(key.to_owned(), value);
                Value::Object(obj)
            })
            .collect();
        Value::Array(items)
    }

    /// Applies the operation to `doc`. Fails when `doc` is not exactly
    /// [`base_len`](Self::base_len) chars long. Linear in the input: the
    /// document is walked once, char boundaries found as we go.
    pub fn apply(&self, doc: &str) -> Result<String, OtError> {
        let doc_len = doc.chars().count();
        if doc_len != self.base_len {
            return Err(OtError(format!(
                "operation spans {} characters but the document has {}",
                self.base_len, doc_len
            )));
        }
        let mut out = String::with_capacity(doc.len());
        let mut rest = doc;
        for c in &self.components {
            match c {
                Component::Retain(n) => {
                    let (kept, tail) = split_chars(rest, *n);
                    out.push_str(kept);
                    rest = tail;
                }
                Component::Insert(s) => out.push_str(s),
                Component::Delete(n) => rest = split_chars(rest, *n).1,
            }
        }
        Ok(out)
    }
}

/// Transforms two concurrent operations on the same document.
///
/// Returns `(a', b')` such that applying `a` then `b'` gives the same text as
/// applying `b` then `a'`. When both insert at the same position, `a`'s text
/// ends up first (ot.js: `a` is `operation1`). The server passes the incoming
/// operation as `a` (PROTOCOL §8: the later one inserts first).
pub fn transform(a: &Operation, b: &Operation) -> Result<(Operation, Operation), OtError> {
    if a.base_len != b.base_len {
        return Err(OtError(format!(
            "cannot transform operations on different documents: base lengths {} and {}",
            a.base_len, b.base_len
        )));
    }
    let (mut a_prime, mut b_prime) = (Operation::new(), Operation::new());
    let (mut ia, mut ib) = (Cursor::new(a), Cursor::new(b));
    let (mut pa, mut pb) = (ia.next(), ib.next());
    loop {
        match (pa, pb) {
            (None, None) => break,
            // Inserts consume nothing of the base document, so they pass
            // through; checking `a` first is the tie-break.
            (Some(Piece::Insert(s, n)), _) => {
                a_prime.insert_counted(s, n);
                b_prime.retain(n);
                pa = ia.next();
            }
            (_, Some(Piece::Insert(s, n))) => {
                a_prime.retain(n);
                b_prime.insert_counted(s, n);
                pb = ib.next();
            }
            (Some(x), Some(y)) => {
                // Both consume base characters: advance by the shorter.
                let n = x.len().min(y.len());
                match (x, y) {
                    (Piece::Retain(_), Piece::Retain(_)) => {
                        a_prime.retain(n);
                        b_prime.retain(n);
                    }
                    // Deleted by both: already gone on either side.
                    (Piece::Delete(_), Piece::Delete(_)) => {}
                    (Piece::Delete(_), Piece::Retain(_)) => {
                        a_prime.delete(n);
                    }
                    (Piece::Retain(_), Piece::Delete(_)) => {
                        b_prime.delete(n);
                    }
                    _ => unreachable!("inserts are handled above"),
                }
                pa = x.shorten(n).or_else(|| ia.next());
                pb = y.shorten(n).or_else(|| ib.next());
            }
            // Equal base lengths make this impossible; kept as an error
            // rather than a panic so a bug cannot take the server down.
            _ => return Err(OtError::new("transform: operations ended unevenly")),
        }
    }
    Ok((a_prime, b_prime))
}

/// Composes consecutive operations: applying the result equals applying `a`
/// and then `b`. Requires `a.target_len() == b.base_len()`.
pub fn compose(a: &Operation, b: &Operation) -> Result<Operation, OtError> {
    if a.target_len != b.base_len {
        return Err(OtError(format!(
            "cannot compose: the first operation produces {} characters but the second spans {}",
            a.target_len, b.base_len
        )));
    }
    let mut out = Operation::new();
    let (mut ia, mut ib) = (Cursor::new(a), Cursor::new(b));
    let (mut pa, mut pb) = (ia.next(), ib.next());
    loop {
        match (pa, pb) {
            (None, None) => break,
            // `a`'s deletes touch text `b` never sees; `b`'s inserts touch
            // text `a` never saw. Both pass straight through.
            (Some(Piece::Delete(n)), _) => {
                out.delete(n);
                pa = ia.next();
            }
            (_, Some(Piece::Insert(s, n))) => {
                out.insert_counted(s, n);
                pb = ib.next();
            }
            (Some(x), Some(y)) => {
                // `x` produces and `y` consumes the same intermediate text.
                let n = x.len().min(y.len());
                match (x, y) {
                    (Piece::Retain(_), Piece::Retain(_)) => {
                        out.retain(n);
                    }
                    (Piece::Retain(_), Piece::Delete(_)) => {
                        out.delete(n);
                    }
                    (Piece::Insert(s, _), Piece::Retain(_)) => {
                        out.insert_counted(split_chars(s, n).0, n);
                    }
                    // Inserted by `a`, deleted by `b`: never existed.
                    (Piece::Insert(..), Piece::Delete(_)) => {}
                    _ => unreachable!("a's deletes and b's inserts are handled above"),
                }
                pa = x.shorten(n).or_else(|| ia.next());
                pb = y.shorten(n).or_else(|| ib.next());
            }
            _ => return Err(OtError::new("compose: operations ended unevenly")),
        }
    }
    Ok(out)
}

/// A component, or what remains of one, while walking an operation.
/// Inserts borrow their text and carry its char count.
#[derive(Debug, Clone, Copy)]
enum Piece<'a> {
    Retain(usize),
    Insert(&'a str, usize),
    Delete(usize),
}

impl<'a> Piece<'a> {
    fn len(self) -> usize {
        match self {
            Piece::Retain(n) | Piece::Insert(_, n) | Piece::Delete(n) => n,
        }
    }

    /// Drops the first `n` chars; `None` when nothing is left. Slicing an
    /// insert walks only the dropped prefix, so splitting one insert many
    /// times stays linear in its length.
    fn shorten(self, n: usize) -> Option<Self> {
        let left = self.len() - n;
        if left == 0 {
            return None;
        }
        Some(match self {
            Piece::Retain(_) => Piece::Retain(left),
            Piece::Insert(s, _) => Piece::Insert(split_chars(s, n).1, left),
            Piece::Delete(_) => Piece::Delete(left),
        })
    }
}

struct Cursor<'a>(std::slice::Iter<'a, Component>);

impl<'a> Cursor<'a> {
    fn new(op: &'a Operation) -> Self {
        Self(op.components.iter())
    }

    fn next(&mut self) -> Option<Piece<'a>> {
        self.0.next().map(|c| match c {
            Component::Retain(n) => Piece::Retain(*n),
            Component::Insert(s) => Piece::Insert(s, s.chars().count()),
            Component::Delete(n) => Piece::Delete(*n),
        })
    }
}

/// Splits `s` after its first `n` chars (all of it if shorter). Runs of
/// ASCII (one byte per char) are skipped a chunk at a time: documents are
/// mostly ASCII, and every operation retains across most of one.
fn split_chars(s: &str, n: usize) -> (&str, &str) {
    const CHUNK: usize = 64;
    let bytes = s.as_bytes();
    let (mut at, mut left) = (0, n);
    while left > 0 && at < bytes.len() {
        if left >= CHUNK && bytes.len() - at >= CHUNK && bytes[at..at + CHUNK].is_ascii() {
            at += CHUNK;
            left -= CHUNK;
        } else {
            // `at` is on a char boundary: it only ever moves by whole chars.
            let c = s[at..].chars().next().expect("not at the end");
            at += c.len_utf8();
            left -= 1;
        }
    }
    s.split_at(at)
}

fn add(a: usize, b: usize) -> usize {
    a.checked_add(b).expect("operation length overflows usize")
}

fn overflow() -> OtError {
    OtError::new("operation lengths are too large")
}

fn parse_component(i: usize, item: &Value) -> Result<Component, OtError> {
    let obj = item.as_object().ok_or_else(|| {
        OtError(format!(
            "component {i} must be an object like {{\"retain\":n}}, {{\"insert\":\"text\"}} or {{\"delete\":n}}"
        ))
    })?;
    let mut entries = obj.iter();
    let (key, value) = match (entries.next(), entries.next()) {
        (Some(entry), None) => entry,
        _ => {
            return Err(OtError(format!(
                "component {i} must have exactly one key (retain, insert or delete), found {}",
                obj.len()
            )));
        }
    };
    match key.as_str() {
        "retain" => Ok(Component::Retain(parse_len(i, key, value)?)),
        "delete" => Ok(Component::Delete(parse_len(i, key, value)?)),
        "insert" => match value.as_str() {
            Some("") => Err(OtError(format!("component {i}: insert must not be empty"))),
            // Documents are stored as text, and Postgres text cannot hold NUL.
            Some(s) if !is_storable_text(s) => Err(OtError(format!(
                "component {i}: insert must not contain NUL (\\u0000)"
            ))),
            Some(s) => Ok(Component::Insert(s.to_owned())),
            None => Err(OtError(format!(
                "component {i}: insert must be a string, got {value}"
            ))),
        },
        other => Err(OtError(format!(
            "component {i}: unknown component \"{other}\" (expected retain, insert or delete)"
        ))),
    }
}

fn parse_len(i: usize, key: &str, value: &Value) -> Result<usize, OtError> {
    // Whole numbers as JSON Schema counts them (`3` and `3.0`); `None` for
    // negatives and fractions: lengths are whole chars.
    match whole::as_u64(value).map(usize::try_from) {
        Some(Ok(n)) if n > 0 => Ok(n),
        Some(Err(_)) => Err(overflow()),
        _ => Err(OtError(format!(
            "component {i}: {key} length must be a positive integer, got {value}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn op(v: Value) -> Operation {
        Operation::from_json(&v).expect("valid operation")
    }

    fn parse_err(v: Value) -> String {
        Operation::from_json(&v).expect_err("should be rejected").0
    }

    #[test]
    fn parse_rejects_non_array() {
        for v in [json!({"retain": 1}), json!("retain"), json!(null), json!(3)] {
            assert!(parse_err(v).contains("must be a JSON array"));
        }
    }

    #[test]
    fn parse_rejects_non_object_component() {
        for v in [json!([3]), json!(["insert"]), json!([null]), json!([[1]])] {
            assert!(parse_err(v).contains("component 0 must be an object"));
        }
    }

    #[test]
    fn parse_rejects_wrong_key_count() {
        let e = parse_err(json!([{"retain": 1, "delete": 1}]));
        assert!(
            e.contains("exactly one key") && e.contains("found 2"),
            "{e}"
        );
        let e = parse_err(json!([{"retain": 1}, {}]));
        assert!(e.contains("component 1 must have exactly one key") && e.contains("found 0"));
    }

    #[test]
    fn parse_rejects_unknown_component() {
        let e = parse_err(json!([{"skip": 1}]));
        assert!(e.contains("unknown component \"skip\""), "{e}");
    }

    #[test]
    fn parse_takes_whole_number_floats_as_lengths() {
        // JSON Schema's integers: many encoders write 2 as 2.0.
        let parsed = op(json!([{"retain": 2.0}, {"delete": 1.0}, {"insert": "x"}]));
        assert_eq!(
            parsed,
            op(json!([{"retain": 2}, {"delete": 1}, {"insert": "x"}]))
        );
    }

    #[test]
    fn parse_rejects_inserts_storage_cannot_hold() {
        let e = parse_err(json!([{"retain": 1}, {"insert": "a\u{0}b"}]));
        assert!(
            e.contains("component 1: insert must not contain NUL"),
            "{e}"
        );
        // Other control characters are text like any other.
        op(json!([{"insert": "line\n\ttab\u{1}"}]));
    }

    #[test]
    fn parse_rejects_non_positive_or_non_integer_lengths() {
        for (len, shown) in [
            (json!(0), "got 0"),
            (json!(-2), "got -2"),
            (json!(1.5), "got 1.5"),
            (json!(-2.0), "got -2.0"),
            (json!("3"), "got \"3\""),
            (json!(null), "got null"),
        ] {
            for key in ["retain", "delete"] {
                let e = parse_err(json!([{ key: len.clone() }]));
                assert!(
                    e.contains(&format!("{key} length must be a positive integer")),
                    "{e}"
                );
                assert!(e.contains(shown), "{e}");
            }
        }
    }

    #[test]
    fn parse_rejects_bad_inserts() {
        assert_eq!(
            parse_err(json!([{"insert": ""}])),
            "component 0: insert must not be empty"
        );
        let e = parse_err(json!([{"insert": 5}]));
        assert!(e.contains("insert must be a string"), "{e}");
    }

    #[test]
    fn parse_rejects_overflowing_lengths() {
        let e = parse_err(json!([{"retain": u64::MAX}, {"retain": u64::MAX}]));
        assert_eq!(e, "operation lengths are too large");
    }

    #[test]
    fn parse_normalises() {
        let o = op(
            json!([{"retain": 1}, {"retain": 2}, {"delete": 1}, {"insert": "a"},
                          {"delete": 2}, {"insert": "b"}]),
        );
        assert_eq!(
            o.to_json(),
            json!([{"retain": 3}, {"insert": "ab"}, {"delete": 3}])
        );
        assert_eq!((o.base_len(), o.target_len()), (6, 5));
    }

    #[test]
    fn empty_operation_is_noop_on_empty_doc_only() {
        let o = op(json!([]));
        assert!(o.is_noop());
        assert_eq!(o.apply("").unwrap(), "");
        assert!(o.apply("x").is_err());
    }

    #[test]
    fn is_noop_only_for_pure_retains() {
        assert!(op(json!([{"retain": 4}])).is_noop());
        assert!(!op(json!([{"retain": 4}, {"insert": "x"}])).is_noop());
        assert!(!op(json!([{"delete": 4}])).is_noop());
    }

    #[test]
    fn apply_rejects_length_mismatch() {
        let e = op(json!([{"retain": 3}])).apply("café!").unwrap_err().0;
        assert_eq!(e, "operation spans 3 characters but the document has 5");
    }

    #[test]
    fn apply_counts_scalar_values() {
        // "café" is 4 chars (5 bytes): replace the é.
        let o = op(json!([{"retain": 3}, {"delete": 1}, {"insert": "e"}]));
        assert_eq!(o.apply("café").unwrap(), "cafe");
        // CJK: 2 chars, 6 bytes.
        let o = op(json!([{"retain": 1}, {"insert": "と"}, {"retain": 1}]));
        assert_eq!(o.apply("漢字").unwrap(), "漢と字");
        // 👍🏽 is thumbs up + skin tone modifier: 2 scalars; drop the modifier.
        let o = op(json!([{"retain": 1}, {"delete": 1}, {"retain": 1}]));
        assert_eq!(o.apply("👍🏽!").unwrap(), "👍!");
        // 👩‍👩‍👧 is woman ZWJ woman ZWJ girl: 5 scalars.
        let family = "👩‍👩‍👧";
        assert_eq!(family.chars().count(), 5);
        let o = op(json!([{"retain": 4}, {"delete": 1}, {"insert": "👦"}]));
        assert_eq!(o.apply(family).unwrap(), "👩‍👩‍👦");
        assert_eq!(o.target_len(), 5);
    }

    #[test]
    fn transform_tie_break_puts_a_first() {
        let doc = "ab";
        let a = op(json!([{"retain": 1}, {"insert": "X"}, {"retain": 1}]));
        let b = op(json!([{"retain": 1}, {"insert": "Y"}, {"retain": 1}]));
        let (a2, b2) = transform(&a, &b).unwrap();
        let via_a = b2.apply(&a.apply(doc).unwrap()).unwrap();
        let via_b = a2.apply(&b.apply(doc).unwrap()).unwrap();
        assert_eq!(via_a, "aXYb");
        assert_eq!(via_b, "aXYb");
        // Swapping the roles swaps the order: the tie-break is positional.
        let (b3, a3) = transform(&b, &a).unwrap();
        assert_eq!(a3.apply(&b.apply(doc).unwrap()).unwrap(), "aYXb");
        assert_eq!(b3.apply(&a.apply(doc).unwrap()).unwrap(), "aYXb");
    }

    #[test]
    fn transform_overlapping_deletes() {
        // a deletes "bcd", b deletes "cdef" of "abcdefg".
        let doc = "abcdefg";
        let a = op(json!([{"retain": 1}, {"delete": 3}, {"retain": 3}]));
        let b = op(json!([{"retain": 2}, {"delete": 4}, {"retain": 1}]));
        let (a2, b2) = transform(&a, &b).unwrap();
        assert_eq!(
            a2.to_json(),
            json!([{"retain": 1}, {"delete": 1}, {"retain": 1}])
        );
        assert_eq!(
            b2.to_json(),
            json!([{"retain": 1}, {"delete": 2}, {"retain": 1}])
        );
        assert_eq!(b2.apply(&a.apply(doc).unwrap()).unwrap(), "ag");
        assert_eq!(a2.apply(&b.apply(doc).unwrap()).unwrap(), "ag");
    }

    #[test]
    fn transform_insert_inside_deleted_range() {
        // a inserts into the middle of the range b deletes: the insert survives.
        let doc = "hello world";
        let a = op(json!([{"retain": 3}, {"insert": "XY"}, {"retain": 8}]));
        let b = op(json!([{"retain": 1}, {"delete": 6}, {"retain": 4}]));
        let (a2, b2) = transform(&a, &b).unwrap();
        assert_eq!(
            b2.to_json(),
            json!([{"retain": 1}, {"delete": 2}, {"retain": 2},
                                        {"delete": 4}, {"retain": 4}])
        );
        assert_eq!(b2.apply(&a.apply(doc).unwrap()).unwrap(), "hXYorld");
        assert_eq!(a2.apply(&b.apply(doc).unwrap()).unwrap(), "hXYorld");
    }

    #[test]
    fn transform_rejects_different_bases() {
        let e = transform(&op(json!([{"retain": 2}])), &op(json!([{"retain": 3}]))).unwrap_err();
        assert!(e.0.contains("base lengths 2 and 3"), "{e}");
    }

    #[test]
    fn compose_inserts_then_edits_them() {
        let a = op(json!([{"retain": 1}, {"insert": "漢字👍🏽"}, {"retain": 1}]));
        let b = op(json!([{"retain": 2}, {"delete": 2}, {"insert": "!"}, {"retain": 2}]));
        let c = compose(&a, &b).unwrap();
        assert_eq!(
            c.to_json(),
            json!([{"retain": 1}, {"insert": "漢!🏽"}, {"retain": 1}])
        );
        assert_eq!(c.apply("ab").unwrap(), "a漢!🏽b");
    }

    #[test]
    fn compose_rejects_length_mismatch() {
        let a = op(json!([{"retain": 2}, {"insert": "x"}]));
        let e = compose(&a, &op(json!([{"retain": 2}]))).unwrap_err().0;
        assert!(e.contains("produces 3") && e.contains("spans 2"), "{e}");
    }

    // ---- property tests ----

    /// Building blocks for documents and inserts: ASCII, accented (both
    /// precomposed and combining), CJK and multi-scalar emoji.
    const PIECES: &[&str] = &[
        "a",
        "b",
        "z",
        " ",
        "\n",
        "é",
        "ü",
        "e\u{301}",
        "漢",
        "字",
        "👍🏽",
        "👩‍👩‍👧",
    ];

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..max).prop_map(|v| v.concat())
    }

    fn nonempty_text() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 1..4).prop_map(|v| v.concat())
    }

    /// Random valid operations on a document of `len` chars: a run of
    /// retain/delete/insert steps clipped to what's left, then the rest of
    /// the document retained or deleted.
    fn operation(len: usize) -> impl Strategy<Value = Operation> {
        let step = (0u8..3, 1usize..6, nonempty_text());
        (prop::collection::vec(step, 0..12), any::<bool>()).prop_map(move |(steps, delete_rest)| {
            let mut o = Operation::new();
            let mut left = len;
            for (kind, n, s) in steps {
                match kind {
                    0 => {
                        let n = n.min(left);
                        o.retain(n);
                        left -= n;
                    }
                    1 => {
                        let n = n.min(left);
                        o.delete(n);
                        left -= n;
                    }
                    _ => {
                        o.insert(&s);
                    }
                }
            }
            if delete_rest {
                o.delete(left)
            } else {
                o.retain(left)
            };
            o
        })
    }

    fn doc_and_op() -> impl Strategy<Value = (String, Operation)> {
        text(20).prop_flat_map(|doc| {
            let n = doc.chars().count();
            (Just(doc), operation(n))
        })
    }

    fn doc_and_concurrent_ops() -> impl Strategy<Value = (String, Operation, Operation)> {
        text(20).prop_flat_map(|doc| {
            let n = doc.chars().count();
            (Just(doc), operation(n), operation(n))
        })
    }

    fn doc_and_consecutive_ops() -> impl Strategy<Value = (String, Operation, Operation)> {
        doc_and_op().prop_flat_map(|(doc, a)| {
            let n = a.target_len();
            (Just(doc), Just(a), operation(n))
        })
    }

    fn raw_components() -> impl Strategy<Value = Vec<Component>> {
        let c = prop_oneof![
            (0usize..4).prop_map(Component::Retain),
            (0usize..4).prop_map(Component::Delete),
            text(3).prop_map(Component::Insert),
        ];
        prop::collection::vec(c, 0..16)
    }

    fn is_normal(o: &Operation) -> bool {
        let zero_free = o.components().iter().all(|c| match c {
            Component::Retain(n) | Component::Delete(n) => *n > 0,
            Component::Insert(s) => !s.is_empty(),
        });
        let pairs_ok = o.components().windows(2).all(|w| {
            !matches!(
                (&w[0], &w[1]),
                (Component::Retain(_), Component::Retain(_))
                    | (Component::Insert(_), Component::Insert(_))
                    | (Component::Delete(_), Component::Delete(_))
                    | (Component::Delete(_), Component::Insert(_))
            )
        });
        zero_free && pairs_ok
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn prop_split_chars_counts_scalar_values(
            runs in prop::collection::vec((0usize..150, text(4)), 0..6),
            n in 0usize..700,
        ) {
            // Long ASCII runs between non-ASCII pieces, so both the chunked
            // and the char-by-char steps are taken, in every order.
            let doc: String = runs.iter().map(|(k, piece)| "a".repeat(*k) + piece).collect();
            let at = doc.char_indices().nth(n).map_or(doc.len(), |(i, _)| i);
            prop_assert_eq!(split_chars(&doc, n), doc.split_at(at));
        }

        #[test]
        fn prop_transform_converges((doc, a, b) in doc_and_concurrent_ops()) {
            let (a2, b2) = transform(&a, &b).unwrap();
            let via_a = b2.apply(&a.apply(&doc).unwrap()).unwrap();
            let via_b = a2.apply(&b.apply(&doc).unwrap()).unwrap();
            prop_assert_eq!(via_a, via_b);
            prop_assert!(is_normal(&a2) && is_normal(&b2));
        }

        #[test]
        fn prop_compose_matches_sequential_apply((doc, a, b) in doc_and_consecutive_ops()) {
            let c = compose(&a, &b).unwrap();
            let seq = b.apply(&a.apply(&doc).unwrap()).unwrap();
            prop_assert_eq!(c.apply(&doc).unwrap(), seq);
            prop_assert!(is_normal(&c));
        }

        #[test]
        fn prop_apply_gives_target_len((doc, o) in doc_and_op()) {
            prop_assert_eq!(o.base_len(), doc.chars().count());
            prop_assert_eq!(o.apply(&doc).unwrap().chars().count(), o.target_len());
        }

        #[test]
        fn prop_json_roundtrip((_doc, o) in doc_and_op()) {
            prop_assert_eq!(Operation::from_json(&o.to_json()).unwrap(), o);
        }

        #[test]
        fn prop_normalisation_idempotent(raw in raw_components()) {
            let once = Operation::from_components(raw);
            prop_assert!(is_normal(&once));
            let twice = Operation::from_components(once.components().to_vec());
            prop_assert_eq!(twice, once);
        }

        #[test]
        fn prop_transform_against_noop_is_identity((doc, a) in doc_and_op()) {
            let mut noop = Operation::new();
            noop.retain(doc.chars().count());
            let (a2, n2) = transform(&a, &noop).unwrap();
            prop_assert_eq!(&a2, &a);
            prop_assert!(n2.is_noop() && n2.base_len() == a.target_len());
            let (n3, a3) = transform(&noop, &a).unwrap();
            prop_assert_eq!(&a3, &a);
            prop_assert!(n3.is_noop() && n3.base_len() == a.target_len());
        }
    }
}
