//! Identity from JWTs (PROTOCOL §1).
//!
//! [`Authenticator`] verifies a token with the one configured algorithm
//! (HS256 with a shared secret, or RS256/ES256 with a PEM public key) and
//! turns its claims into an [`Identity`]. Invariants: `alg: none`, any other
//! algorithm, a bad signature and a missing `exp` are all rejected; an
//! expired token is `token_expired`, every other defect `invalid_token`.
//!
//! A token that verified is remembered (bounded), so a client repeating it
//! (long polling back to back) skips the signature and JSON work; its expiry
//! is still checked on every use, exactly as a full verification would.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::channel::is_valid_id;
use crate::error::{ApiError, ErrorCode};

/// The tenant of tokens that name none.
pub const DEFAULT_TENANT: &str = "default";

/// Claims as they appear in a token; see PROTOCOL §1.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
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

/// Who is asking, after the token has been verified.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub tenant: String,
    pub name: Option<String>,
    pub avatar: Option<String>,
    /// Channel patterns readable beyond the namespace defaults.
    pub channels: Vec<String>,
    /// Channel patterns writable with `POST /realtime/publish`.
    pub publish: Vec<String>,
    /// A trusted backend: may read and write every channel of its tenant.
    pub is_service: bool,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
}

impl Identity {
    fn from_claims(claims: Claims) -> Result<Self, ApiError> {
        let invalid = |m: &str| ApiError::new(ErrorCode::InvalidToken, m.to_string());
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
            if value
                .as_deref()
                .is_some_and(|v| v.chars().any(char::is_control) || v.chars().count() > 512)
            {
                return Err(invalid(&format!(
                    "Token {claim} must be at most 512 characters, none of them control characters"
                )));
            }
        }
        Ok(Self {
            user_id,
            tenant,
            name: claims.name,
            avatar: claims.avatar,
            channels: claims.channels,
            publish: claims.publish,
            is_service: claims.role.as_deref() == Some("service"),
            expires_at: claims.exp,
        })
    }
}

/// Verifies tokens; built once from configuration.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
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
            validation: validation(Algorithm::HS256),
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
            validation: validation(alg),
            signer: None,
            verified: Mutex::default(),
        })
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, ApiError> {
        if let Some(who) = self.verified.lock().expect("verified lock").get(token) {
            // As jsonwebtoken checks it, without leeway: expired once `exp`
            // is in the past.
            if who.expires_at < chrono::Utc::now().timestamp() {
                return Err(ApiError::new(ErrorCode::TokenExpired, "Token has expired"));
            }
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

    fn verify_signed(&self, token: &str) -> Result<Identity, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    ApiError::new(ErrorCode::TokenExpired, "Token has expired")
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    ApiError::new(ErrorCode::InvalidToken, format!("Token has no {c} claim"))
                }
                ErrorKind::InvalidAlgorithm => ApiError::new(
                    ErrorCode::InvalidToken,
                    "Token is signed with an algorithm this server does not accept",
                ),
                ErrorKind::InvalidSignature => {
                    ApiError::new(ErrorCode::InvalidToken, "Token signature does not verify")
                }
                _ => ApiError::new(ErrorCode::InvalidToken, "Token is malformed"),
            },
        )?;
        Identity::from_claims(data.claims)
    }

    /// Signs `claims` (HS256 only); `None` when the server holds only a public key.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let signer = self.signer.as_ref()?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, signer).ok()
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    // Expiry is exact: the protocol promises `token_expired` at `exp`.
    v.leeway = 0;
    v.validate_aud = false;
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
