//! Identity from JWTs (PROTOCOL §1).
//!
//! [`Authenticator`] verifies a token with the one configured algorithm
//! (HS256 with a shared secret, or RS256/ES256 with a PEM public key) and
//! turns its claims into an [`Identity`]. Invariants: `alg: none`, any other
//! algorithm, a bad signature, a missing `exp` and a `crit` header (this
//! server understands no critical extension) are all rejected; with an
//! audience or issuer configured ([`ClaimRules`]), a token must name it.
//! An expired token is `token_expired`, every other defect `invalid_token`.
//!
//! Time has one rule for every transport, without leeway and to the
//! millisecond ([`check_times`]): a token is valid from `nbf` (when it has
//! one) until `exp`, and expired at `exp` itself, the instant an open
//! stream is told `token.expired` and closed.
//!
//! A token that verified is remembered (bounded), so a client repeating it
//! (long polling back to back) skips the signature and JSON work; its expiry
//! is still checked on every use, exactly as a full verification would.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorCode};
use crate::identity::{DEFAULT_TENANT, Identity};
use crate::names::{is_valid_id, is_valid_label};

/// Claims as they appear in a token; see PROTOCOL §1. Times are whole
/// seconds since the epoch (`60.0` counts as whole).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(deserialize_with = "crate::whole::i64")]
    pub exp: i64,
    /// Not before: the token is refused until then.
    #[serde(
        default,
        deserialize_with = "crate::whole::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<i64>,
    #[serde(
        default,
        deserialize_with = "crate::whole::opt_i64",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<i64>,
    /// Checked against [`ClaimRules::audience`] when that is set, by
    /// jsonwebtoken on the token's own claims; only written here (for the
    /// tokens the server mints), so a token's `aud` is ignored, whatever
    /// its shape, when no audience is configured.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Checked against [`ClaimRules::issuer`] when that is set, as `aud` is.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// What a token must name beyond §1's claims, from the settings
/// `SWITCHYARD_JWT_AUDIENCE` and `SWITCHYARD_JWT_ISSUER`: when a list is
/// not empty, a token's `aud` (one of its audiences) or `iss` must be in it,
/// and a token without the claim is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimRules {
    pub audience: Vec<String>,
    pub issuer: Vec<String>,
}

/// PROTOCOL §1's one rule for time, for streams and requests alike: valid
/// from `nbf` (inclusive) until `exp` (exclusive), in milliseconds, without
/// leeway. `token_expired` from the millisecond `exp` names, the one at
/// which an open stream is told `token.expired`.
pub fn check_times(exp: i64, nbf: Option<i64>, now_ms: i64) -> Result<(), Error> {
    if now_ms >= exp.saturating_mul(1000) {
        return Err(Error::new(ErrorCode::TokenExpired, "Token has expired"));
    }
    if let Some(nbf) = nbf
        && now_ms < nbf.saturating_mul(1000)
    {
        return Err(Error::new(
            ErrorCode::InvalidToken,
            format!("Token is not valid before its nbf ({nbf})"),
        ));
    }
    Ok(())
}

impl Claims {
    /// Who the claims name, checked against §1's grammar.
    fn identity(self) -> Result<Identity, Error> {
        let claims = self;
        let invalid = |m: &str| Error::new(ErrorCode::InvalidToken, m.to_string());
        let user_id = claims
            .sub
            .or(claims.user_id)
            .ok_or_else(|| invalid("Token has no sub claim"))?;
        if !is_valid_id(&user_id) {
            return Err(invalid(
                "Token sub must be 1-128 characters of [A-Za-z0-9_.@-]",
            ));
        }
        let tenant = claims
            .tenant_id
            .unwrap_or_else(|| DEFAULT_TENANT.to_string());
        if !is_valid_id(&tenant) {
            return Err(invalid(
                "Token tenant_id must be 1-128 characters of [A-Za-z0-9_.@-]",
            ));
        }
        // Shown to other users and stored: no control characters (Postgres
        // text cannot even hold NUL).
        for (claim, value) in [("name", &claims.name), ("avatar", &claims.avatar)] {
            if value.as_deref().is_some_and(|v| !is_valid_label(v, 512)) {
                return Err(invalid(&format!(
                    "Token {claim} must be at most 512 characters, none of them control characters"
                )));
            }
        }
        Ok(Identity {
            user_id,
            tenant,
            name: claims.name,
            avatar: claims.avatar,
            channels: claims.channels,
            publish: claims.publish,
            is_service: claims.role.as_deref() == Some("service"),
            expires_at: claims.exp,
            member_of: Default::default(),
        })
    }
}

