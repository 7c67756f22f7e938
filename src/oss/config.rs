//! OSS settings, read once from the environment at startup.

use std::time::Duration;

use super::OssError;
use super::url::{AllowList, Endpoint};

/// Default prefix under which result objects are written (`results/<key>.json`).
pub const DEFAULT_RESULT_PREFIX: &str = "results/";
/// Default cap on downloaded objects: 32 MiB, the FC synchronous request body limit.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 32 * 1024 * 1024;

/// How the OSS service behaves; every field has a documented default.
#[derive(Debug, Clone, PartialEq)]
pub struct OssConfig {
    /// `OSS_ENDPOINT`: send every request here instead of the region's internal endpoint.
    pub endpoint: Option<Endpoint>,
    /// `OSS_ALLOWED_HOSTS`: non-OSS `host:port` entries that may be contacted (tests only).
    pub allow: AllowList,
    /// `FC_REGION`: the function's region, used when a request carries none.
    pub region: Option<String>,
    /// `RESULT_PREFIX` (default `results/`): where result objects go; keys under it are skipped.
    pub result_prefix: String,
    /// `RESULT_BUCKET`: bucket for result objects (default: the source bucket).
    pub result_bucket: Option<String>,
    /// `OSS_MAX_OBJECT_BYTES` (default 32 MiB): larger downloads are aborted (413).
    pub max_object_bytes: u64,
    /// `OSS_CONNECT_TIMEOUT_MS` (default 3000).
    pub connect_timeout: Duration,
    /// `OSS_READ_TIMEOUT_MS` (default 10000): longest wait for any read, headers or body.
    pub read_timeout: Duration,
    /// `OSS_REQUEST_TIMEOUT_MS` (default 60000): longest single attempt, end to end.
    pub request_timeout: Duration,
    /// `OSS_MAX_ATTEMPTS` (default 3): tries per request on 5xx and connection errors.
    pub max_attempts: u32,
    /// `OSS_RETRY_BASE_MS` (default 100): first backoff delay, doubled per retry.
    pub retry_base_delay: Duration,
}

impl Default for OssConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            allow: AllowList::default(),
            region: None,
            result_prefix: DEFAULT_RESULT_PREFIX.to_string(),
            result_bucket: None,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            connect_timeout: Duration::from_millis(3000),
            read_timeout: Duration::from_millis(10_000),
            request_timeout: Duration::from_millis(60_000),
            max_attempts: 3,
            retry_base_delay: Duration::from_millis(100),
        }
    }
}

impl OssConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, OssError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (tests pass a map instead of the environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, OssError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string());
        let set = |name: &str| get(name).filter(|v| !v.is_empty());
        let defaults = Self::default();
        let allow = AllowList::parse(&get("OSS_ALLOWED_HOSTS").unwrap_or_default())?;
        let endpoint = set("OSS_ENDPOINT")
            .map(|e| Endpoint::parse(&e, &allow))
            .transpose()?;
        let ms = |name: &str, default: Duration| -> Result<Duration, OssError> {
            Ok(parse_number(name, set(name))?.map_or(default, Duration::from_millis))
        };
        let config = Self {
            endpoint,
            allow,
            region: set("FC_REGION"),
            result_prefix: get("RESULT_PREFIX").unwrap_or(defaults.result_prefix),
            result_bucket: set("RESULT_BUCKET"),
            max_object_bytes: parse_number("OSS_MAX_OBJECT_BYTES", set("OSS_MAX_OBJECT_BYTES"))?
                .unwrap_or(defaults.max_object_bytes),
            connect_timeout: ms("OSS_CONNECT_TIMEOUT_MS", defaults.connect_timeout)?,
            read_timeout: ms("OSS_READ_TIMEOUT_MS", defaults.read_timeout)?,
            request_timeout: ms("OSS_REQUEST_TIMEOUT_MS", defaults.request_timeout)?,
            max_attempts: parse_number("OSS_MAX_ATTEMPTS", set("OSS_MAX_ATTEMPTS"))?
                .map_or(defaults.max_attempts, |n| n.clamp(1, 10) as u32),
            retry_base_delay: ms("OSS_RETRY_BASE_MS", defaults.retry_base_delay)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Refuses settings that would make the upload trigger call itself forever.
    pub fn validate(&self) -> Result<(), OssError> {
        if self.result_prefix.is_empty() && self.result_bucket.is_none() {
            return Err(OssError::Config(
                "RESULT_PREFIX is empty and RESULT_BUCKET unset: results would land next to the \
                 uploads and re-trigger the function; set a prefix such as results/"
                    .into(),
            ));
        }
        Ok(())
    }
}

fn parse_number(name: &str, value: Option<String>) -> Result<Option<u64>, OssError> {
    value
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| OssError::Config(format!("{name} must be a whole number, got {v:?}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<OssConfig, OssError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OssConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = from(&[]).unwrap();
        assert_eq!(c.result_prefix, "results/");
        assert_eq!(c.max_object_bytes, 32 * 1024 * 1024);
        assert_eq!(c.endpoint, None);
        assert_eq!(c.max_attempts, 3);
    }

    #[test]
    fn variables_are_read() {
        let c = from(&[
            ("OSS_ALLOWED_HOSTS", "127.0.0.1:9100"),
            ("OSS_ENDPOINT", "http://127.0.0.1:9100"),
            ("FC_REGION", "cn-shanghai"),
            ("RESULT_PREFIX", "out/"),
            ("RESULT_BUCKET", "results-bucket"),
            ("OSS_MAX_OBJECT_BYTES", "1024"),
            ("OSS_READ_TIMEOUT_MS", "250"),
            ("OSS_MAX_ATTEMPTS", "5"),
        ])
        .unwrap();
        assert!(c.endpoint.is_some());
        assert_eq!(c.region.as_deref(), Some("cn-shanghai"));
        assert_eq!(c.result_prefix, "out/");
        assert_eq!(c.result_bucket.as_deref(), Some("results-bucket"));
        assert_eq!(c.max_object_bytes, 1024);
        assert_eq!(c.read_timeout, Duration::from_millis(250));
        assert_eq!(c.max_attempts, 5);
    }

    #[test]
    fn bad_values_are_configuration_errors() {
        for pairs in [
            &[("OSS_MAX_OBJECT_BYTES", "lots")][..],
            &[("OSS_ENDPOINT", "http://10.0.0.1:80")][..],
            &[("RESULT_PREFIX", "")][..],
        ] {
            assert!(matches!(from(pairs), Err(OssError::Config(_))), "{pairs:?}");
        }
    }
}
