//! GetObject and PutObject over reqwest + rustls: signed, size-capped, timed out, retried.
//!
//! Retry policy: 5xx answers, connection failures and cut-off bodies are retried up to
//! `max_attempts` in total, with exponential backoff from `retry_base_delay`. Timeouts are not
//! retried (the caller's own deadline is usually the tighter one) and map to 504. Redirects are
//! never followed: the `x-oss-security-token` header would travel to whatever host they name.

use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, Response, StatusCode, redirect};

use super::sign::{self, SigningRequest};
use super::url::Location;
use super::{Credentials, OssConfig, OssError};

/// Largest OSS error body read to extract `<Code>`/`<Message>`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One attempt's failure: worth retrying or not.
enum Failure {
    Retry(OssError),
    Stop(OssError),
}

/// A reqwest client configured for OSS, with the retry policy of [`OssConfig`].
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    max_attempts: u32,
    retry_base_delay: Duration,
}

impl Transport {
    /// Builds the HTTP client: rustls (ring), no proxy, no redirects, the configured timeouts.
    pub(crate) fn new(config: &OssConfig) -> Result<Self, OssError> {
        // Fails only when a provider is already installed, which is what we want anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("resnet18-fc/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OssError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            max_attempts: config.max_attempts.max(1),
            retry_base_delay: config.retry_base_delay,
        })
    }

    /// Downloads the object at `location`, aborting once more than `cap` bytes arrive.
    pub(crate) async fn get(
        &self,
        location: &Location,
        credentials: Option<&Credentials>,
        cap: u64,
    ) -> Result<Bytes, OssError> {
        self.with_retries(location, || async {
            let response = self.send(Method::GET, location, credentials, None).await?;
            let response = check_status(response, location).await?;
            read_capped(response, cap, location).await
        })
        .await
    }

    /// Uploads `body` as the object at `location` (overwriting it; PutObject is idempotent).
    pub(crate) async fn put(
        &self,
        location: &Location,
        credentials: Option<&Credentials>,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), OssError> {
        self.with_retries(location, || async {
            let payload = Some((body.clone(), content_type));
            let response = self
                .send(Method::PUT, location, credentials, payload)
                .await?;
            check_status(response, location).await.map(drop)
        })
        .await
    }

    async fn with_retries<T, F, Fut>(&self, location: &Location, attempt: F) -> Result<T, OssError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut delay = self.retry_base_delay;
        for n in 1..=self.max_attempts {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Failure::Stop(e)) => return Err(e),
                Err(Failure::Retry(e)) if n == self.max_attempts => return Err(e),
                Err(Failure::Retry(e)) => {
                    tracing::warn!(object = %location.object, attempt = n, error = %e, "retrying OSS request");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                }
            }
        }
        Err(OssError::Upstream {
            object: location.object.to_string(),
            reason: "no attempt was made".into(),
        })
    }

    async fn send(
        &self,
        method: Method,
        location: &Location,
        credentials: Option<&Credentials>,
        payload: Option<(Bytes, &str)>,
    ) -> Result<Response, Failure> {
        let mut headers = Vec::new();
        if let Some((_, content_type)) = &payload {
            headers.push(("content-type".to_string(), content_type.to_string()));
        }
        if let Some(credentials) = credentials {
            let request = SigningRequest {
                method: method.as_str(),
                bucket: Some(location.object.bucket()),
                key: Some(location.object.key()),
                query: "",
                headers,
                additional_headers: &[],
            };
            headers =
                sign::sign(&request, credentials, &location.region, SystemTime::now()).headers;
        }
        let url = location.endpoint.object_url(&location.object);
        let mut builder = self.http.request(method, url);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        if let Some((body, _)) = payload {
            builder = builder.body(body);
        }
        builder
            .send()
            .await
            .map_err(|e| transport_failure(e, location))
    }
}

/// Maps a reqwest error: timeouts stop (504), everything else on the wire is retried (502).
fn transport_failure(error: reqwest::Error, location: &Location) -> Failure {
    let object = location.object.to_string();
    if error.is_timeout() {
        return Failure::Stop(OssError::Timeout { object });
    }
    let what = if error.is_connect() {
        "cannot connect to OSS"
    } else if error.is_body() || error.is_decode() {
        "the response body was cut off"
    } else {
        "the request failed"
    };
    // `without_url`: the URL holds no secret, but keep messages short and uniform.
    let reason = format!("{what}: {}", error.without_url());
    Failure::Retry(OssError::Upstream { object, reason })
}

async fn check_status(response: Response, location: &Location) -> Result<Response, Failure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let object = location.object.to_string();
    if status.is_redirection() {
        return Err(Failure::Stop(OssError::Upstream {
            object,
            reason: format!("OSS answered {status} with a redirect, which is not followed"),
        }));
    }
    let body = read_error_body(response).await;
    let code = xml_field(&body, "Code").unwrap_or_else(|| status.as_str().to_string());
    let message = xml_field(&body, "Message").unwrap_or_default();
    Err(match status {
        StatusCode::FORBIDDEN => Failure::Stop(OssError::Forbidden {
            object,
            code,
            message,
        }),
        StatusCode::NOT_FOUND => Failure::Stop(OssError::NotFound { object, code }),
        s if s.is_server_error() => Failure::Retry(OssError::Upstream {
            object,
            reason: format!("OSS answered {s} {code}"),
        }),
        s => Failure::Stop(OssError::Upstream {
            object,
            reason: format!("OSS answered {s} {code}: {message}"),
        }),
    })
}

async fn read_error_body(mut response: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Text of the first `<name>…</name>` element of an OSS error document.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_string())
}

async fn read_capped(
    mut response: Response,
    cap: u64,
    location: &Location,
) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::Stop(OssError::TooLarge {
            object: location.object.to_string(),
            limit: cap,
        })
    };
    if response.content_length().is_some_and(|len| len > cap) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_failure(e, location))?
    {
        if (body.len() + chunk.len()) as u64 > cap {
            // Dropping the response closes the connection: the rest is never transferred.
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_oss_error_fields() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>\
                    <Message>The specified key does not exist.</Message></Error>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(
            xml_field(body, "Message").as_deref(),
            Some("The specified key does not exist.")
        );
        assert_eq!(xml_field(body, "RequestId"), None);
        assert_eq!(xml_field("<Code>unterminated", "Code"), None);
    }
}
