//! OSS signature version 4 (`OSS4-HMAC-SHA256`) over request headers.
//!
//! Rules from Alibaba Cloud's "Signature Version 4" page
//! (<https://help.aliyun.com/zh/oss/developer-reference/recommend-to-use-signature-version-4>) as
//! summarised, with known-answer vectors, in docs/function-compute.md §3 ("Signature V4"):
//!
//! ```text
//! CanonicalRequest = VERB \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n AdditionalHeaders \n HashedPayload
//! StringToSign     = "OSS4-HMAC-SHA256" \n x-oss-date \n yyyymmdd/region/oss/aliyun_v4_request \n hex(sha256(CanonicalRequest))
//! SigningKey       = HMAC(HMAC(HMAC(HMAC("aliyun_v4" + secret, yyyymmdd), region), "oss"), "aliyun_v4_request")
//! Signature        = hex(HMAC(SigningKey, StringToSign))
//! ```
//!
//! The payload is never hashed (`x-oss-content-sha256: UNSIGNED-PAYLOAD`), so signing is cheap and
//! independent of the body. Pure functions only: no clock, no I/O; the caller passes the time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::Credentials;

/// Algorithm name, first word of the `Authorization` header.
pub const ALGORITHM: &str = "OSS4-HMAC-SHA256";
/// The only accepted `x-oss-content-sha256` value when the body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Header carrying the request time, `yyyymmddThhmmssZ`.
pub const DATE_HEADER: &str = "x-oss-date";
/// Header carrying the payload hash marker.
pub const CONTENT_SHA256_HEADER: &str = "x-oss-content-sha256";
/// Header carrying the STS security token.
pub const SECURITY_TOKEN_HEADER: &str = "x-oss-security-token";

type HmacSha256 = Hmac<Sha256>;

/// What is signed: everything about the request except the body.
#[derive(Debug, Clone)]
pub struct SigningRequest<'a> {
    /// HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// Bucket, absent for service-level requests.
    pub bucket: Option<&'a str>,
    /// Object key as stored (not encoded); absent for bucket-level requests.
    pub key: Option<&'a str>,
    /// The query string exactly as sent (already percent-encoded, without `?`).
    pub query: &'a str,
    /// Headers that will be sent (any letter case).
    pub headers: Vec<(String, String)>,
    /// Extra headers to sign (`AdditionalHeaders`), any letter case.
    pub additional_headers: &'a [&'a str],
}

/// The result of signing, with every intermediate for tests and debugging.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The headers to send: the caller's plus `x-oss-date`, `x-oss-content-sha256`,
    /// `x-oss-security-token` (when STS) and `authorization`.
    pub headers: Vec<(String, String)>,
    /// The canonical request that was hashed.
    pub canonical_request: String,
    /// The string that was signed.
    pub string_to_sign: String,
    /// Hex HMAC-SHA256 signature.
    pub signature: String,
    /// Full `Authorization` header value.
    pub authorization: String,
}

impl std::fmt::Debug for SignedRequest {
    // Headers include the STS token; keep them out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The canonical request and the headers contain the STS token: show only the signature.
        f.debug_struct("SignedRequest")
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// Signs `request` for `region` at `time` with `credentials`.
///
/// Adds `x-oss-date` (from `time`) and `x-oss-content-sha256: UNSIGNED-PAYLOAD` when the caller
/// did not set them, and `x-oss-security-token` when the credentials carry one.
pub fn sign(
    request: &SigningRequest<'_>,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> SignedRequest {
    let mut headers = request.headers.clone();
    let date_time = header_value(&headers, DATE_HEADER)
        .map(str::to_string)
        .unwrap_or_else(|| format_date_time(time));
    set_if_absent(&mut headers, DATE_HEADER, &date_time);
    set_if_absent(&mut headers, CONTENT_SHA256_HEADER, UNSIGNED_PAYLOAD);
    if let Some(token) = credentials.security_token() {
        set_if_absent(&mut headers, SECURITY_TOKEN_HEADER, token);
    }
    let date = date_time.get(..8).unwrap_or_default().to_string();
    let scope = format!("{date}/{region}/oss/aliyun_v4_request");
    let additional = additional_header_names(&headers, request.additional_headers);
    let canonical_request = canonical_request(request, &headers, &additional);
    let string_to_sign = format!(
        "{ALGORITHM}\n{date_time}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = signing_key(credentials.access_key_secret(), &date, region);
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    let additional_part = if additional.is_empty() {
        String::new()
    } else {
        format!(",AdditionalHeaders={}", additional.join(";"))
    };
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}{additional_part},Signature={signature}",
        credentials.access_key_id()
    );
    headers.push(("authorization".to_string(), authorization.clone()));
    SignedRequest {
        headers,
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    }
}