/// Verifies tokens; built once from configuration.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    rules: ClaimRules,
    /// Present only with HS256: lets the server mint dev tokens.
    signer: Option<EncodingKey>,
    /// Tokens that verified, with who they name. A `std` mutex: held for a
    /// lookup or an insert, never across `.await`.
    verified: Mutex<HashMap<String, Identity>>,
}

/// Most verified tokens remembered; past it the memory starts over.
const VERIFIED_CAPACITY: usize = 4096;
/// Longer tokens are verified every time, so the memory stays small.
const VERIFIED_TOKEN_BYTES: usize = 2048;

impl Authenticator {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Self {
        Self {
            key: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256, &ClaimRules::default()),
            rules: ClaimRules::default(),
            signer: Some(EncodingKey::from_secret(secret)),
            verified: Mutex::default(),
        }
    }

    /// RS256 or ES256, chosen by the kind of PEM public key given.
    pub fn from_public_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let (key, alg) = match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => (key, Algorithm::RS256),
            Err(_) => (
                DecodingKey::from_ec_pem(pem).map_err(|e| {
                    anyhow::anyhow!(
                        "SWITCHYARD_JWT_PUBLIC_KEY is neither an RSA nor an EC PEM public key: {e}"
                    )
                })?,
                Algorithm::ES256,
            ),
        };
        Ok(Self {
            key,
            validation: validation(alg, &ClaimRules::default()),
            rules: ClaimRules::default(),
            signer: None,
            verified: Mutex::default(),
        })
    }

    /// The same verifier, also requiring `rules`' audience and issuer.
    pub fn with_rules(mut self, rules: ClaimRules) -> Self {
        let alg = self.validation.algorithms[0];
        self.validation = validation(alg, &rules);
        self.rules = rules;
        self
    }

    /// Claims for a token that lives `ttl_secs` from now and names the
    /// configured audience and issuer (the first of each), so tokens this
    /// server mints are tokens it accepts.
    pub fn claims_for(&self, sub: &str, ttl_secs: i64) -> Claims {
        let mut claims = claims_for(sub, ttl_secs);
        claims.aud = self.rules.audience.first().cloned().map(Audience::One);
        claims.iss = self.rules.issuer.first().cloned();
        claims
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, Error> {
        if let Some(who) = self.verified.lock().expect("verified lock").get(token) {
            // Everything but time was checked when it was remembered, and
            // `nbf`, passed then, stays passed.
            check_times(who.expires_at, None, chrono::Utc::now().timestamp_millis())?;
            return Ok(who.clone());
        }
        let who = self.verify_signed(token)?;
        if token.len() > VERIFIED_TOKEN_BYTES {
            return Ok(who);
        }
        let mut verified = self.verified.lock().expect("verified lock");
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(token.to_string(), who.clone());
        Ok(who)
    }

    fn verify_signed(&self, token: &str) -> Result<Identity, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    Error::new(ErrorCode::TokenExpired, "Token has expired")
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    Error::new(ErrorCode::InvalidToken, format!("Token has no {c} claim"))
                }
                ErrorKind::InvalidAlgorithm => Error::new(
                    ErrorCode::InvalidToken,
                    "Token is signed with an algorithm this server does not accept",
                ),
                ErrorKind::InvalidSignature => {
                    Error::new(ErrorCode::InvalidToken, "Token signature does not verify")
                }
                ErrorKind::InvalidAudience => Error::new(
                    ErrorCode::InvalidToken,
                    "Token audience (aud) does not name this server",
                ),
                ErrorKind::InvalidIssuer => Error::new(
                    ErrorCode::InvalidToken,
                    "Token issuer (iss) is not one this server trusts",
                ),
                _ => Error::new(ErrorCode::InvalidToken, "Token is malformed"),
            },
        )?;
        // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit`
        // names an extension it does not understand; this one understands none.
        if data.header.crit.is_some() {
            return Err(Error::new(
                ErrorCode::InvalidToken,
                "Token header has 'crit': this server understands no critical extension",
            ));
        }
        check_times(
            data.claims.exp,
            data.claims.nbf,
            chrono::Utc::now().timestamp_millis(),
        )?;
        data.claims.identity()
    }

    /// Signs `claims` (HS256 only); `None` when the server holds only a public key.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let signer = self.signer.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, signer).ok()
    }
}

