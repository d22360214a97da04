//! Transformation (core edit/ot.rs), the property every client relies on:
//! for two concurrent operations on one document, `a` then `b'` and `b`
//! then `a'` give the same text, and composing gives the same as applying
//! one after the other. Operations are built to fit the document.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard_core::edit::ot::{Operation, compose, transform};

#[derive(Arbitrary, Debug)]
enum Step {
    Retain(u8),
    Insert(String),
    Delete(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    doc: String,
    a: Vec<Step>,
    b: Vec<Step>,
}

/// An operation over `len` characters from `steps`, clipped to fit.
fn build(len: usize, steps: &[Step]) -> Operation {
    let mut op = Operation::new();
    let mut left = len;
    for step in steps {
        match step {
            Step::Retain(n) => {
                let n = usize::from(*n).min(left);
                op.retain(n);
                left -= n;
            }
            Step::Delete(n) => {
                let n = usize::from(*n).min(left);
                op.delete(n);
                left -= n;
            }
            Step::Insert(text) => {
                // NUL is refused when parsed; keep to what clients can send.
                let text = text.replace('\0', "");
                op.insert(&text);
            }
        }
    }
    op.retain(left);
    op
}

fuzz_target!(|input: Input| {
    let len = input.doc.chars().count();
    let a = build(len, &input.a);
    let b = build(len, &input.b);
    let (a2, b2) = transform(&a, &b).expect("same base length");
    let via_a = b2.apply(&a.apply(&input.doc).unwrap()).unwrap();
    let via_b = a2.apply(&b.apply(&input.doc).unwrap()).unwrap();
    assert_eq!(via_a, via_b, "convergence");
    let composed = compose(&a, &b2).expect("consecutive");
    assert_eq!(composed.apply(&input.doc).unwrap(), via_a, "composition");
    // What the server stores and announces parses back to the same.
    assert_eq!(Operation::from_json(&a2.to_json()).as_ref(), Ok(&a2));
});