/// The V4 signing key for `secret` on `date` (`yyyymmdd`) in `region`.
pub fn signing_key(secret: &str, date: &str, region: &str) -> Vec<u8> {
    let k_date = hmac(format!("aliyun_v4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, b"oss");
    hmac(&k_service, b"aliyun_v4_request")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn canonical_request(
    request: &SigningRequest<'_>,
    headers: &[(String, String)],
    additional: &[String],
) -> String {
    let hashed_payload = header_value(headers, CONTENT_SHA256_HEADER).unwrap_or(UNSIGNED_PAYLOAD);
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method.to_ascii_uppercase(),
        canonical_uri(request.bucket, request.key),
        canonical_query(request.query),
        canonical_headers(headers, additional),
        additional.join(";"),
        hashed_payload
    )
}

/// `/bucket/key` (or `/bucket/`, `/`), percent-encoded with `/` kept.
pub fn canonical_uri(bucket: Option<&str>, key: Option<&str>) -> String {
    match (bucket, key) {
        (Some(bucket), Some(key)) => encode_path(&format!("/{bucket}/{key}")),
        (Some(bucket), None) => encode_path(&format!("/{bucket}/")),
        (None, _) => "/".to_string(),
    }
}

/// Percent-encodes every byte except `A-Za-z0-9-._~` and `/`, with uppercase hex.
///
/// This is the encoding of the V4 canonical URI, and also of object keys in request paths
/// (docs/function-compute.md §3).
pub fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sorted `k=v` pairs of an already-encoded query; bare `k` when the value is empty.
fn canonical_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let normalised = query.replace('+', "%20");
    let mut pairs: Vec<(&str, &str)> = normalised
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                (*k).to_string()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn is_default_signed(lower_name: &str) -> bool {
    lower_name.starts_with("x-oss-") || lower_name == "content-type" || lower_name == "content-md5"
}

/// Lowercased, sorted, deduplicated additional headers that are present and not signed anyway.
fn additional_header_names(headers: &[(String, String)], wanted: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = wanted
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !is_default_signed(n))
        .filter(|n| headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(n)))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `name:value\n` for each signed header, sorted by name, values trimmed and joined by `,`.
fn canonical_headers(headers: &[(String, String)], additional: &[String]) -> String {
    let mut signed: Vec<(String, Vec<&str>)> = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !is_default_signed(&lower) && !additional.contains(&lower) {
            continue;
        }
        match signed.iter_mut().find(|(n, _)| *n == lower) {
            Some((_, values)) => values.push(value.trim()),
            None => signed.push((lower, vec![value.trim()])),
        }
    }
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    signed
        .iter()
        .map(|(name, values)| format!("{name}:{}\n", values.join(",")))
        .collect()
}

fn header_value<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn set_if_absent(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    if header_value(headers, name).is_none() {
        headers.push((name.to_string(), value.to_string()));
    }
}

/// Formats `time` as `yyyymmddThhmmssZ` (UTC), the `x-oss-date` format.
pub fn format_date_time(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Gregorian (year, month, day) of a day count since 1970-01-01 (proleptic calendar, era-based
/// conversion as described by Howard Hinnant's "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn formats_known_dates() {
        // 1702743657 = 2023-12-16T16:20:57Z (docs/function-compute.md §3, vector B).
        assert_eq!(format_date_time(at(1_702_743_657)), "20231216T162057Z");
        assert_eq!(format_date_time(at(0)), "19700101T000000Z");
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(format_date_time(at(1_709_251_199)), "20240229T235959Z");
        // 2000-03-01T00:00:00Z, after the 400-year leap day.
        assert_eq!(format_date_time(at(951_868_800)), "20000301T000000Z");
    }

    #[test]
    fn path_encoding_keeps_only_unreserved_and_slash() {
        assert_eq!(encode_path("/b/a b+c/测.jpg"), "/b/a%20b%2Bc/%E6%B5%8B.jpg");
        assert_eq!(encode_path("-._~/AZaz09"), "-._~/AZaz09");
        assert_eq!(encode_path("%?#&="), "%25%3F%23%26%3D");
    }

    #[test]
    fn canonical_query_sorts_and_drops_empty_values() {
        assert_eq!(canonical_query("b=2&a=1&c="), "a=1&b=2&c");
        assert_eq!(canonical_query("x=a+b"), "x=a%20b");
        assert_eq!(canonical_query(""), "");
    }

    #[test]
    fn signing_key_matches_platform_intermediate() {
        // docs/function-compute.md §3, vector B: SigningKey(sk, 20231216, cn-hangzhou).
        assert_eq!(
            hex::encode(signing_key("sk", "20231216", "cn-hangzhou")),
            "b412a03b134ebddd720f5167b5de6db66620ebb3b01cff4d49e3ccb09f8de97f"
        );
    }
}
