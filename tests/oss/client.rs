//! The OSS client against the local OSS-compatible server (tests/support/oss_server.rs), which
//! verifies the V4 signature of every request independently: URL forms, odd keys, error
//! mapping, retries, timeouts, the size cap, truncation, redirects and SSRF refusals.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::oss_server::{Fault, OssTestServer, ServerKeys};
use http::Method;
use resnet18_fc::oss::{Access, Credentials, ObjectRef, OssConfig, OssError, OssService};

const REGION: &str = "cn-hangzhou";
const BUCKET: &str = "images";
const CAP: u64 = 1024 * 1024;

fn server_keys() -> ServerKeys {
    ServerKeys {
        id: "STS.NTestAccessKey".into(),
        secret: "test-secret-0123".into(),
        token: Some("CAIS-test-security-token".into()),
    }
}

fn access() -> Access {
    let keys = server_keys();
    Access {
        credentials: Some(Credentials::new(
            &keys.id,
            &keys.secret,
            keys.token.as_deref(),
        )),
        region: Some(REGION.into()),
    }
}

fn service_for(server: &OssTestServer, extra: &[(&str, &str)]) -> OssService {
    let mut vars: HashMap<String, String> = [
        ("OSS_ENDPOINT", server.endpoint()),
        ("OSS_ALLOWED_HOSTS", server.host_port()),
        ("OSS_MAX_OBJECT_BYTES", CAP.to_string()),
        ("OSS_READ_TIMEOUT_MS", "400".into()),
        ("OSS_RETRY_BASE_MS", "1".into()),
        ("OSS_MAX_ATTEMPTS", "3".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    let config = OssConfig::from_lookup(|k| vars.get(k).cloned()).expect("test config");
    OssService::new(config).expect("service")
}

async fn setup() -> (OssTestServer, OssService) {
    let server = OssTestServer::start(server_keys()).await;
    server.create_bucket(BUCKET, REGION);
    let service = service_for(&server, &[]);
    (server, service)
}

fn gets(server: &OssTestServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

#[tokio::test]
async fn fetches_by_oss_url_and_by_bucket_domain_url_with_verified_signatures() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "cats/tabby.jpg", &b"jpeg bytes"[..]);
    for url in [
        "oss://images/cats/tabby.jpg",
        "https://images.oss-cn-hangzhou.aliyuncs.com/cats/tabby.jpg",
        "https://images.oss-cn-hangzhou-internal.aliyuncs.com/cats/tabby.jpg",
    ] {
        let bytes = oss.fetch_image(url, &access()).await.expect(url);
        assert_eq!(&bytes[..], b"jpeg bytes", "{url}");
    }
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.verdict, Ok(()), "{r:?}");
        assert_eq!(r.path, "/images/cats/tabby.jpg");
        let token = r.headers.iter().find(|(k, _)| k == "x-oss-security-token");
        assert_eq!(
            token.map(|(_, v)| v.as_str()),
            Some("CAIS-test-security-token")
        );
    }
}

#[tokio::test]
async fn keys_with_spaces_plus_and_non_ascii_round_trip() {
    let (server, oss) = setup().await;
    let key = "uploads/测试 1+1.jpg";
    let location = oss
        .locate(ObjectRef::new(BUCKET, key).unwrap(), None, &access())
        .unwrap();
    oss.put_object(&location, "payload".into(), "image/jpeg", &access())
        .await
        .expect("put");
    let stored = server
        .object(BUCKET, key)
        .expect("stored under the exact key");
    assert_eq!(stored.content_type.as_deref(), Some("image/jpeg"));
    let back = oss.get_object(&location, &access()).await.expect("get");
    assert_eq!(&back[..], b"payload");
    let url = "https://images.oss-cn-hangzhou.aliyuncs.com/uploads/%E6%B5%8B%E8%AF%95%201+1.jpg";
    assert_eq!(
        &oss.fetch_image(url, &access()).await.expect(url)[..],
        b"payload"
    );
    assert!(server.requests().iter().all(|r| r.verdict.is_ok()));
}

#[tokio::test]
async fn missing_objects_are_404_and_bad_signatures_403() {
    let (server, oss) = setup().await;
    let missing = oss.fetch_image("oss://images/nope.jpg", &access()).await;
    match &missing {
        Err(e @ OssError::NotFound { code, .. }) => {
            assert_eq!(code, "NoSuchKey");
            assert_eq!(e.status(), 404);
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    server.put(BUCKET, "a.jpg", &b"x"[..]);
    let wrong = Access {
        credentials: Some(Credentials::new(
            "STS.NTestAccessKey",
            "not-the-secret",
            Some("CAIS-test-security-token"),
        )),
        region: Some(REGION.into()),
    };
    match oss.fetch_image("oss://images/a.jpg", &wrong).await {
        Err(e @ OssError::Forbidden { .. }) => {
            assert!(e.to_string().contains("SignatureDoesNotMatch"), "{e}");
            assert_eq!(e.status(), 403);
            assert!(!e.to_string().contains("not-the-secret"));
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    let last = server.requests().pop().expect("a request");
    assert_eq!(last.verdict, Err("SignatureDoesNotMatch".into()));
}

#[tokio::test]
async fn signing_for_the_wrong_region_is_rejected() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "a.jpg", &b"x"[..]);
    let elsewhere = Access {
        region: Some("cn-beijing".into()),
        ..access()
    };
    let err = oss
        .fetch_image("oss://images/a.jpg", &elsewhere)
        .await
        .expect_err("region mismatch");
    assert_eq!(err.status(), 403, "{err}");
}

#[tokio::test]
async fn a_5xx_is_retried_and_the_retry_succeeds() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "a.jpg", &b"ok"[..]);
    server.inject(Method::GET, Fault::Status(500));
    let bytes = oss.fetch_image("oss://images/a.jpg", &access()).await;
    assert_eq!(bytes.as_deref().ok(), Some(&b"ok"[..]));
    assert_eq!(gets(&server), 2);
}