fn validation(alg: Algorithm, rules: &ClaimRules) -> Validation {
    let mut v = Validation::new(alg);
    // `exp` stays required; it and `nbf` are checked by `check_times`, to
    // the millisecond (jsonwebtoken counts whole seconds, which let a token
    // through for up to a second after a stream had closed on it).
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let mut required = vec!["exp"];
    if rules.audience.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&rules.audience);
        required.push("aud");
    }
    if !rules.issuer.is_empty() {
        v.set_issuer(&rules.issuer);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

/// Claims for a token that lives `ttl_secs` from now.
pub fn claims_for(sub: &str, ttl_secs: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: Some(sub.to_string()),
        exp: now + ttl_secs,
        iat: Some(now),
        ..Claims::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"unit-test-secret";

    fn signed(header: Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn code(r: Result<Identity, Error>) -> &'static str {
        r.expect_err("refused").code().as_str()
    }

    #[test]
    fn one_rule_for_time_to_the_millisecond() {
        let exp = 1_000;
        assert!(check_times(exp, None, exp * 1000 - 1).is_ok());
        let at_exp = check_times(exp, None, exp * 1000).unwrap_err();
        assert_eq!(at_exp.code(), ErrorCode::TokenExpired);
        assert!(check_times(exp, Some(500), 500_000).is_ok());
        let early = check_times(exp, Some(500), 499_999).unwrap_err();
        assert_eq!(early.code(), ErrorCode::InvalidToken);
        // Absurd times saturate instead of overflowing.
        assert!(check_times(i64::MAX, Some(i64::MIN), 0).is_ok());
    }

    #[test]
    fn a_crit_header_is_refused_whatever_it_names() {
        let auth = Authenticator::hs256(SECRET);
        let claims =
            serde_json::json!({"sub": "alice", "exp": chrono::Utc::now().timestamp() + 60});
        assert!(
            auth.verify(&signed(Header::new(Algorithm::HS256), &claims))
                .is_ok()
        );
        for crit in [vec!["exp".to_string()], vec!["b64".to_string()], vec![]] {
            let mut header = Header::new(Algorithm::HS256);
            header.crit = Some(crit);
            assert_eq!(code(auth.verify(&signed(header, &claims))), "invalid_token");
        }
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let auth = Authenticator::hs256(SECRET).with_rules(ClaimRules {
            audience: vec!["switchyard".into(), "other".into()],
            issuer: vec!["https://auth.example".into()],
        });
        let exp = chrono::Utc::now().timestamp() + 60;
        let token = |extra: serde_json::Value| {
            let mut claims = serde_json::json!({"sub": "alice", "exp": exp});
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            signed(Header::new(Algorithm::HS256), &claims)
        };
        let iss = "https://auth.example";
        assert!(
            auth.verify(&token(serde_json::json!({"aud": "switchyard", "iss": iss})))
                .is_ok()
        );
        assert!(
            auth.verify(&token(
                serde_json::json!({"aud": ["x", "other"], "iss": iss})
            ))
            .is_ok()
        );
        for bad in [
            serde_json::json!({"iss": iss}),
            serde_json::json!({"aud": "switchyard"}),
            serde_json::json!({"aud": "elsewhere", "iss": iss}),
            serde_json::json!({"aud": ["x"], "iss": iss}),
            serde_json::json!({"aud": "switchyard", "iss": "https://evil.example"}),
        ] {
            assert_eq!(
                code(auth.verify(&token(bad.clone()))),
                "invalid_token",
                "{bad}"
            );
        }
        // What the server mints, it accepts.
        let minted = auth.sign(&auth.claims_for("alice", 60)).unwrap();
        assert_eq!(auth.verify(&minted).unwrap().user_id, "alice");
    }

    #[test]
    fn without_rules_aud_and_iss_are_not_checked() {
        let auth = Authenticator::hs256(SECRET);
        let exp = chrono::Utc::now().timestamp() + 60;
        let claims =
            serde_json::json!({"sub": "alice", "exp": exp, "aud": "anyone", "iss": "anywhere"});
        assert!(
            auth.verify(&signed(Header::new(Algorithm::HS256), &claims))
                .is_ok()
        );
        // Not even their shape, as before these settings existed.
        let claims = serde_json::json!({"sub": "alice", "exp": exp, "aud": 7, "iss": ["x"]});
        assert!(
            auth.verify(&signed(Header::new(Algorithm::HS256), &claims))
                .is_ok()
        );
    }
}
