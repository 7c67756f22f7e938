//! OSS URL resolution, the SSRF gate: `OssService::resolve` under three configurations (default
//! internal endpoints, an `OSS_ENDPOINT`, an allow-listed test host), with the request's region
//! taken from the input too (it comes from `x-fc-region` / `FC_REGION`). Property: whatever is
//! accepted, the request URL built from it parses, and its host is an `*.aliyuncs.com` name or
//! exactly the allow-listed host — nothing else is ever contacted.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use resnet18_fc::oss::{Access, OssConfig, OssService};

const ALLOWED: &str = "127.0.0.1";
const ALLOWED_PORT: u16 = 9999;

fn services() -> &'static [OssService] {
    static SERVICES: OnceLock<Vec<OssService>> = OnceLock::new();
    SERVICES.get_or_init(|| {
        let configs: [&[(&str, &str)]; 3] = [
            &[],
            &[("OSS_ENDPOINT", "oss-cn-shanghai.aliyuncs.com")],
            &[
                ("OSS_ENDPOINT", "http://127.0.0.1:9999"),
                ("OSS_ALLOWED_HOSTS", "127.0.0.1:9999"),
            ],
        ];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _guard = runtime.enter();
        configs
            .iter()
            .map(|vars| {
                let config = OssConfig::from_lookup(|k| {
                    vars.iter()
                        .find(|(n, _)| *n == k)
                        .map(|(_, v)| v.to_string())
                })
                .expect("config");
                OssService::new(config).expect("service")
            })
            .collect()
    })
}

fn check(url: &str) {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?} does not parse: {e}"));
    let host = parsed.host_str().unwrap_or_default();
    let oss =
        host.ends_with(".aliyuncs.com") && parsed.port().is_none() && parsed.scheme() == "https";
    let allowed = host == ALLOWED && parsed.port() == Some(ALLOWED_PORT);
    assert!(oss || allowed, "{url:?} would contact {host:?}");
    assert!(
        parsed.query().is_none() && parsed.fragment().is_none(),
        "{url:?}"
    );
    assert!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "{url:?}"
    );
}

fuzz_target!(
    // Built before libFuzzer arms its per-input timer: each service loads the system's CA
    // certificates, which under ASan + coverage on a loaded machine took over 20 s and made the
    // first input of a campaign a "timeout" (fuzz/README.md, findings).
    init: {
        services();
    },
    |data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        // "region\nurl": the region as a request would carry it, then the URL.
        let (region, input) = match text.split_once('\n') {
            Some((r, u)) => (Some(r.to_string()), u),
            None => (Some("cn-hangzhou".to_string()), text),
        };
        for service in services() {
            for region in [region.clone(), None] {
                let access = Access {
                    credentials: None,
                    region,
                };
                if let Ok(location) = service.resolve(input, &access) {
                    check(&location.endpoint.object_url(&location.object));
                }
            }
        }
    }
);
