//! The Secret with the management API's credentials: the login the operator uses (`username`,
//! `password`) and the broker's `[[users]]` file (`credentials.toml`) that the pods mount.
//!
//! The password is generated once (when the spec names no Secret) and never rotated by the
//! operator. The broker's file holds an argon2id hash, not the password: the pods mount only
//! `credentials.toml`, so a broker pod's filesystem never shows the plain password, and the
//! broker keeps its default of refusing plain-text entries. Hashing costs the operator one
//! argon2 run per cluster, at creation.

use std::collections::BTreeMap;

use argon2::password_hash::{PasswordHasher, SaltString};
use crds::broker_cluster::BrokerCluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Names, owned_meta};
use crate::Error;

/// Secret keys.
pub const USERNAME_KEY: &str = "username";
pub const PASSWORD_KEY: &str = "password";
pub const CREDENTIALS_KEY: &str = "credentials.toml";

/// The user the generated Secret defines.
pub const ADMIN_USER: &str = "admin";

/// What the operator logs in with.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for AdminCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminCredentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl AdminCredentials {
    /// `admin` with 32 random alphanumeric characters (about 190 bits).
    pub fn generate() -> AdminCredentials {
        let password: String = rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
        AdminCredentials { username: ADMIN_USER.into(), password }
    }
}

/// An argon2id PHC string (the broker's default parameters) for `password`.
pub fn hash_password(password: &str) -> Result<String, Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| Error::Credentials(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Credentials(format!("hashing the admin password: {e}")))
}

/// The broker's credentials file with one user.
pub fn credentials_toml(username: &str, password_hash: &str) -> String {
    let mut user = toml::Table::new();
    user.insert("username".into(), username.into());
    user.insert("password_hash".into(), password_hash.into());
    let mut root = toml::Table::new();
    root.insert("users".into(), toml::Value::Array(vec![user.into()]));
    toml::to_string(&root).unwrap_or_default()
}

/// The generated admin Secret `<cluster>-admin` (created once, never applied over).
pub fn admin_secret(bc: &BrokerCluster, creds: &AdminCredentials, password_hash: &str) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: owned_meta(bc, &Names::of(bc).generated_admin_secret),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (USERNAME_KEY.to_string(), bytes(&creds.username)),
            (PASSWORD_KEY.to_string(), bytes(&creds.password)),
            (CREDENTIALS_KEY.to_string(), bytes(&credentials_toml(&creds.username, password_hash))),
        ])),
        ..Secret::default()
    }
}

/// Reads the login and the broker's file out of an admin Secret (generated or given); the
/// message names what is missing.
pub fn read_admin_secret(secret: &Secret) -> Result<(AdminCredentials, String), Error> {
    let name = secret.metadata.name.as_deref().unwrap_or("admin secret");
    let get = |key: &str| -> Result<String, Error> {
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).cloned())
            .ok_or_else(|| Error::Credentials(format!("Secret {name} has no key {key:?}")))?;
        if value.is_empty() {
            return Err(Error::Credentials(format!("Secret {name}: key {key:?} is empty")));
        }
        Ok(value)
    };
    let creds = AdminCredentials { username: get(USERNAME_KEY)?, password: get(PASSWORD_KEY)? };
    Ok((creds, get(CREDENTIALS_KEY)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;
    use argon2::password_hash::{PasswordHash, PasswordVerifier};

    #[test]
    fn generated_secret_round_trips_and_the_hash_verifies() {
        let bc = cluster("demo", serde_json::json!({}));
        let creds = AdminCredentials::generate();
        assert_eq!(creds.password.len(), 32);
        assert_ne!(creds, AdminCredentials::generate());
        let hash = hash_password(&creds.password).unwrap();
        let secret = admin_secret(&bc, &creds, &hash);
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-admin"));
        assert!(secret.metadata.owner_references.is_some());

        let (read, file) = read_admin_secret(&secret).unwrap();
        assert_eq!(read, creds);
        assert!(!file.contains(&creds.password));
        let parsed: toml::Table = toml::from_str(&file).unwrap();
        let user = &parsed["users"].as_array().unwrap()[0];
        assert_eq!(user["username"].as_str(), Some("admin"));
        let phc = user["password_hash"].as_str().unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let parsed = PasswordHash::new(phc).unwrap();
        assert!(argon2::Argon2::default().verify_password(creds.password.as_bytes(), &parsed).is_ok());
        assert!(!format!("{creds:?}").contains(&creds.password));
    }

    #[test]
    fn a_given_secret_missing_a_key_is_named() {
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("mine".into()),
                ..Default::default()
            },
            string_data: Some(BTreeMap::from([("username".into(), "ops".into()), ("password".into(), "pw".into())])),
            ..Secret::default()
        };
        let err = read_admin_secret(&secret).unwrap_err().to_string();
        assert!(err.contains("mine") && err.contains("credentials.toml"), "{err}");
    }
}
