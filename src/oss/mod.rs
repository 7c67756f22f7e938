//! Alibaba Cloud OSS: images named by URL, upload events, results written back.
//!
//! - [`url`]: which object a URL names and where requests may go (refusing everything else);
//! - [`sign`]: OSS signature V4 (`OSS4-HMAC-SHA256`) with STS tokens, written in-house over
//!   `hmac`/`sha2` and proven by the known-answer vectors of docs/function-compute.md §3;
//! - [`client`](self::OssService): GetObject/PutObject with a size cap, timeouts and retries;
//! - [`event`]: OSS trigger events → classify each new object → `results/<key>.json`.
//!
//! A leaf: it knows nothing of the model (classification is a callback returning its own
//! outcome type, [`event::ClassifyFailure`], which decides retries), of HTTP answers or of FC
//! headers (the composition root, `src/app/oss.rs`, turns the request's FC context into an
//! [`Access`]).

mod client;
pub mod config;
mod error;
pub mod event;
pub mod sign;
pub mod url;

use bytes::Bytes;

pub use crate::credentials::Credentials;
pub use config::OssConfig;
pub use error::OssError;
pub use url::{Location, ObjectRef};

use self::client::Transport;
use self::url::ResolveContext;

/// What a request brings: its credentials (FC headers, else `ALIBABA_CLOUD_*` env) and region
/// (`x-fc-region`, else `FC_REGION`). Taken per request because STS tokens rotate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Keys to sign with; `None` sends anonymous requests (public-read buckets).
    pub credentials: Option<Credentials>,
    /// The function's region, when the request names it.
    pub region: Option<String>,
}

/// The OSS client of the function: configuration plus a pooled HTTP client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OssService {
    config: OssConfig,
    transport: Transport,
}

impl OssService {
    /// Builds the service (validates `config`, builds the rustls HTTP client).
    pub fn new(config: OssConfig) -> Result<Self, OssError> {
        config.validate()?;
        let transport = Transport::new(&config)?;
        Ok(Self { config, transport })
    }

    /// The configuration in use.
    pub fn config(&self) -> &OssConfig {
        &self.config
    }

    fn context<'a>(&'a self, access: &'a Access) -> ResolveContext<'a> {
        ResolveContext {
            endpoint: self.config.endpoint.as_ref(),
            allow: &self.config.allow,
            region: access.region.as_deref().or(self.config.region.as_deref()),
        }
    }

    /// Resolves a client-supplied URL (`oss://…`, bucket domain, allow-listed host) without
    /// contacting anything; unsafe URLs give [`OssError::RefusedUrl`].
    pub fn resolve(&self, url: &str, access: &Access) -> Result<Location, OssError> {
        self.context(access).resolve(url)
    }

    /// Where `object` lives for this request (`region` overrides the request's region).
    pub fn locate(
        &self,
        object: ObjectRef,
        region: Option<&str>,
        access: &Access,
    ) -> Result<Location, OssError> {
        self.context(access).locate(object, region)
    }

    /// Downloads the image a client named by URL: resolve (refusing unsafe URLs before any
    /// connection), then GetObject with the size cap.
    pub async fn fetch_image(&self, url: &str, access: &Access) -> Result<Bytes, OssError> {
        let location = self.resolve(url, access)?;
        self.get_object(&location, access).await
    }

    /// GetObject, streamed, aborted past `max_object_bytes` (413), retried on 5xx.
    pub async fn get_object(
        &self,
        location: &Location,
        access: &Access,
    ) -> Result<Bytes, OssError> {
        self.transport
            .get(
                location,
                access.credentials.as_ref(),
                self.config.max_object_bytes,
            )
            .await
    }

    /// PutObject of `body` with `content_type`, overwriting any existing object.
    pub async fn put_object(
        &self,
        location: &Location,
        body: Bytes,
        content_type: &str,
        access: &Access,
    ) -> Result<(), OssError> {
        self.transport
            .put(location, access.credentials.as_ref(), body, content_type)
            .await
    }
}
