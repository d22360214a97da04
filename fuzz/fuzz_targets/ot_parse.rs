//! Parsing an edit operation from a client (core edit/ot.rs): any JSON
//! never panics; an operation that parses renders back to itself, applies
//! to a document of its base length (giving one of its target length) and
//! transforms against the identity unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchyard_core::edit::ot::{Operation, transform};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(op) = Operation::from_json(&value) else {
        return;
    };
    assert_eq!(Operation::from_json(&op.to_json()).as_ref(), Ok(&op));
    // Documents are at most 1 MiB: longer operations cannot apply anyway.
    if op.base_len() > 1 << 16 || op.target_len() > 1 << 16 {
        return;
    }
    let doc: String = "ab\u{e9}\u{1f44d}"
        .chars()
        .cycle()
        .take(op.base_len())
        .collect();
    let applied = op
        .apply(&doc)
        .expect("applies to a document of its base length");
    assert_eq!(applied.chars().count(), op.target_len());
    let mut identity = Operation::new();
    identity.retain(op.base_len());
    let (a, b) = transform(&op, &identity).expect("transforms against the identity");
    assert_eq!(a, op);
    assert_eq!(b.target_len(), op.target_len());
});
