//! Which OSS object a URL names, and where to send the request — or why not to.
//!
//! Accepted forms (docs/function-compute.md §3, "Endpoints"):
//! - `oss://bucket/key` (ossutil notation; the key is taken as written, not decoded);
//! - `https://bucket.oss-<region>[-internal].aliyuncs.com/key` (bucket domain; the path is
//!   percent-decoded to get the key);
//! - `http(s)://host[:port]/bucket/key` only when `host:port` is on the explicit allow-list
//!   (OSS-compatible test servers, which have no per-bucket DNS, so path-style addressing).
//!
//! Everything else — other hosts, IP literals, loopback, the metadata address, `file:`, `ftp:`,
//! user info, queries, malformed bucket names — is refused here, before any connection is made.

use std::fmt;

use url::{Host, Url};

use super::OssError;
use super::sign::encode_path;

/// Longest object key OSS accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1023;

/// A validated bucket name and object key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    bucket: String,
    key: String,
}

impl ObjectRef {
    /// Validates `bucket` (OSS naming rules: 3–63 of `a-z0-9-`, starting and ending with a letter
    /// or digit) and `key` (1–1023 bytes, not starting with `/` or `\`, no control characters,
    /// no `.`/`..` segments, which HTTP clients would collapse).
    pub fn new(bucket: &str, key: &str) -> Result<Self, OssError> {
        validate_bucket(bucket)?;
        validate_key(key)?;
        Ok(Self {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The object key, unencoded.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.bucket, self.key)
    }
}

fn validate_bucket(bucket: &str) -> Result<(), OssError> {
    // Bucket naming rules: https://help.aliyun.com/zh/oss/user-guide/bucket-naming-conventions
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !((3..=63).contains(&bucket.len())
        && ok_chars
        && ends_ok(bucket.bytes().next())
        && ends_ok(bucket.bytes().last()))
    {
        return Err(OssError::RefusedUrl(format!(
            "{bucket:?} is not a valid OSS bucket name (3-63 characters of a-z, 0-9 and '-', \
             starting and ending with a letter or digit)"
        )));
    }
    // The bucket becomes the first label of the request's host. A name that passes the rules
    // above but is not a valid IDNA label (`xn--` followed by invalid Punycode, such as
    // `xn--bucket`; found by fuzz/oss_url) yields no parsable URL: it used to be accepted and
    // then fail inside the HTTP client as a retried 502.
    if let Err(e) = Host::parse(bucket) {
        return Err(OssError::RefusedUrl(format!(
            "{bucket:?} is not a valid OSS bucket name: it cannot be a host name label ({e})"
        )));
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), OssError> {
    let refuse = |why: &str| Err(OssError::RefusedUrl(format!("object key {key:?} {why}")));
    if key.is_empty() {
        return Err(OssError::RefusedUrl("the URL names no object key".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return refuse("is longer than 1023 bytes");
    }
    if key.starts_with('/') || key.starts_with('\\') {
        return refuse("starts with '/' or '\\'");
    }
    if key.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    if key.split('/').any(|seg| seg == "." || seg == "..") {
        return refuse("contains a '.' or '..' segment");
    }
    Ok(())
}

/// How the bucket is addressed at an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addressing {
    /// `https://bucket.endpoint/key` — the only style real OSS accepts.
    VirtualHosted,
    /// `http://host:port/bucket/key` — allow-listed OSS-compatible servers.
    Path,
}

/// Where requests go: scheme, host, port and addressing style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    scheme: String,
    host: String,
    port: Option<u16>,
    addressing: Addressing,
    region: Option<String>,
}

impl Endpoint {
    /// `https://oss-<region>-internal.aliyuncs.com`, the free same-region endpoint FC should use.
    pub fn internal(region: &str) -> Self {
        Self::oss(region, true)
    }

    /// `https://oss-<region>[-internal].aliyuncs.com`.
    fn oss(region: &str, internal: bool) -> Self {
        let suffix = if internal { "-internal" } else { "" };
        Self {
            scheme: "https".into(),
            host: format!("oss-{region}{suffix}.aliyuncs.com"),
            port: None,
            addressing: Addressing::VirtualHosted,
            region: Some(region.to_string()),
        }
    }

    /// Parses an `OSS_ENDPOINT` value: `oss-<region>[-internal].aliyuncs.com` with or without
    /// `https://`, or `http(s)://host:port` of an allow-listed OSS-compatible server.
    pub fn parse(value: &str, allow: &AllowList) -> Result<Self, OssError> {
        let with_scheme = if value.contains("://") {
            value.to_string()
        } else {
            format!("https://{value}")
        };
        let url = Url::parse(&with_scheme)
            .map_err(|e| OssError::Config(format!("OSS_ENDPOINT {value:?}: {e}")))?;
        let plain = url.username().is_empty()
            && url.password().is_none()
            && url.query().is_none()
            && url.fragment().is_none()
            && url.path() == "/";
        if !plain || !matches!(url.scheme(), "http" | "https") {
            return Err(OssError::Config(format!(
                "OSS_ENDPOINT {value:?} must be [http(s)://]host[:port] with nothing after it"
            )));
        }
        let host = host_string(&url)?;
        if let Some(region) = oss_endpoint_region(&host)
            && url.port().is_none()
        {
            let internal = host.ends_with("-internal.aliyuncs.com");
            return Ok(Self::oss(&region, internal));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        if !allow.allows(&host, port) {
            return Err(OssError::Config(format!(
                "OSS_ENDPOINT {value:?} is not an OSS endpoint; list {host}:{port} in \
                 OSS_ALLOWED_HOSTS to use an OSS-compatible server"
            )));
        }
        Ok(Self {
            scheme: url.scheme().to_string(),
            host,
            port: url.port(),
            addressing: Addressing::Path,
            region: None,
        })
    }

    /// The region the endpoint's host names, if it is a real OSS endpoint.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// How buckets are addressed here.
    pub fn addressing(&self) -> Addressing {
        self.addressing
    }

    /// The request URL of `object` at this endpoint, key percent-encoded.
    pub fn object_url(&self, object: &ObjectRef) -> String {
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let key = encode_path(object.key());
        match self.addressing {
            Addressing::VirtualHosted => {
                format!(
                    "{}://{}.{}{port}/{key}",
                    self.scheme,
                    object.bucket(),
                    self.host
                )
            }
            Addressing::Path => format!(
                "{}://{}{port}/{}/{key}",
                self.scheme,
                self.host,
                object.bucket()
            ),
        }
    }
}

/// Hosts that may be contacted although they are not OSS (`OSS_ALLOWED_HOSTS`, tests only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<(String, Option<u16>)>,
}

impl AllowList {
    /// Parses a comma-separated list of `host[:port]` entries (`[v6]:port` for IPv6). An entry
    /// without a port allows only the scheme's default port.
    pub fn parse(value: &str) -> Result<Self, OssError> {
        let mut entries = Vec::new();
        for raw in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let url = Url::parse(&format!("http://{raw}"))
                .map_err(|e| OssError::Config(format!("OSS_ALLOWED_HOSTS entry {raw:?}: {e}")))?;
            entries.push((host_string(&url)?, url.port()));
        }
        Ok(Self { entries })
    }

    /// Whether `host` (normalised, as the `url` crate prints it) on `port` is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.entries.iter().any(|(h, p)| {
            h.eq_ignore_ascii_case(host)
                && match p {
                    Some(p) => *p == port,
                    None => port == 80 || port == 443,
                }
        })
    }
}

