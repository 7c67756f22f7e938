//! Access keys for OSS, taken per request (STS tokens rotate).

/// Environment variable with the access key id (FC sets it from the function role).
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// Environment variable with the access key secret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// Environment variable with the STS security token.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

/// An access key pair, with an STS security token when temporary.
///
/// `Debug` shows only a prefix of the key id: the secret and the token never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: Option<String>,
}

impl Credentials {
    /// Credentials from their parts; an empty token counts as none.
    pub fn new(id: &str, secret: &str, token: Option<&str>) -> Self {
        Self {
            access_key_id: id.to_string(),
            access_key_secret: secret.to_string(),
            security_token: token.filter(|t| !t.is_empty()).map(str::to_string),
        }
    }

    /// Credentials from possibly empty values (FC sends empty `x-fc-access-key-*` headers when
    /// the function has no role): `None` unless both id and secret are non-empty.
    pub fn from_parts(id: Option<&str>, secret: Option<&str>, token: Option<&str>) -> Option<Self> {
        let id = id.map(str::trim).filter(|s| !s.is_empty())?;
        let secret = secret.map(str::trim).filter(|s| !s.is_empty())?;
        Some(Self::new(id, secret, token.map(str::trim)))
    }

    /// Credentials from a variable lookup (`ALIBABA_CLOUD_ACCESS_KEY_ID`, `…_SECRET`,
    /// `ALIBABA_CLOUD_SECURITY_TOKEN`); `from_env` passes `std::env::var`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let id = lookup(ENV_ACCESS_KEY_ID);
        let secret = lookup(ENV_ACCESS_KEY_SECRET);
        let token = lookup(ENV_SECURITY_TOKEN);
        Self::from_parts(id.as_deref(), secret.as_deref(), token.as_deref())
    }

    /// Credentials from the process environment, read now (FC refreshes them).
    pub fn from_env() -> Option<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The access key id (`STS.…` for temporary keys).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The access key secret. Only the signer should read it.
    pub fn access_key_secret(&self) -> &str {
        &self.access_key_secret
    }

    /// The STS security token, if the keys are temporary.
    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_deref()
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = self.access_key_id.chars().take(4).collect();
        f.debug_struct("Credentials")
            .field("access_key_id", &format!("{shown}…"))
            .field("access_key_secret", &"<redacted>")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret_and_token() {
        let c = Credentials::new("STS.NabcdefKEYID", "s3cr3t-value", Some("CAIStoken-value"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("CAIStoken-value"), "{shown}");
        assert!(!shown.contains("NabcdefKEYID"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn empty_parts_mean_no_credentials() {
        assert_eq!(Credentials::from_parts(Some(""), Some(""), Some("")), None);
        assert_eq!(Credentials::from_parts(Some("id"), None, None), None);
        let c = Credentials::from_parts(Some("id"), Some("sk"), Some("")).unwrap();
        assert_eq!(c.security_token(), None);
    }

    #[test]
    fn lookup_reads_the_alibaba_cloud_variables() {
        let c = Credentials::from_lookup(|name| match name {
            ENV_ACCESS_KEY_ID => Some("id".into()),
            ENV_ACCESS_KEY_SECRET => Some("sk".into()),
            ENV_SECURITY_TOKEN => Some("tok".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (c.access_key_id(), c.access_key_secret(), c.security_token()),
            ("id", "sk", Some("tok"))
        );
        assert_eq!(Credentials::from_lookup(|_| None), None);
    }
}
