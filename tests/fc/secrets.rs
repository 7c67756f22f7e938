//! Credentials never leak: the real binary runs with known STS credentials in its environment
//! (`ALIBABA_CLOUD_*`, FC's fallback) and receives other known credentials in FC's headers
//! (`x-fc-access-key-*`, `x-fc-security-token`); it logs at `trace` level. Every path is
//! driven — page, health, classify in every input form, every error status, OSS URLs that
//! succeed, are denied (403), are missing (404) or are refused (400), upload events that
//! succeed and fail, invoke errors, initialize, 404/405, pre-stop — and none of the six values
//! may appear in stdout, stderr, or any response header or body.

use crate::support::OSS_EVENT_TEMPLATE as TEMPLATE;
use crate::support::oss_server::{OssTestServer, ServerKeys};
use crate::support::{Spawned, client, jpeg, png};
use base64::Engine as _;

/// Credentials in the server's environment; the OSS test server accepts these.
const ENV_ID: &str = "STS.EnvKeyId4Vq9Lw2Z";
const ENV_SECRET: &str = "EnvSecret-x7Kp2QmZ9tRw";
const ENV_TOKEN: &str = "CAISEnvToken-Jd83Hs72Ka";
/// Credentials in FC's headers; OSS rejects these (403), which drives the error paths.
const HDR_ID: &str = "STS.HdrKeyId8Nc3Ty5P";
const HDR_SECRET: &str = "HdrSecret-q4Wm8ZxL2vBn";
const HDR_TOKEN: &str = "CAISHdrToken-Pa91Lk47Qe";

const SECRETS: [&str; 6] = [ENV_ID, ENV_SECRET, ENV_TOKEN, HDR_ID, HDR_SECRET, HDR_TOKEN];

fn start_oss() -> &'static OssTestServer {
    OssTestServer::start_for_binary(ServerKeys {
        id: ENV_ID.into(),
        secret: ENV_SECRET.into(),
        token: Some(ENV_TOKEN.into()),
    })
}

/// Which credentials a request carries in FC's headers.
#[derive(Clone, Copy, Debug)]
enum Creds {
    /// Header credentials (OSS denies them).
    Headers,
    /// Empty credential headers, as FC 3.0 may send: the environment is used.
    Empty,
    /// No credential headers at all.
    Absent,
}

struct Step {
    name: &'static str,
    method: &'static str,
    control: Option<&'static str>,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    creds: Creds,
    status: u16,
}