/// A resolved request target: the endpoint, the signing region and the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Where to send the request.
    pub endpoint: Endpoint,
    /// Region for V4 signing.
    pub region: String,
    /// The object.
    pub object: ObjectRef,
}

/// Inputs to URL resolution that come from configuration and the request.
#[derive(Debug, Clone, Copy)]
pub struct ResolveContext<'a> {
    /// `OSS_ENDPOINT`, when set.
    pub endpoint: Option<&'a Endpoint>,
    /// `OSS_ALLOWED_HOSTS`.
    pub allow: &'a AllowList,
    /// The function's region (`x-fc-region`, else `FC_REGION`).
    pub region: Option<&'a str>,
}

impl ResolveContext<'_> {
    /// Location of `object` in the function's region (an event record, an `oss://` URL).
    pub fn locate(&self, object: ObjectRef, region: Option<&str>) -> Result<Location, OssError> {
        let region = region
            .or(self.region)
            .or_else(|| self.endpoint.and_then(Endpoint::region))
            .ok_or_else(|| {
                OssError::Config(
                    "no OSS region: set FC_REGION (FC sets it) or pass x-fc-region".into(),
                )
            })?
            .to_string();
        validate_region(&region)?;
        let endpoint = match self.endpoint {
            Some(e) => e.clone(),
            None => Endpoint::internal(&region),
        };
        Ok(Location {
            endpoint,
            region,
            object,
        })
    }

    /// Resolves a URL given by a client, refusing anything that is not an OSS object.
    pub fn resolve(&self, input: &str) -> Result<Location, OssError> {
        let input = input.trim();
        if let Some(rest) = strip_prefix_ignore_case(input, "oss://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            return self.locate(ObjectRef::new(bucket, key)?, None);
        }
        let url = Url::parse(input)
            .map_err(|e| OssError::RefusedUrl(format!("not a URL ({e}): {input:?}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(OssError::RefusedUrl(format!(
                "scheme {:?} is not allowed; use oss://bucket/key or an https OSS URL",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(OssError::RefusedUrl(
                "URLs with user info are refused".into(),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(OssError::RefusedUrl(
                "query strings and fragments are not supported in OSS URLs".into(),
            ));
        }
        let host = host_string(&url)?;
        let path = percent_decode(url.path().trim_start_matches('/')).ok_or_else(|| {
            OssError::RefusedUrl("the object key has a bad %-escape or is not UTF-8".into())
        })?;
        if let Some((bucket, region)) = oss_bucket_host(&host)
            && url.port().is_none()
        {
            return self.locate_bucket_domain(&host, bucket, &region, &path);
        }
        let port = url.port_or_known_default().unwrap_or(0);
        if self.allow.allows(&host, port) {
            let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
            let endpoint = Endpoint {
                scheme: url.scheme().to_string(),
                host,
                port: url.port(),
                addressing: Addressing::Path,
                region: None,
            };
            let mut location = self.locate(ObjectRef::new(bucket, key)?, None)?;
            location.endpoint = endpoint;
            return Ok(location);
        }
        Err(OssError::RefusedUrl(refusal_reason(&url, &host)))
    }

    fn locate_bucket_domain(
        &self,
        host: &str,
        bucket: &str,
        region: &str,
        key: &str,
    ) -> Result<Location, OssError> {
        let object = ObjectRef::new(bucket, key)?;
        let endpoint = match self.endpoint {
            Some(e) => e.clone(),
            // Same region as the function: the internal endpoint is free and always reachable.
            None if self.region == Some(region) => Endpoint::internal(region),
            None => Endpoint::oss(region, host.ends_with("-internal.aliyuncs.com")),
        };
        Ok(Location {
            endpoint,
            region: region.to_string(),
            object,
        })
    }
}

/// A region becomes part of the endpoint's host name (`oss-<region>-internal.aliyuncs.com`), and
/// it can come from the request (`x-fc-region`) or an event record: only `[a-z0-9-]` names
/// (`cn-hangzhou`, `ap-southeast-1`) are accepted, so no region can add URL syntax (`@`, `/`,
/// `#`, …) that would send the signed request to another host.
fn validate_region(region: &str) -> Result<(), OssError> {
    let valid = !region.is_empty()
        && region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        return Ok(());
    }
    let shown: String = region.chars().take(40).collect();
    Err(OssError::RefusedUrl(format!(
        "{shown:?} is not an OSS region name (a-z, 0-9 and '-', e.g. cn-hangzhou)"
    )))
}

fn refusal_reason(url: &Url, host: &str) -> String {
    match url.host() {
        Some(Host::Ipv4(ip)) if ip.is_loopback() => format!("loopback address {host} refused"),
        Some(Host::Ipv4(ip)) if ip.is_link_local() => {
            format!("link-local/metadata address {host} refused")
        }
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => format!("IP literal {host} refused"),
        _ => format!(
            "host {host} is not an OSS endpoint (expected bucket.oss-<region>[-internal].aliyuncs.com)"
        ),
    }
}

fn host_string(url: &Url) -> Result<String, OssError> {
    url.host_str()
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| OssError::RefusedUrl("the URL has no host".into()))
}

fn strip_prefix_ignore_case<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `oss-<region>[-internal].aliyuncs.com` → region.
fn oss_endpoint_region(host: &str) -> Option<String> {
    let name = host.strip_suffix(".aliyuncs.com")?.strip_prefix("oss-")?;
    let region = name.strip_suffix("-internal").unwrap_or(name);
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| region.to_string())
}

