//! OSS signature V4 known-answer vectors A–D (and the derived regression vector F) of
//! docs/function-compute.md §3. A is Alibaba Cloud's documented example; B–D are the Go SDK v2
//! signer tests (aliyun/alibabacloud-oss-go-sdk-v2 oss/signer/signer_test.go).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use resnet18_fc::oss::Credentials;
use resnet18_fc::oss::sign::{SigningRequest, sign};

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The request shared by vectors B, C and D.
fn go_sdk_request<'a>(additional: &'a [&'a str]) -> SigningRequest<'a> {
    SigningRequest {
        method: "PUT",
        bucket: Some("bucket"),
        key: Some("1234+-/123/1.txt"),
        query: "%2Bparam1=value3&%2Bparam2=&param1=value1&param2=&%7Cparam1=value4&%7Cparam2=",
        headers: headers(&[
            ("x-oss-head1", "value"),
            ("abc", "value"),
            ("ZAbc", "value"),
            ("XYZ", "value"),
            ("content-type", "text/plain"),
        ]),
        additional_headers: additional,
    }
}

#[test]
fn vector_a_documented_example() {
    let request = SigningRequest {
        method: "PUT",
        bucket: Some("examplebucket"),
        key: Some("exampleobject"),
        query: "",
        headers: headers(&[
            ("Content-MD5", "eB5eJF1ptWaXm4bijSPyxw"),
            ("Content-Type", "text/html"),
            ("x-oss-meta-author", "alice"),
            ("x-oss-meta-magic", "abracadabra"),
            ("x-oss-date", "20231203T121212Z"),
            ("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
            ("host", "examplebucket.oss-cn-hangzhou.aliyuncs.com"),
        ]),
        additional_headers: &["host"],
    };
    let creds = Credentials::new("accesskeyid", "accesskeysecret", None);
    let signed = sign(&request, &creds, "cn-hangzhou", at(1_701_605_532));
    assert_eq!(
        signed.canonical_request,
        "PUT\n/examplebucket/exampleobject\n\n\
         content-md5:eB5eJF1ptWaXm4bijSPyxw\n\
         content-type:text/html\n\
         host:examplebucket.oss-cn-hangzhou.aliyuncs.com\n\
         x-oss-content-sha256:UNSIGNED-PAYLOAD\n\
         x-oss-date:20231203T121212Z\n\
         x-oss-meta-author:alice\n\
         x-oss-meta-magic:abracadabra\n\
         \n\
         host\n\
         UNSIGNED-PAYLOAD"
    );
    assert_eq!(
        signed.string_to_sign,
        "OSS4-HMAC-SHA256\n20231203T121212Z\n20231203/cn-hangzhou/oss/aliyun_v4_request\n\
         129b14df88496f434606e999e35dee010ea1cecfd3ddc378e5ed4989609c1db3"
    );
    assert_eq!(
        signed.signature,
        "4b663e424d2db9967401ff6ce1c86f8c83cabd77d9908475239d9110642c63fa"
    );
    assert_eq!(
        signed.authorization,
        "OSS4-HMAC-SHA256 Credential=accesskeyid/20231203/cn-hangzhou/oss/aliyun_v4_request,\
         AdditionalHeaders=host,\
         Signature=4b663e424d2db9967401ff6ce1c86f8c83cabd77d9908475239d9110642c63fa"
    );
}

#[test]
fn vector_b_go_sdk_header_signing() {
    let creds = Credentials::new("ak", "sk", None);
    let signed = sign(
        &go_sdk_request(&[]),
        &creds,
        "cn-hangzhou",
        at(1_702_743_657),
    );
    assert_eq!(
        signed.canonical_request,
        "PUT\n/bucket/1234%2B-/123/1.txt\n\
         %2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\n\
         content-type:text/plain\n\
         x-oss-content-sha256:UNSIGNED-PAYLOAD\n\
         x-oss-date:20231216T162057Z\n\
         x-oss-head1:value\n\
         \n\
         \n\
         UNSIGNED-PAYLOAD"
    );
    assert_eq!(
        signed.string_to_sign,
        "OSS4-HMAC-SHA256\n20231216T162057Z\n20231216/cn-hangzhou/oss/aliyun_v4_request\n\
         f4613657f1b108998e8dbd10a1aa5da621dc2c6e02c9ddec0f163664848704c4"
    );
    assert_eq!(
        signed.authorization,
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,\
         Signature=e21d18daa82167720f9b1047ae7e7f1ce7cb77a31e8203a7d5f4624fa0284afe"
    );
}

#[test]
fn vector_c_go_sdk_sts_token() {
    let creds = Credentials::new("ak", "sk", Some("token"));
    let signed = sign(
        &go_sdk_request(&[]),
        &creds,
        "cn-hangzhou",
        at(1_702_784_856),
    );
    assert!(
        signed
            .canonical_request
            .contains("x-oss-head1:value\nx-oss-security-token:token\n\n\nUNSIGNED-PAYLOAD"),
        "{}",
        signed.canonical_request
    );
    assert_eq!(
        signed.string_to_sign,
        "OSS4-HMAC-SHA256\n20231217T034736Z\n20231217/cn-hangzhou/oss/aliyun_v4_request\n\
         69494678fb11579d4ee12996e2796d9e2ba43c34aa4c723c4aec018f3d6b86b8"
    );
    assert_eq!(
        signed.authorization,
        "OSS4-HMAC-SHA256 Credential=ak/20231217/cn-hangzhou/oss/aliyun_v4_request,\
         Signature=b94a3f999cf85bcdc00d332fbd3734ba03e48382c36fa4d5af5df817395bd9ea"
    );
    let token_header = signed
        .headers
        .iter()
        .find(|(name, _)| name == "x-oss-security-token");
    assert_eq!(token_header.map(|(_, v)| v.as_str()), Some("token"));
    assert!(!format!("{signed:?}").contains("token"), "{signed:?}");
}

#[test]
fn vector_d_go_sdk_additional_headers() {
    let additional = ["ZAbc", "abc", "x-oss-no-exist", "x-oss-head1"];
    let creds = Credentials::new("ak", "sk", None);
    let signed = sign(
        &go_sdk_request(&additional),
        &creds,
        "cn-hangzhou",
        at(1_702_747_512),
    );
    assert_eq!(
        signed.canonical_request,
        "PUT\n/bucket/1234%2B-/123/1.txt\n\
         %2Bparam1=value3&%2Bparam2&%7Cparam1=value4&%7Cparam2&param1=value1&param2\n\
         abc:value\n\
         content-type:text/plain\n\
         x-oss-content-sha256:UNSIGNED-PAYLOAD\n\
         x-oss-date:20231216T172512Z\n\
         x-oss-head1:value\n\
         zabc:value\n\
         \n\
         abc;zabc\n\
         UNSIGNED-PAYLOAD"
    );
    assert_eq!(
        signed.authorization,
        "OSS4-HMAC-SHA256 Credential=ak/20231216/cn-hangzhou/oss/aliyun_v4_request,\
         AdditionalHeaders=abc;zabc,\
         Signature=4a4183c187c07c8947db7620deb0a6b38d9fbdd34187b6dbaccb316fa251212f"
    );
}

#[test]
fn vector_f_derived_sts_get_with_space() {
    // Derived here: a regression vector, not an authority.
    let request = SigningRequest {
        method: "GET",
        bucket: Some("examplebucket"),
        key: Some("images/cat 1.jpg"),
        query: "",
        headers: vec![],
        additional_headers: &[],
    };
    let creds = Credentials::new("ak", "sk", Some("token"));
    let signed = sign(&request, &creds, "cn-hangzhou", at(1_701_605_532));
    assert!(
        signed
            .canonical_request
            .starts_with("GET\n/examplebucket/images/cat%201.jpg\n\n")
    );
    assert_eq!(
        signed.signature,
        "d8aa33a27582d2e00210ce8611f7e838a6287ca5ff87b3a38a4a8427c5d69d61"
    );
}

#[test]
fn changing_any_input_changes_the_signature() {
    let creds = Credentials::new("ak", "sk", None);
    let base = sign(
        &go_sdk_request(&[]),
        &creds,
        "cn-hangzhou",
        at(1_702_743_657),
    )
    .signature;
    let other_region = sign(
        &go_sdk_request(&[]),
        &creds,
        "cn-beijing",
        at(1_702_743_657),
    );
    let other_secret = sign(
        &go_sdk_request(&[]),
        &Credentials::new("ak", "sk2", None),
        "cn-hangzhou",
        at(1_702_743_657),
    );
    let mut moved = go_sdk_request(&[]);
    moved.key = Some("1234+-/123/2.txt");
    let other_key = sign(&moved, &creds, "cn-hangzhou", at(1_702_743_657));
    for signed in [other_region, other_secret, other_key] {
        assert_ne!(signed.signature, base);
    }
}
