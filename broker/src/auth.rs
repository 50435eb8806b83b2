//! Client authentication: the credentials file (argon2 or bcrypt password hashes, plain text
//! only when explicitly allowed), anonymous access, and the tenant a connection belongs to.

use std::collections::HashMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Deserialize;

use crate::config::{AuthConfig, TenancyConfig, TenantRule};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("credentials file {path}: {message}")]
    File { path: String, message: String },
    #[error("cannot hash password: {0}")]
    Hash(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    /// argon2 PHC string (`$argon2id$...`) or bcrypt (`$2b$...`).
    password_hash: Option<String>,
    /// Plain-text password; refused unless `auth.allow_plaintext_passwords`.
    password: Option<String>,
    tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

/// The outcome of checking a CONNECT's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Accepted; the user's entry may pin a tenant.
    Accepted {
        tenant: Option<String>,
    },
    BadCredentials,
    NotAuthorized,
}

pub struct Authenticator {
    users: HashMap<String, UserEntry>,
}

impl Authenticator {
    pub fn load(cfg: &AuthConfig) -> Result<Authenticator, AuthError> {
        let mut users = HashMap::new();
        if let Some(path) = &cfg.credentials_file {
            let err = |message: String| AuthError::File { path: path.display().to_string(), message };
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let file: CredentialsFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            for u in file.users {
                match (&u.password_hash, &u.password) {
                    (Some(h), None) => {
                        if !(h.starts_with("$argon2") || h.starts_with("$2")) {
                            return Err(err(format!("user {}: password_hash must be argon2 or bcrypt", u.username)));
                        }
                    }
                    (None, Some(_)) if cfg.allow_plaintext_passwords => {}
                    (None, Some(_)) => {
                        return Err(err(format!(
                            "user {}: plain-text password given but auth.allow_plaintext_passwords is off",
                            u.username
                        )));
                    }
                    _ => {
                        return Err(err(format!("user {}: give exactly one of password_hash or password", u.username)));
                    }
                }
                users.insert(u.username.clone(), u);
            }
        }
        Ok(Authenticator { users })
    }

    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks credentials (CPU-heavy for argon2: call from a blocking task).
    pub fn check(&self, allow_anonymous: bool, username: Option<&str>, password: Option<&[u8]>) -> AuthOutcome {
        let Some(username) = username else {
            return if allow_anonymous { AuthOutcome::Accepted { tenant: None } } else { AuthOutcome::NotAuthorized };
        };
        let Some(entry) = self.users.get(username) else {
            // Without a credentials file, a username is only a label.
            return if self.users.is_empty() && allow_anonymous {
                AuthOutcome::Accepted { tenant: None }
            } else {
                AuthOutcome::BadCredentials
            };
        };
        let Some(password) = password else { return AuthOutcome::BadCredentials };
        let ok = match (&entry.password_hash, &entry.password) {
            (Some(hash), _) if hash.starts_with("$argon2") => PasswordHash::new(hash)
                .map(|h| argon2::Argon2::default().verify_password(password, &h).is_ok())
                .unwrap_or(false),
            (Some(hash), _) => bcrypt::verify(password, hash).unwrap_or(false),
            (None, Some(plain)) => plain.as_bytes() == password,
            (None, None) => false,
        };
        if ok { AuthOutcome::Accepted { tenant: entry.tenant.clone() } } else { AuthOutcome::BadCredentials }
    }
}

/// An argon2id PHC string for `password`, for the credentials file.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Identity read from a verified client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertIdentity {
    pub common_name: Option<String>,
    pub organization: Option<String>,
}

/// The tenant of a connection: a credentials entry's tenant wins, then the configured rule,
/// then the default tenant.
pub fn derive_tenant(
    cfg: &TenancyConfig,
    entry_tenant: Option<String>,
    username: Option<&str>,
    cert: Option<&CertIdentity>,
) -> String {
    let derived = entry_tenant.or_else(|| match cfg.rule {
        TenantRule::Fixed => None,
        TenantRule::UsernamePrefix => username
            .and_then(|u| u.split_once(cfg.separator.as_str()))
            .map(|(t, _)| t.to_string())
            .filter(|t| !t.is_empty()),
        TenantRule::CertOrganization => cert.and_then(|c| c.organization.clone()),
        TenantRule::CertCommonName => cert.and_then(|c| c.common_name.clone()),
    });
    derived.filter(|t| !t.contains('\0')).unwrap_or_else(|| cfg.default_tenant.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(file: &str, plain: bool) -> Result<Authenticator, AuthError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, file).unwrap();
        Authenticator::load(&AuthConfig {
            allow_anonymous: false,
            credentials_file: Some(path),
            allow_plaintext_passwords: plain,
            use_identity_as_username: false,
        })
    }

    #[test]
    fn argon2_and_bcrypt_hashes_verify() {
        let a = hash_password("s3cret").unwrap();
        let b = bcrypt::hash("other", 4).unwrap();
        let auth = auth_with(
            &format!(
                "[[users]]\nusername = \"alice\"\npassword_hash = '{a}'\ntenant = \"acme\"\n[[users]]\nusername = \"bob\"\npassword_hash = '{b}'\n"
            ),
            false,
        )
        .unwrap();
        assert_eq!(
            auth.check(false, Some("alice"), Some(b"s3cret")),
            AuthOutcome::Accepted { tenant: Some("acme".into()) }
        );
        assert_eq!(auth.check(false, Some("alice"), Some(b"wrong")), AuthOutcome::BadCredentials);
        assert_eq!(auth.check(false, Some("bob"), Some(b"other")), AuthOutcome::Accepted { tenant: None });
        assert_eq!(auth.check(false, Some("carol"), Some(b"x")), AuthOutcome::BadCredentials);
        assert_eq!(auth.check(false, None, None), AuthOutcome::NotAuthorized);
        assert_eq!(auth.check(true, None, None), AuthOutcome::Accepted { tenant: None });
    }

    #[test]
    fn plaintext_needs_explicit_opt_in() {
        let f = "[[users]]\nusername = \"u\"\npassword = \"p\"\n";
        assert!(
            auth_with(f, false).err().map(|e| e.to_string()).unwrap_or_default().contains("allow_plaintext_passwords")
        );
        assert_eq!(
            auth_with(f, true).unwrap().check(false, Some("u"), Some(b"p")),
            AuthOutcome::Accepted { tenant: None }
        );
    }

    #[test]
    fn tenant_rules() {
        let mut cfg = TenancyConfig { rule: TenantRule::UsernamePrefix, ..Default::default() };
        assert_eq!(derive_tenant(&cfg, None, Some("acme/alice"), None), "acme");
        assert_eq!(derive_tenant(&cfg, None, Some("alice"), None), "global");
        assert_eq!(derive_tenant(&cfg, Some("pinned".into()), Some("acme/alice"), None), "pinned");
        cfg.rule = TenantRule::CertOrganization;
        let cert = CertIdentity { common_name: Some("dev1".into()), organization: Some("org1".into()) };
        assert_eq!(derive_tenant(&cfg, None, None, Some(&cert)), "org1");
    }
}
