//! [`Credentials`]: the access keys of the function's role, as FC hands them over (request
//! headers or environment, read by [`crate::fc`]) and as OSS signs with them ([`crate::oss`]).
//! Taken per request: STS tokens rotate.

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
        assert_eq!(c.access_key_secret(), "s3cr3t-value");
        assert_eq!(c.security_token(), Some("CAIStoken-value"));
    }

    #[test]
    fn an_empty_token_is_no_token() {
        assert_eq!(Credentials::new("id", "s", Some("")).security_token(), None);
    }
}