#[tokio::test]
async fn retries_are_bounded() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "a.jpg", &b"ok"[..]);
    for _ in 0..5 {
        server.inject(Method::GET, Fault::Status(503));
    }
    let err = oss
        .fetch_image("oss://images/a.jpg", &access())
        .await
        .expect_err("all attempts fail");
    assert_eq!(err.status(), 502, "{err}");
    assert_eq!(gets(&server), 3, "OSS_MAX_ATTEMPTS=3");
}

#[tokio::test]
async fn a_stalled_response_times_out_as_504() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "a.jpg", vec![7u8; 4096]);
    server.inject(Method::GET, Fault::StallHeaders(Duration::from_secs(30)));
    let err = oss
        .fetch_image("oss://images/a.jpg", &access())
        .await
        .expect_err("stall");
    assert_eq!(
        err,
        OssError::Timeout {
            object: "images/a.jpg".into()
        }
    );
    assert_eq!(err.status(), 504);
    server.inject(Method::GET, Fault::StallBody(Duration::from_secs(30)));
    let err = oss
        .fetch_image("oss://images/a.jpg", &access())
        .await
        .expect_err("stall");
    assert_eq!(err.status(), 504, "{err}");
    assert_eq!(gets(&server), 2, "timeouts are not retried");
}

#[tokio::test]
async fn a_body_over_the_cap_is_413_and_the_transfer_is_aborted() {
    let (server, oss) = setup().await;
    let total = 64 * 1024 * 1024;
    server.inject(
        Method::GET,
        Fault::Oversize {
            total,
            declare_length: false,
        },
    );
    let err = oss
        .fetch_image("oss://images/big.jpg", &access())
        .await
        .expect_err("too big");
    assert_eq!(err.status(), 413, "{err}");
    // Give the server a moment to notice the closed connection, then check it stopped early.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let streamed = server.streamed_bytes();
    assert!(
        streamed < total / 2,
        "server produced {streamed} of {total} bytes"
    );

    server.inject(
        Method::GET,
        Fault::Oversize {
            total,
            declare_length: true,
        },
    );
    let err = oss
        .fetch_image("oss://images/big.jpg", &access())
        .await
        .expect_err("too big");
    assert_eq!(err.status(), 413, "{err}");
    assert_eq!(gets(&server), 2, "a size refusal is not retried");
}

#[tokio::test]
async fn a_truncated_body_is_an_error() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "a.jpg", vec![1u8; 10_000]);
    for _ in 0..3 {
        server.inject(Method::GET, Fault::Truncate);
    }
    let err = oss
        .fetch_image("oss://images/a.jpg", &access())
        .await
        .expect_err("cut off");
    assert_eq!(err.status(), 502, "{err}");
    assert_eq!(gets(&server), 3, "cut-off transfers are retried, boundedly");
}

#[tokio::test]
async fn redirects_are_not_followed_so_credentials_stay_with_oss() {
    let (server, oss) = setup().await;
    let elsewhere = OssTestServer::start(server_keys()).await;
    server.inject(
        Method::GET,
        Fault::Redirect(format!("{}/images/a.jpg", elsewhere.endpoint())),
    );
    let err = oss
        .fetch_image("oss://images/a.jpg", &access())
        .await
        .expect_err("redirect");
    assert_eq!(err.status(), 502, "{err}");
    assert_eq!(elsewhere.connections(), 0);
}

#[tokio::test]
async fn unsafe_urls_are_refused_before_any_connection() {
    let (server, oss) = setup().await;
    let bystander = OssTestServer::start(server_keys()).await;
    let urls = [
        "http://169.254.169.254/latest/meta-data".to_string(),
        format!("http://{}/", bystander.host_port()),
        format!("http://{}/images/a.jpg", bystander.host_port()),
        "http://localhost/images/a.jpg".to_string(),
        "file:///etc/passwd".to_string(),
        "ftp://images.oss-cn-hangzhou.aliyuncs.com/a.jpg".to_string(),
        "oss://Not_A_Bucket/a.jpg".to_string(),
        "oss://images.evil.com/a.jpg".to_string(),
        "https://evil.example/images/a.jpg".to_string(),
    ];
    for url in &urls {
        let err = oss.fetch_image(url, &access()).await.expect_err(url);
        assert!(matches!(err, OssError::RefusedUrl(_)), "{url}: {err:?}");
        assert_eq!(err.status(), 400, "{url}");
    }
    assert_eq!(bystander.connections(), 0);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn anonymous_requests_carry_no_signature() {
    let (server, oss) = setup().await;
    server.put(BUCKET, "a.jpg", &b"x"[..]);
    let anonymous = Access {
        credentials: None,
        region: Some(REGION.into()),
    };
    let err = oss
        .fetch_image("oss://images/a.jpg", &anonymous)
        .await
        .expect_err("denied");
    assert_eq!(err.status(), 403);
    let seen = server.requests().pop().expect("request");
    assert!(seen.headers.iter().all(|(k, _)| k != "authorization"));
    assert!(
        seen.headers
            .iter()
            .all(|(k, _)| k != "x-oss-security-token")
    );
}
