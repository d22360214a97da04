//! Collaborative editing (PROTOCOL §8): operational transformation on the
//! server. [`ot`] is the pure core: operations, apply, transform, compose.

pub mod ot;