/// `bucket.oss-<region>[-internal].aliyuncs.com` → (bucket, region).
fn oss_bucket_host(host: &str) -> Option<(&str, String)> {
    let (bucket, endpoint) = host.split_once('.')?;
    Some((bucket, oss_endpoint_region(endpoint)?))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(allow: &'a AllowList, endpoint: Option<&'a Endpoint>) -> ResolveContext<'a> {
        ResolveContext {
            endpoint,
            allow,
            region: Some("cn-hangzhou"),
        }
    }

    fn refused(input: &str) -> bool {
        let allow = AllowList::default();
        matches!(
            ctx(&allow, None).resolve(input),
            Err(OssError::RefusedUrl(_))
        )
    }

    #[test]
    fn oss_scheme_uses_the_internal_endpoint_of_the_function_region() {
        let allow = AllowList::default();
        let loc = ctx(&allow, None)
            .resolve("oss://my-bucket/photos/测试 1+1.jpg")
            .unwrap();
        assert_eq!(loc.object.bucket(), "my-bucket");
        assert_eq!(loc.object.key(), "photos/测试 1+1.jpg");
        assert_eq!(loc.region, "cn-hangzhou");
        assert_eq!(
            loc.endpoint.object_url(&loc.object),
            "https://my-bucket.oss-cn-hangzhou-internal.aliyuncs.com/photos/%E6%B5%8B%E8%AF%95%201%2B1.jpg"
        );
    }

    #[test]
    fn bucket_domain_url_is_decoded_and_keeps_its_region() {
        let allow = AllowList::default();
        let loc = ctx(&allow, None)
            .resolve("https://pics.oss-cn-beijing.aliyuncs.com/a%20b/c+d.png")
            .unwrap();
        assert_eq!(
            (loc.object.bucket(), loc.object.key()),
            ("pics", "a b/c+d.png")
        );
        assert_eq!(loc.region, "cn-beijing");
        assert_eq!(
            loc.endpoint.object_url(&loc.object),
            "https://pics.oss-cn-beijing.aliyuncs.com/a%20b/c%2Bd.png"
        );
        let same_region = ctx(&allow, None)
            .resolve("https://pics.oss-cn-hangzhou.aliyuncs.com/x.jpg")
            .unwrap();
        assert_eq!(same_region.endpoint, Endpoint::internal("cn-hangzhou"));
    }

    #[test]
    fn unsafe_urls_are_refused() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://127.0.0.1:9000/bucket/key",
            "http://[::1]/bucket/key",
            "http://2130706433/bucket/key",
            "file:///etc/passwd",
            "ftp://pics.oss-cn-hangzhou.aliyuncs.com/a.jpg",
            "https://example.com/a.jpg",
            "https://pics.oss-cn-hangzhou.aliyuncs.com.evil.com/a.jpg",
            "https://user:pw@pics.oss-cn-hangzhou.aliyuncs.com/a.jpg",
            "https://pics.oss-cn-hangzhou.aliyuncs.com:8080/a.jpg",
            "https://pics.oss-cn-hangzhou.aliyuncs.com/a.jpg?x-oss-process=1",
            "https://pics.oss-cn-hangzhou.aliyuncs.com/",
            "oss://Bad_Bucket/a.jpg",
            "oss://ab/a.jpg",
            "oss://-bucket/a.jpg",
            "oss://evil.com#/a.jpg",
            "oss://bucket",
            "oss://bucket/a/../b.jpg",
            "oss://bucket//etc/passwd",
            "not a url",
        ] {
            assert!(refused(url), "{url} was not refused");
        }
    }

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%20b%2B.jpg").as_deref(), Some("a b+.jpg"));
        assert_eq!(percent_decode("100%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%E6%B5%8B").as_deref(), Some("测"));
        assert_eq!(percent_decode("%FF"), None);
    }

    #[test]
    fn allow_listed_hosts_use_path_style() {
        let allow = AllowList::parse("127.0.0.1:9100").unwrap();
        let loc = ctx(&allow, None)
            .resolve("http://127.0.0.1:9100/bucket/dir/k.jpg")
            .unwrap();
        assert_eq!(loc.endpoint.addressing(), Addressing::Path);
        assert_eq!(
            loc.endpoint.object_url(&loc.object),
            "http://127.0.0.1:9100/bucket/dir/k.jpg"
        );
        // Another port on the same host is not allowed.
        assert!(matches!(
            ctx(&allow, None).resolve("http://127.0.0.1:9101/bucket/k.jpg"),
            Err(OssError::RefusedUrl(_))
        ));
    }

    #[test]
    fn endpoint_override_must_be_oss_or_allow_listed() {
        let none = AllowList::default();
        let public = Endpoint::parse("oss-cn-shanghai.aliyuncs.com", &none).unwrap();
        assert_eq!(public.region(), Some("cn-shanghai"));
        assert!(matches!(
            Endpoint::parse("http://127.0.0.1:9100", &none),
            Err(OssError::Config(_))
        ));
        let allow = AllowList::parse("127.0.0.1:9100").unwrap();
        let local = Endpoint::parse("http://127.0.0.1:9100", &allow).unwrap();
        let loc = ctx(&allow, Some(&local))
            .resolve("https://pics.oss-cn-hangzhou.aliyuncs.com/k.jpg")
            .unwrap();
        assert_eq!(
            loc.endpoint.object_url(&loc.object),
            "http://127.0.0.1:9100/pics/k.jpg"
        );
    }
}
