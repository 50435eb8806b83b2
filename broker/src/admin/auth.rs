//! Who may use the management API: HTTP Basic against the admin credentials file, or a JWT
//! bearer token verified with the configured key. Only `/healthz`, `/readyz` (and `/metrics`
//! when configured so) are open.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;

use super::AppState;
use super::error::{ApiError, code};
use crate::auth::{AuthOutcome, Authenticator};
use crate::config::{AdminConfig, AuthConfig};

/// Checks the credentials of a management request.
pub struct AdminAuth {
    users: Option<Authenticator>,
    jwt: Option<(DecodingKey, Validation)>,
    /// Basic credentials already verified (argon2 is slow by design), bounded.
    verified: Mutex<HashMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    #[error("admin.credentials_file: {0}")]
    Users(String),
    #[error("admin.jwt.key_file {path}: {message}")]
    Key { path: String, message: String },
    #[error("admin.jwt.algorithm: {0:?} is not one of HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384")]
    Algorithm(String),
}

const VERIFIED_MAX: usize = 64;

impl AdminAuth {
    pub fn load(cfg: &AdminConfig) -> Result<AdminAuth, AdminAuthError> {
        let users = match &cfg.credentials_file {
            Some(path) => Some(
                Authenticator::load(&AuthConfig {
                    credentials_file: Some(path.clone()),
                    allow_plaintext_passwords: cfg.allow_plaintext_passwords,
                    ..AuthConfig::default()
                })
                .map_err(|e| AdminAuthError::Users(e.to_string()))?,
            ),
            None => None,
        };
        let jwt = match &cfg.jwt {
            Some(j) => {
                let algorithm: Algorithm =
                    j.algorithm.parse().map_err(|_| AdminAuthError::Algorithm(j.algorithm.clone()))?;
                let key_err = |message: String| AdminAuthError::Key { path: j.key_file.display().to_string(), message };
                let bytes = std::fs::read(&j.key_file).map_err(|e| key_err(e.to_string()))?;
                let key = match algorithm {
                    Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                        DecodingKey::from_secret(trim_ascii_end(&bytes))
                    }
                    Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                        DecodingKey::from_rsa_pem(&bytes).map_err(|e| key_err(e.to_string()))?
                    }
                    Algorithm::ES256 | Algorithm::ES384 => {
                        DecodingKey::from_ec_pem(&bytes).map_err(|e| key_err(e.to_string()))?
                    }
                    _ => return Err(AdminAuthError::Algorithm(j.algorithm.clone())),
                };
                let mut validation = Validation::new(algorithm);
                validation.set_required_spec_claims(&["exp", "sub"]);
                Some((key, validation))
            }
            None => None,
        };
        if users.is_none() && jwt.is_none() {
            tracing::warn!(
                "admin API: no admin.credentials_file and no admin.jwt configured; accepting the default \
                 admin/public. Configure credentials before exposing port {}",
                cfg.bind.port()
            );
        }
        Ok(AdminAuth { users, jwt, verified: Mutex::new(HashMap::new()) })
    }

    fn check_basic(&self, user: &str, password: &str) -> bool {
        let Some(users) = &self.users else {
            // Only when nothing is configured (see the warning at start).
            return self.jwt.is_none() && user == "admin" && password == "public";
        };
        if self.verified.lock().get(user).is_some_and(|p| p == password) {
            return true;
        }
        let ok = matches!(users.check(false, Some(user), Some(password.as_bytes())), AuthOutcome::Accepted { .. });
        if ok {
            let mut verified = self.verified.lock();
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(user.to_string(), password.to_string());
        }
        ok
    }

    fn check_bearer(&self, token: &str) -> Result<String, ApiError> {
        let Some((key, validation)) = &self.jwt else {
            return Err(ApiError::unauthorized(code::BAD_CREDENTIALS, "bearer tokens are not configured"));
        };
        #[derive(serde::Deserialize)]
        struct Claims {
            sub: String,
        }
        match jsonwebtoken::decode::<Claims>(token, key, validation) {
            Ok(t) => Ok(t.claims.sub),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(ApiError::unauthorized(code::TOKEN_EXPIRED, "token expired"))
            }
            Err(e) => Err(ApiError::unauthorized(code::BAD_CREDENTIALS, format!("invalid token: {e}"))),
        }
    }

    /// The authenticated user of a request, or the 401 to answer.
    pub fn authenticate(&self, header: Option<&str>) -> Result<String, ApiError> {
        let Some(header) = header else {
            return Err(ApiError::unauthorized(code::BAD_CREDENTIALS, "authentication required"));
        };
        if let Some(token) = header.strip_prefix("Bearer ") {
            return self.check_bearer(token.trim());
        }
        let bad = || ApiError::unauthorized(code::BAD_CREDENTIALS, "bad user name or password");
        let encoded = header.strip_prefix("Basic ").ok_or_else(bad)?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
        let text = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, password) = text.split_once(':').ok_or_else(bad)?;
        if self.check_basic(user, password) { Ok(user.to_string()) } else { Err(bad()) }
    }
}

fn trim_ascii_end(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &b[..end]
}

/// Middleware on every `/api/v1` route.
pub async fn require_auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Result<Response, ApiError> {
    let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let user = state.auth.authenticate(header)?;
    tracing::Span::current().record("user", user.as_str());
    Ok(next.run(req).await)
}