fn step(
    name: &'static str,
    (method, control, path): (&'static str, Option<&'static str>, &'static str),
    content_type: Option<&'static str>,
    body: Vec<u8>,
    creds: Creds,
    status: u16,
) -> Step {
    Step {
        name,
        method,
        control,
        path,
        content_type,
        body,
        creds,
        status,
    }
}

const HTTP_CLASSIFY: (&str, Option<&str>, &str) = ("POST", Some("/http-invoke"), "/classify");
const INVOKE: (&str, Option<&str>, &str) = ("POST", Some("/invoke"), "/invoke");

fn steps() -> Vec<Step> {
    use Creds::*;
    let json = Some("application/json");
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(40, 30));
    let classify_json = format!(r#"{{"image": "{b64}"}}"#).into_bytes();
    let url = |u: &str| format!(r#"{{"url": "{u}"}}"#).into_bytes();
    let event = |key: &str| {
        TEMPLATE
            .replace("\"image/a.jpg\"", &format!("\"{key}\""))
            .into_bytes()
    };
    vec![
        step(
            "page",
            ("GET", Some("/http-invoke"), "/"),
            None,
            vec![],
            Headers,
            200,
        ),
        step(
            "health",
            ("GET", Some("/http-invoke"), "/healthz"),
            None,
            vec![],
            Headers,
            200,
        ),
        step(
            "raw image",
            HTTP_CLASSIFY,
            Some("image/png"),
            png(32, 32),
            Headers,
            200,
        ),
        step(
            "json image",
            HTTP_CLASSIFY,
            json,
            classify_json.clone(),
            Headers,
            200,
        ),
        step(
            "bad base64",
            HTTP_CLASSIFY,
            json,
            br#"{"image":"@@@"}"#.to_vec(),
            Headers,
            400,
        ),
        step(
            "bad json",
            HTTP_CLASSIFY,
            json,
            b"{oops".to_vec(),
            Headers,
            400,
        ),
        step(
            "bad top_k",
            HTTP_CLASSIFY,
            json,
            br#"{"image":"aGk=","top_k":99}"#.to_vec(),
            Headers,
            400,
        ),
        step(
            "not an image",
            HTTP_CLASSIFY,
            Some("image/png"),
            b"plain text".to_vec(),
            Headers,
            415,
        ),
        step(
            "unsupported type",
            HTTP_CLASSIFY,
            Some("text/plain"),
            b"x".to_vec(),
            Headers,
            415,
        ),
        step(
            "empty body",
            HTTP_CLASSIFY,
            Some("image/png"),
            vec![],
            Headers,
            400,
        ),
        step(
            "too large",
            HTTP_CLASSIFY,
            Some("image/png"),
            vec![0; 2 << 20],
            Headers,
            413,
        ),
        step(
            "oss url, header creds denied",
            HTTP_CLASSIFY,
            json,
            url("oss://images/s/cat.png"),
            Headers,
            403,
        ),
        step(
            "oss url, env creds",
            HTTP_CLASSIFY,
            json,
            url("oss://images/s/cat.png"),
            Empty,
            200,
        ),
        step(
            "oss url, no cred headers",
            HTTP_CLASSIFY,
            json,
            url("https://images.oss-cn-hangzhou.aliyuncs.com/s/cat.png"),
            Absent,
            200,
        ),
        step(
            "oss url missing",
            HTTP_CLASSIFY,
            json,
            url("oss://images/s/missing.png"),
            Empty,
            404,
        ),
        step(
            "oss url refused",
            HTTP_CLASSIFY,
            json,
            url("http://169.254.169.254/latest/meta-data"),
            Headers,
            400,
        ),
        step(
            "invoke classify",
            INVOKE,
            Some("application/octet-stream"),
            classify_json,
            Headers,
            200,
        ),
        step(
            "invoke garbage",
            INVOKE,
            Some("application/octet-stream"),
            b"\x00garbage".to_vec(),
            Headers,
            // Not JSON: final, so x-fc-status 200 with the error body (FC must not retry).
            200,
        ),
        step(
            "event, env creds",
            INVOKE,
            Some("application/octet-stream"),
            event("s/cat.jpg"),
            Empty,
            200,
        ),
        step(
            "event, header creds denied",
            INVOKE,
            Some("application/octet-stream"),
            event("s/cat.jpg"),
            Headers,
            404,
        ),
        step(
            "event, missing object",
            INVOKE,
            Some("application/octet-stream"),
            event("s/gone.jpg"),
            Absent,
            200,
        ),
        step(
            "initialize",
            ("POST", Some("/initialize"), "/initialize"),
            None,
            vec![],
            Headers,
            200,
        ),
        step(
            "unknown route",
            ("GET", Some("/http-invoke"), "/nope"),
            None,
            vec![],
            Headers,
            404,
        ),
        step(
            "wrong method",
            ("DELETE", Some("/http-invoke"), "/classify"),
            None,
            vec![],
            Headers,
            405,
        ),
        step(
            "pre-stop",
            ("GET", None, "/pre-stop"),
            None,
            vec![],
            Headers,
            200,
        ),
    ]
}

fn request(server: &Spawned, s: &Step) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(s.method.as_bytes()).expect("method");
    let mut r = client()
        .request(method, server.url(s.path))
        .header(
            "x-fc-request-id",
            format!("1-secrets-{}", s.name.replace(' ', "-")),
        )
        .header("x-fc-region", "cn-hangzhou");
    if let Some(c) = s.control {
        r = r.header("x-fc-control-path", c);
    }
    if let Some(ct) = s.content_type {
        r = r.header("content-type", ct);
    }
    r = match s.creds {
        Creds::Headers => r
            .header("x-fc-access-key-id", HDR_ID)
            .header("x-fc-access-key-secret", HDR_SECRET)
            .header("x-fc-security-token", HDR_TOKEN),
        Creds::Empty => r
            .header("x-fc-access-key-id", "")
            .header("x-fc-access-key-secret", "")
            .header("x-fc-security-token", ""),
        Creds::Absent => r,
    };
    r.body(s.body.clone())
}

fn leaked_in(text: &str) -> Vec<&'static str> {
    SECRETS
        .iter()
        .copied()
        .filter(|s| text.contains(s))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_value_appears_in_logs_or_responses_on_any_path() {
    let oss = start_oss();
    oss.create_bucket("images", "cn-hangzhou");
    oss.create_bucket("testbucket", "cn-shanghai");
    oss.put("images", "s/cat.png", png(64, 48));
    oss.put("testbucket", "s/cat.jpg", jpeg(64, 48));
    let (endpoint, allowed) = (oss.endpoint(), oss.host_port());
    let mut server = tokio::task::spawn_blocking(move || {
        let env = [
            ("OSS_ENDPOINT", endpoint.as_str()),
            ("OSS_ALLOWED_HOSTS", allowed.as_str()),
            ("OSS_RETRY_BASE_MS", "1"),
            ("FC_REGION", "cn-hangzhou"),
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", ENV_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ENV_SECRET),
            ("ALIBABA_CLOUD_SECURITY_TOKEN", ENV_TOKEN),
            ("RUST_LOG", "trace"),
        ];
        let s = Spawned::start(&["--max-body-bytes", "1048576"], &env);
        s.wait_ready();
        s
    })
    .await
    .expect("spawn");

    let mut failures = Vec::new();
    for s in steps() {
        let response = request(&server, &s).send().await.expect("request");
        let status = response.status().as_u16();
        let headers: String = response
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        let body = response.bytes().await.expect("body");
        let text = format!("{headers}\n{}", String::from_utf8_lossy(&body));
        if status != s.status {
            failures.push(format!(
                "{} ({:?}): status {status}, expected {}: {text}",
                s.name, s.creds, s.status
            ));
        }
        let leaked = leaked_in(&text);
        if !leaked.is_empty() {
            failures.push(format!("{}: response contains {leaked:?}: {text}", s.name));
        }
    }
    // The env credentials signed successfully; the header credentials reached OSS and were
    // denied: both sets were really used.
    let seen = oss.requests();
    assert!(seen.iter().any(|r| r.verdict.is_ok()), "{seen:?}");
    assert!(
        seen.iter()
            .any(|r| r.verdict.as_ref().is_err_and(|c| c == "InvalidAccessKeyId")),
        "{seen:?}"
    );
    let exit = tokio::task::block_in_place(|| server.wait_exit(60));
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "{}", server.output());
    let output = server.output();
    assert!(
        output.contains("FC Invoke End RequestId: 1-secrets-oss-url,-env-creds"),
        "{output}"
    );
    assert!(
        output.lines().count() > 50,
        "trace logging produced too little to prove anything"
    );
    let leaked = leaked_in(&output);
    assert!(
        leaked.is_empty(),
        "server output contains {leaked:?}:\n{output}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
