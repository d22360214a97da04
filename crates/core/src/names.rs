//! The grammar of names the protocol fixes (PROTOCOL §1, §2, §8): user,
//! tenant and channel ids, namespaces and edit fields; and what any other
//! client text must be to reach storage. A leaf module: every check is a
//! pure function of the text.
//!
//! Text a client chooses freely is stored as given, and the backends do not
//! agree on what they hold: Postgres `text` cannot hold NUL, SQLite can.
//! So every text that reaches storage passes one of the checks here, the
//! same on both backends, and a client gets a 4xx instead of a 500 from
//! one backend and a 200 from the other: [`is_storable_text`] for content
//! (documents), [`is_valid_label`] for short human texts (names, status
//! messages, titles), [`is_valid_opaque_id`] for ids and keys a client
//! picks (`client_op_id`, `idempotency_key`) or sends back (session and
//! lock ids). JSON (event `data`) is stored as its encoding, where NUL is
//! the escape `\u0000`, so it needs no check.

/// `[A-Za-z0-9_.@-]{1,128}`: user ids, tenant ids and channel ids.
pub fn is_valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
}

/// `[a-z_]{1,32}`: a channel namespace (and an edit `resource_type`).
pub fn is_valid_namespace(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// `[A-Za-z0-9_.-]{1,64}`: an edit or typing field.
pub fn is_valid_field(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Content stored as given (an edited document's text): anything but NUL,
/// which Postgres `text` cannot hold. Newlines and tabs are content.
pub fn is_storable_text(s: &str) -> bool {
    !s.contains('\0')
}

/// A short human text (a display name, a status message, a title): at most
/// `max` characters, none of them a control character.
pub fn is_valid_label(s: &str, max: usize) -> bool {
    s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// An id or key a client chooses or sends back: 1 to `max` characters,
/// none of them a control character.
pub fn is_valid_opaque_id(s: &str, max: usize) -> bool {
    !s.is_empty() && is_valid_label(s, max)
}

/// At most `max` characters of `s`, for quoting client input in messages.
pub fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        assert!(is_valid_field("description"));
        assert!(is_valid_field("a.b-c_D9"));
        assert!(!is_valid_field(""));
        assert!(!is_valid_field("a b"));
        assert!(!is_valid_field("a:b"));
        assert!(!is_valid_field(&"x".repeat(65)));
    }

    #[test]
    fn stored_texts() {
        assert!(is_storable_text("line\n\ttab \u{1}"));
        assert!(!is_storable_text("a\0b"));
        assert!(is_valid_label("", 3));
        assert!(is_valid_label("héé", 3));
        assert!(!is_valid_label("héllo", 3));
        assert!(!is_valid_label("a\nb", 10));
        assert!(!is_valid_label("a\0b", 10));
        assert!(!is_valid_label("a\u{85}b", 10), "C1 controls too");
        assert!(is_valid_opaque_id("c1-17", 128));
        assert!(!is_valid_opaque_id("", 128));
        assert!(!is_valid_opaque_id("c\u{0}1", 128));
        assert!(!is_valid_opaque_id(&"x".repeat(129), 128));
    }

    #[test]
    fn ids_and_namespaces() {
        assert!(is_valid_id("alice@example.com"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id(&"x".repeat(129)));
        assert!(is_valid_namespace("work_item"));
        assert!(!is_valid_namespace("Task"));
    }
}
