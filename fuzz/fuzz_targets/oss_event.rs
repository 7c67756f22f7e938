//! OSS trigger events end to end through `process_event`, against an allow-listed OSS endpoint
//! that refuses connections (127.0.0.1:1), so every record that passes the checks fails fast
//! and transiently. Properties: never a panic; one report per record; a record is skipped,
//! invalid or failed (nothing can be written); failures carry a code.
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use resnet18_fc::oss::event::{ClassifyFailure, OssEvent, RecordStatus, process_event};
use resnet18_fc::oss::{Access, Credentials, OssConfig, OssService};

struct World {
    runtime: tokio::runtime::Runtime,
    service: OssService,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let vars = [
            ("OSS_ENDPOINT", "http://127.0.0.1:1"),
            ("OSS_ALLOWED_HOSTS", "127.0.0.1:1"),
            ("OSS_MAX_ATTEMPTS", "1"),
            ("OSS_CONNECT_TIMEOUT_MS", "200"),
        ];
        let config = OssConfig::from_lookup(|k| {
            vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        })
        .expect("config");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let service = runtime.block_on(async { OssService::new(config).expect("service") });
        World { runtime, service }
    })
}

async fn never_called(_: Bytes) -> Result<(), ClassifyFailure> {
    panic!("nothing can be downloaded from 127.0.0.1:1");
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let access = Access {
        credentials: Some(Credentials::new("STS.fuzz", "fuzz-secret", Some("token"))),
        region: Some("cn-hangzhou".into()),
    };
    let parsed = OssEvent::parse(data);
    let report = world
        .runtime
        .block_on(process_event(data, &access, &world.service, never_called));
    let (Ok(event), Ok(report)) = (parsed, report) else {
        return;
    };
    assert_eq!(event.events.len(), report.records.len());
    for record in &report.records {
        assert!(record.result.is_none(), "{record:?}");
        assert!(
            matches!(
                record.status,
                RecordStatus::Skipped | RecordStatus::Invalid | RecordStatus::Failed
            ),
            "{record:?}"
        );
        assert!(record.code.is_some(), "{record:?}");
    }
});
