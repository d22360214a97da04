//! Whole numbers in JSON bodies, as JSON Schema counts them: `60` and
//! `60.0` are the same integer (many encoders write whole numbers with a
//! fraction part), `60.5`, `"60"` and `true` are not integers. A leaf on
//! the ground floor, importing nothing of the crate.
//!
//! Every integer field of a request body uses these instead of serde's
//! own, which refuses `60.0`, so the server accepts exactly what
//! `openapi.yaml`'s `type: integer` allows:
//!
//! ```ignore
//! #[serde(default, deserialize_with = "switchyard_core::whole::opt_u64")]
//! pub ttl_seconds: Option<u64>,
//! ```
//!
//! Only for JSON: a query string has no numbers, only text, and keeps
//! serde's parsing of digits.

use std::fmt;

use serde::Deserializer;
use serde::de::{Error, Unexpected, Visitor};
use serde_json::Value;

/// A JSON integer: a number with no fraction part (`60` or `60.0`) in
/// `T`'s range.
struct Whole<T>(std::marker::PhantomData<T>);

/// What a whole number is converted to.
trait FromWhole: Sized {
    const EXPECTING: &'static str;
    fn from_i128(n: i128) -> Option<Self>;
}

macro_rules! from_whole {
    ($($t:ty => $what:literal),*) => {$(
        impl FromWhole for $t {
            const EXPECTING: &'static str = $what;
            fn from_i128(n: i128) -> Option<Self> {
                <$t>::try_from(n).ok()
            }
        }
    )*};
}

from_whole!(
    u64 => "a non-negative integer",
    i64 => "an integer",
    usize => "a non-negative integer"
);

/// `f` as an integer when it has no fraction part and fits in an i128
/// (every f64 below 2^127 in magnitude does).
fn whole_f64(f: f64) -> Option<i128> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1.7e38).then_some(f as i128)
}

impl<'de, T: FromWhole> Visitor<'de> for Whole<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_u64<E: Error>(self, n: u64) -> Result<T, E> {
        T::from_i128(i128::from(n)).ok_or_else(|| E::invalid_value(Unexpected::Unsigned(n), &self))
    }

    fn visit_i64<E: Error>(self, n: i64) -> Result<T, E> {
        T::from_i128(i128::from(n)).ok_or_else(|| E::invalid_value(Unexpected::Signed(n), &self))
    }

    fn visit_f64<E: Error>(self, f: f64) -> Result<T, E> {
        whole_f64(f)
            .and_then(T::from_i128)
            .ok_or_else(|| E::invalid_value(Unexpected::Float(f), &self))
    }
}

/// Optional fields: `null` and absence (with `#[serde(default)]`) are `None`.
struct OptionalWhole<T>(std::marker::PhantomData<T>);

impl<'de, T: FromWhole> Visitor<'de> for OptionalWhole<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} or null", T::EXPECTING)
    }

    fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Whole(std::marker::PhantomData)).map(Some)
    }
}

fn whole<'de, D: Deserializer<'de>, T: FromWhole>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(Whole(std::marker::PhantomData))
}

fn optional<'de, D: Deserializer<'de>, T: FromWhole>(d: D) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptionalWhole(std::marker::PhantomData))
}

/// An `i64` field.
pub fn i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    whole(d)
}

/// An `Option<u64>` field (with `#[serde(default)]`).
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    optional(d)
}

/// An `Option<i64>` field (with `#[serde(default)]`).
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    optional(d)
}

/// An `Option<usize>` field (with `#[serde(default)]`).
pub fn opt_usize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    optional(d)
}

/// A JSON value read as a `u64`, for JSON kept as a [`Value`] (an edit
/// operation's lengths): `None` unless it is a whole number in range.
pub fn as_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().and_then(whole_f64).and_then(u64::from_i128)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::i64")]
        n: i64,
        #[serde(default, deserialize_with = "super::opt_u64")]
        m: Option<u64>,
    }

    fn parse(v: serde_json::Value) -> Result<Body, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_integers() {
        let b = parse(json!({"n": -60.0, "m": 3.0})).unwrap();
        assert_eq!((b.n, b.m), (-60, Some(3)));
        let b = parse(json!({"n": 0})).unwrap();
        assert_eq!((b.n, b.m), (0, None));
        assert_eq!(parse(json!({"n": 1, "m": null})).unwrap().m, None);
        // From text too, where the float is parsed by serde_json itself.
        let b: Body = serde_json::from_str(r#"{"n": 1e2, "m": 7.0}"#).unwrap();
        assert_eq!((b.n, b.m), (100, Some(7)));
        // Large whole floats read exactly (serde_json's fast float parser
        // read this one as ...582.5 and refused it).
        let b: Body = serde_json::from_str(r#"{"n": 1, "m": 4425569391855582.0}"#).unwrap();
        assert_eq!(b.m, Some(4_425_569_391_855_582));
        let b: Body = serde_json::from_str(r#"{"n": 9007199254740992.0}"#).unwrap();
        assert_eq!(b.n, 9_007_199_254_740_992);
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in [
            json!({"n": 60.5}),
            json!({"n": "60"}),
            json!({"n": true}),
            json!({"n": null}),
            json!({"n": 1e19}),
            json!({"n": 1, "m": -1}),
            json!({"n": 1, "m": -1.0}),
            json!({"n": 1, "m": 1e20}),
            json!({"n": 1, "m": 0.5}),
            json!({"n": 1, "m": "1"}),
        ] {
            let e = parse(bad.clone()).expect_err(&bad.to_string());
            assert!(e.contains("integer"), "{bad}: {e}");
        }
    }

    #[test]
    fn values_read_alike() {
        assert_eq!(super::as_u64(&json!(3)), Some(3));
        assert_eq!(super::as_u64(&json!(3.0)), Some(3));
        assert_eq!(super::as_u64(&json!(3.5)), None);
        assert_eq!(super::as_u64(&json!(-3.0)), None);
        assert_eq!(super::as_u64(&json!("3")), None);
        assert_eq!(super::as_u64(&json!(1e300)), None);
    }
}
