//! `FcContext` from the real FC 3.0 header dump (tests/data/fc3_http_headers.json, copied from
//! docs/function-compute.md §1): every field read, empty credential headers fall back to the environment.

use http::{HeaderMap, HeaderName, HeaderValue};
use resnet18_fc::fc::{CredentialSource, FcContext};

use crate::support::env_from;

fn dump_headers() -> HeaderMap {
    let text = include_str!("../data/fc3_http_headers.json");
    let fixture: serde_json::Value = serde_json::from_str(text).expect("fixture is JSON");
    let mut headers = HeaderMap::new();
    for (name, value) in fixture["headers"].as_object().expect("headers object") {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let value = HeaderValue::from_str(value.as_str().expect("string value")).expect("value");
        headers.insert(name, value);
    }
    headers
}

#[test]
fn the_real_fc3_header_dump_is_parsed_field_by_field() {
    let headers = dump_headers();
    assert_eq!(headers.len(), 21, "fixture has 21 headers");
    let ctx = FcContext::from_parts(&headers, &env_from(&[]));
    assert_eq!(ctx.request_id, "1-67a720bd-15933561-8ab9b99753be");
    assert_eq!(ctx.control_path.as_deref(), Some("/http-invoke"));
    assert_eq!(
        ctx.function_name.as_deref(),
        Some("request-block-plugin-668p")
    );
    assert_eq!(ctx.region.as_deref(), Some("cn-hangzhou"));
    assert_eq!(ctx.account_id.as_deref(), Some("1419633767709936"));
    assert_eq!(ctx.qualifier.as_deref(), Some("LATEST"));
    assert_eq!(ctx.memory_mb, Some(1024));
    assert_eq!(ctx.timeout_secs, Some(3));
    assert_eq!(ctx.retry_count, Some(0));
    // "X-Fc-Version-Id": "" and no environment: absent, not "".
    assert_eq!(ctx.version_id, None);
    // Empty credential headers and no environment: no credentials.
    assert!(ctx.credentials.is_none());
}

#[test]
fn empty_credential_headers_fall_back_to_the_environment() {
    let env = env_from(&[
        ("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.env-key-id"),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-key-secret"),
        ("ALIBABA_CLOUD_SECURITY_TOKEN", "env-security-token"),
        ("FC_FUNCTION_VERSION", "7"),
        ("FC_INSTANCE_ID", "c-1234"),
        ("FC_REGION", "cn-beijing"),
    ]);
    let ctx = FcContext::from_parts(&dump_headers(), &env);
    assert_eq!(ctx.credential_source, Some(CredentialSource::Environment));
    let creds = ctx.credentials.expect("credentials from the environment");
    assert_eq!(creds.access_key_id(), "STS.env-key-id");
    assert_eq!(creds.access_key_secret(), "env-key-secret");
    assert_eq!(creds.security_token(), Some("env-security-token"));
    // Empty version header → environment; a non-empty header beats the environment.
    assert_eq!(ctx.version_id.as_deref(), Some("7"));
    assert_eq!(ctx.region.as_deref(), Some("cn-hangzhou"));
    assert_eq!(ctx.instance_id.as_deref(), Some("c-1234"));
}

#[test]
fn filled_credential_headers_are_used_and_never_printed() {
    let mut headers = dump_headers();
    headers.insert("x-fc-access-key-id", HeaderValue::from_static("STS.hdr-id"));
    headers.insert(
        "x-fc-access-key-secret",
        HeaderValue::from_static("hdr-secret"),
    );
    headers.insert("x-fc-security-token", HeaderValue::from_static("hdr-token"));
    let env = env_from(&[("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "env-secret")]);
    let ctx = FcContext::from_parts(&headers, &env);
    assert_eq!(ctx.credential_source, Some(CredentialSource::Headers));
    let creds = ctx.credentials.clone().expect("credentials");
    assert_eq!(creds.access_key_secret(), "hdr-secret");
    let debug = format!("{ctx:?}");
    for secret in ["STS.hdr-id", "hdr-secret", "hdr-token"] {
        assert!(!debug.contains(secret), "{secret} leaked in {debug}");
    }
}
