//! Which browser origins may use the token cookie to act (PROTOCOL §10:
//! "a cookie-authenticated upgrade is accepted only from an allowed
//! `Origin`").
//!
//! A browser attaches the `switchyard_token` cookie to requests any site
//! makes to this server, so a cookie alone does not show that the user's
//! own app sent the request. A WebSocket upgrade is not covered by CORS at
//! all, and a cross-site POST or DELETE reaches the handler before CORS
//! hides its answer. So when the token came from the cookie, a WebSocket
//! upgrade and every request that changes state (any method but GET, HEAD
//! and OPTIONS) must carry an `Origin` that is listed in
//! `SWITCHYARD_CORS_ORIGINS` or is the server's own (its `Host`).
//!
//! A request without `Origin` passes: browsers send it on every WebSocket
//! handshake and every cross-origin or state-changing request, so its
//! absence means a client that is not a browser acting for a visitor (and
//! holds the cookie as its own credential). `Origin: null` (sandboxed
//! frames, `file:` pages, some redirects) is never trusted. With
//! `SWITCHYARD_CORS_ORIGINS=*` no other origin is trusted with the cookie:
//! `*` lets any site read with a token it holds, and trusting every origin
//! with the visitor's cookie would undo this check.

use crate::config::CorsOrigins;

/// The origins trusted with the token cookie besides the server's own.
#[derive(Debug, Clone, Default)]
pub struct CookieOrigins {
    /// Normalised (`scheme://host[:port]`, lower case, no default port).
    listed: Vec<String>,
}

impl CookieOrigins {
    /// From the CORS setting: a listed origin is trusted; `*` and no
    /// setting trust only the server's own origin.
    pub fn new(cors: Option<&CorsOrigins>) -> Self {
        let listed = match cors {
            Some(CorsOrigins::List(list)) => list.iter().filter_map(|o| normalise(o)).collect(),
            Some(CorsOrigins::Any) | None => Vec::new(),
        };
        Self { listed }
    }

    /// Whether a request with this `Origin` and `Host` may act with the cookie.
    pub fn allow(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Some(origin) = normalise(origin) else {
            return false;
        };
        if self.listed.contains(&origin) {
            return true;
        }
        // The server's own origin: the page was served by this host. The
        // scheme is not compared: behind a TLS proxy the server cannot tell.
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        host.and_then(normalise_host)
            .is_some_and(|host| strip_default_port(&host) == authority)
    }
}

/// `scheme://host[:port]` in lower case without a default port; `None` for
/// anything else (`null`, paths, user info, other schemes).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, authority) = origin.split_once("://")?;
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || authority.contains(['/', '@', '?', '#'])
        || !authority.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    let default_port = if scheme == "http" { ":80" } else { ":443" };
    let authority = authority.strip_suffix(default_port).unwrap_or(authority);
    Some(format!("{scheme}://{authority}"))
}

/// A `Host` header in lower case.
fn normalise_host(host: &str) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    (!host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic())).then_some(host)
}

/// `host` without `:80` or `:443`, which a `Host` header may carry while the
/// origin leaves it out.
fn strip_default_port(authority: &str) -> &str {
    authority
        .strip_suffix(":80")
        .or_else(|| authority.strip_suffix(":443"))
        .unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(origins: &[&str]) -> CookieOrigins {
        CookieOrigins::new(Some(&CorsOrigins::List(
            origins.iter().map(|o| o.to_string()).collect(),
        )))
    }

    #[test]
    fn listed_origins_and_the_servers_own_are_trusted() {
        let trusted = listed(&["https://app.example.com", "http://localhost:3000"]);
        let host = Some("switchyard.example.com");
        assert!(trusted.allow(Some("https://app.example.com"), host));
        assert!(trusted.allow(Some("HTTPS://App.Example.com/"), host));
        assert!(trusted.allow(Some("https://app.example.com:443"), host));
        assert!(trusted.allow(Some("http://localhost:3000"), host));
        assert!(trusted.allow(Some("https://switchyard.example.com"), host));
        assert!(trusted.allow(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(trusted.allow(Some("https://a.example"), Some("a.example:443")));
        // Not a browser acting for a visitor.
        assert!(trusted.allow(None, host));
    }

    #[test]
    fn every_other_origin_is_refused() {
        let trusted = listed(&["https://app.example.com"]);
        let host = Some("switchyard.example.com");
        for origin in [
            "https://evil.example",
            "https://app.example.com.evil.example",
            "https://app.example.com:8443",
            "http://localhost:3000",
            "null",
            "",
            "file://",
            "https://user@app.example.com",
            "ftp://app.example.com",
        ] {
            assert!(!trusted.allow(Some(origin), host), "{origin}");
        }
        assert!(!trusted.allow(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8080")));
        assert!(!trusted.allow(Some("https://evil.example"), None));
        assert!(trusted.allow(Some("https://app.example.com"), None));
    }

    #[test]
    fn a_wildcard_trusts_only_the_servers_own_origin() {
        let any = CookieOrigins::new(Some(&CorsOrigins::Any));
        assert!(!any.allow(Some("https://app.example.com"), Some("sy.example.com")));
        assert!(any.allow(Some("https://sy.example.com"), Some("sy.example.com")));
        let none = CookieOrigins::new(None);
        assert!(!none.allow(Some("https://app.example.com"), Some("sy.example.com")));
        assert!(none.allow(
            Some("http://sy.example.com:8080"),
            Some("sy.example.com:8080")
        ));
    }
}
