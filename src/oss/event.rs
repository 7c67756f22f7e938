//! OSS upload events: for each new object, fetch it, classify it, write `<prefix><key>.json`.
//!
//! Event format: docs/function-compute.md §2 (`{"events":[{eventName, oss:{bucket, object}, …}]}`,
//! `eventName` without the `oss:` prefix). Parsing is lenient: numeric fields may be absent or
//! `null`, `ownerIdentity` may be a string or an object.
//!
//! Delivery is at-least-once, so processing is idempotent: the result object's key depends only
//! on the source key ([`result_key`]), and a re-delivery overwrites it. Every record ends one of
//! these ways, none silently:
//! - classified: a result object is written;
//! - permanent failure (not an image, object gone, object too large, a key this client cannot
//!   fetch): an error result object is written and the record counts as done, so FC does not
//!   retry it forever;
//! - transient failure (OSS 5xx, timeouts, cut-off transfers, denied writes): nothing is written
//!   and the report says the invocation failed, so the caller answers `x-fc-status: 404` and FC
//!   retries;
//! - skipped on purpose (not a creation; under the result prefix, as sent or `%`-decoded);
//! - invalid: the record names no place a result could go (no `oss` section, no key, a bucket or
//!   region that is not a valid name); listed in the answer and logged, never retried.
//!
//! The result of key `k` is `<prefix>k.json` when that is a valid OSS key, otherwise (OSS keys
//! have at most 1023 bytes, so a source key over 1023 − 5 − prefix bytes has no such name)
//! `<prefix><sha256 of k, hex>.json`; the object's `source.key` always holds `k` itself.

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use super::url::percent_decode;
use super::{Access, Location, ObjectRef, OssError, OssService};

/// Content type of result objects.
pub const RESULT_CONTENT_TYPE: &str = "application/json";

/// Why the body is not an OSS event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Valid JSON, but without an `events` array: probably a direct classify request.
    #[error("the body is not an OSS event (no \"events\" array)")]
    NotAnEvent,
    /// Not JSON, or an `events` array of the wrong shape.
    #[error("malformed OSS event: {0}")]
    Malformed(String),
}

/// The `/invoke` body of an OSS trigger.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OssEvent {
    /// One record per object operation.
    pub events: Vec<EventRecord>,
}

/// One object operation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    /// `ObjectCreated:PutObject`, `ObjectRemoved:DeleteObject`, …
    #[serde(default)]
    pub event_name: String,
    /// `acs:oss`.
    #[serde(default)]
    pub event_source: String,
    /// ISO-8601 time of the operation.
    #[serde(default)]
    pub event_time: String,
    /// Region of the bucket, e.g. `cn-hangzhou`.
    #[serde(default)]
    pub region: Option<String>,
    /// Bucket and object.
    #[serde(default)]
    pub oss: Option<OssSection>,
}

/// The `oss` part of a record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OssSection {
    /// The bucket.
    pub bucket: BucketInfo,
    /// The object.
    pub object: ObjectInfo,
}

/// `oss.bucket`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BucketInfo {
    /// Bucket name.
    pub name: String,
}

/// `oss.object`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ObjectInfo {
    /// Object key, as OSS sends it (not URL-encoded per the OSS docs).
    pub key: String,
    /// Size in bytes.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size: Option<u64>,
    /// ETag (uppercase hex MD5 for simple uploads).
    #[serde(default, rename = "eTag")]
    pub e_tag: Option<String>,
}

/// A number, a numeric string, or null/absent.
fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

impl OssEvent {
    /// Parses an `/invoke` body (any content type; FC sends `application/octet-stream`).
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| EventError::Malformed(e.to_string()))?;
        if !value.get("events").is_some_and(serde_json::Value::is_array) {
            return Err(EventError::NotAnEvent);
        }
        serde_json::from_value(value).map_err(|e| EventError::Malformed(e.to_string()))
    }
}

/// A classification that failed, as reported by the classifier callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifyFailure {
    /// The object is not a usable image: permanent, recorded in an error result object.
    Rejected {
        /// Machine-readable code, e.g. `invalid_image`.
        code: String,
        /// Human-readable explanation.
        message: String,
    },
    /// The classifier could not run (not ready, internal error): retry the invocation.
    Unavailable(String),
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Classified; the result object was written.
    Classified,
    /// Permanently unusable; an error result object was written.
    Rejected,
    /// Not processed on purpose (not a creation, or under the result prefix).
    Skipped,
    /// The record itself is unusable (no key, bad bucket name); nothing was written.
    Invalid,
    /// A transient failure; nothing was written and the invocation should be retried.
    Failed,
}

/// Outcome of one record, listed in the `/invoke` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordReport {
    /// Source bucket (as in the event).
    pub bucket: String,
    /// Source key (as in the event).
    pub key: String,
    /// What happened.
    pub status: RecordStatus,
    /// `bucket/key` of the result object written, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Machine-readable reason it was skipped, rejected or failed (e.g. `oss_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Why it was skipped, rejected or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Outcome of a whole event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventReport {
    /// One entry per record, in event order.
    pub records: Vec<RecordReport>,
}

impl EventReport {
    /// False when a record failed transiently: answer `x-fc-status: 404` so FC retries.
    pub fn succeeded(&self) -> bool {
        self.records
            .iter()
            .all(|r| r.status != RecordStatus::Failed)
    }
}

/// Source facts copied into a result object.
#[derive(Debug, Serialize)]
struct SourceInfo<'a> {
    bucket: &'a str,
    key: &'a str,
    #[serde(rename = "eTag")]
    e_tag: Option<&'a str>,
    size: u64,
    #[serde(rename = "eventName")]
    event_name: &'a str,
    #[serde(rename = "eventTime")]
    event_time: &'a str,
}

#[derive(Debug, Serialize)]
struct ErrorInfo<'a> {
    code: &'a str,
    message: &'a str,
}

/// The JSON written to `<prefix><key>.json`. Classification fields (`model`, `predictions`,
/// `timing_ms`, …) come flattened from the callback's output.
#[derive(Debug, Serialize)]
struct ResultObject<'a, T: Serialize> {
    status: &'static str,
    source: SourceInfo<'a>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    classification: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorInfo<'a>>,
    fetch_ms: f64,
    processing_ms: f64,
}

/// How OSS gets an object classified: the one interface it asks of the rest of the function,
/// so that it never depends on the model. A closure `Fn(Bytes) -> impl Future<Output =
/// Result<T, ClassifyFailure>>` is one.
pub trait ObjectClassifier {
    /// What a result object records about the classification (serialised as is).
    type Output: Serialize;
    /// Classifies one object's bytes; a failure says whether a retry may help.
    fn classify(&self, image: Bytes)
    -> impl Future<Output = Result<Self::Output, ClassifyFailure>>;
}

impl<F, Fut, T> ObjectClassifier for F
where
    F: Fn(Bytes) -> Fut,
    Fut: Future<Output = Result<T, ClassifyFailure>>,
    T: Serialize,
{
    type Output = T;

    fn classify(&self, image: Bytes) -> impl Future<Output = Result<T, ClassifyFailure>> {
        self(image)
    }
}

/// Processes an OSS event body: every `ObjectCreated:*` record is fetched, passed to `classify`
/// and its result written back. Records are handled one after another, each independently.
pub async fn process_event<C: ObjectClassifier>(
    body: &[u8],
    access: &Access,
    oss: &OssService,
    classify: C,
) -> Result<EventReport, EventError> {
    let event = OssEvent::parse(body)?;
    let mut records = Vec::with_capacity(event.events.len());
    for record in &event.events {
        let report = process_record(record, access, oss, &classify).await;
        tracing::info!(
            bucket = %report.bucket, key = %report.key, status = ?report.status,
            reason = report.reason.as_deref().unwrap_or(""), "OSS event record"
        );
        records.push(report);
    }
    Ok(EventReport { records })
}

/// The key of the result object of source key `key`: `<prefix><key>.json` when that is a valid
/// OSS key, else [`hashed_result_key`] (a key too long to take the suffix, or one with segments
/// like `..` that cannot be addressed).
pub fn result_key(prefix: &str, key: &str) -> String {
    let plain = format!("{prefix}{key}.json");
    // Any valid bucket name: only the key is being checked.
    if ObjectRef::new("bucket", &plain).is_ok() {
        plain
    } else {
        hashed_result_key(prefix, key)
    }
}

/// `<prefix><sha256 of key, lower-case hex>.json`: the result name of a key that has no
/// `<prefix><key>.json` (see [`result_key`]).
pub fn hashed_result_key(prefix: &str, key: &str) -> String {
    format!(
        "{prefix}{}.json",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// A record that passed the checks and is ready for processing.
struct Job<'r> {
    record: &'r EventRecord,
    /// The source object, or why it cannot be fetched (then an error result is written).
    source: Result<Location, OssError>,
    /// The result object of the key as sent: result bucket, endpoint and region.
    result: Location,
}

impl Job<'_> {
    /// The result object of `key` (the key as sent, or its `%`-decoded form if that was found).
    fn result_for(&self, key: &str, prefix: &str) -> Result<Location, OssError> {
        let object = ObjectRef::new(self.result.object.bucket(), &result_key(prefix, key))?;
        Ok(Location {
            object,
            ..self.result.clone()
        })
    }
}

async fn process_record<C: ObjectClassifier>(
    record: &EventRecord,
    access: &Access,
    oss: &OssService,
    classify: &C,
) -> RecordReport {
    let (bucket, key) = record
        .oss
        .as_ref()
        .map(|o| (o.bucket.name.clone(), o.object.key.clone()))
        .unwrap_or_default();
    let report = RecordReport {
        bucket,
        key,
        status: RecordStatus::Skipped,
        result: None,
        code: None,
        reason: None,
    };
    let job = match plan(record, access, oss) {
        Ok(Some(job)) => job,
        Ok(None) => return report.with(RecordStatus::Skipped, None, Some(skip_reason(record))),
        Err(e) => {
            let why = (e.code().to_string(), e.to_string());
            return report.with(RecordStatus::Invalid, None, Some(why));
        }
    };
    match run(&job, access, oss, classify).await {
        Ok(done) => report.with(done.status, Some(done.result), done.rejection),
        Err(why) => report.with(RecordStatus::Failed, None, Some(why)),
    }
}

impl RecordReport {
    fn with(
        mut self,
        status: RecordStatus,
        result: Option<String>,
        why: Option<(String, String)>,
    ) -> Self {
        self.status = status;
        self.result = result;
        (self.code, self.reason) = why.unzip();
        self
    }
}

fn skip_reason(record: &EventRecord) -> (String, String) {
    if is_creation(record) {
        let why = "the key is under the result prefix, as sent or %-decoded (trigger-loop guard)";
        ("under_result_prefix".into(), why.into())
    } else {
        let why = format!("{:?} is not an ObjectCreated event", record.event_name);
        ("not_object_created".into(), why)
    }
}

fn is_creation(record: &EventRecord) -> bool {
    record.event_name.starts_with("ObjectCreated:")
}

/// Whether `key` is under the result `prefix`, as sent or `%`-decoded (the form a retry of a
/// missing key would fetch, see [`fetch_source`]).
fn under_result_prefix(key: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return false;
    }
    key.starts_with(prefix) || percent_decode(key).is_some_and(|d| d.starts_with(prefix))
}

/// Checks a record and computes source and result locations; `Ok(None)` means skip it, `Err`
/// that no result can be written for it.
fn plan<'r>(
    record: &'r EventRecord,
    access: &Access,
    oss: &OssService,
) -> Result<Option<Job<'r>>, OssError> {
    let section = record
        .oss
        .as_ref()
        .ok_or_else(|| OssError::RefusedUrl("the record has no \"oss\" section".into()))?;
    let key = section.object.key.as_str();
    let prefix = &oss.config().result_prefix;
    if !is_creation(record) || under_result_prefix(key, prefix) {
        return Ok(None);
    }
    if key.is_empty() {
        return Err(OssError::RefusedUrl(
            "the record names no object key".into(),
        ));
    }
    let region = record.region.as_deref().filter(|r| !r.is_empty());
    let result_bucket = oss
        .config()
        .result_bucket
        .as_deref()
        .unwrap_or(&section.bucket.name);
    let result = ObjectRef::new(result_bucket, &result_key(prefix, key))?;
    let result = oss.locate(result, region, access)?;
    let source = ObjectRef::new(&section.bucket.name, key)
        .and_then(|object| oss.locate(object, region, access));
    Ok(Some(Job {
        record,
        source,
        result,
    }))
}

/// A record processed to the end: a result object was written.
struct Done {
    status: RecordStatus,
    /// `bucket/key` of the result object.
    result: String,
    /// Code and message of the error result, when rejected.
    rejection: Option<(String, String)>,
}

/// Fetch, classify, write; `Err` is the code and message of a transient failure.
async fn run<C: ObjectClassifier>(
    job: &Job<'_>,
    access: &Access,
    oss: &OssService,
    classify: &C,
) -> Result<Done, (String, String)> {
    let started = Instant::now();
    let prefix = &oss.config().result_prefix;
    let fetched = match &job.source {
        Ok(source) => fetch_source(source, access, oss, prefix).await,
        Err(refused) => Err(refused.clone()),
    };
    let fetch_time = started.elapsed();
    let section = job.record.oss.as_ref();
    let sent_key = section.map_or("", |s| s.object.key.as_str());
    let sent_bucket = section.map_or("", |s| s.bucket.name.as_str());
    let (found, size, outcome) = match fetched {
        Ok((bytes, found)) => {
            let size = bytes.len() as u64;
            (Some(found), size, classify.classify(bytes).await)
        }
        Err(e) if e.is_transient() => return Err((e.code().into(), e.to_string())),
        Err(e) => (
            job.source.as_ref().ok().cloned(),
            0,
            Err(ClassifyFailure::Rejected {
                code: e.code().into(),
                message: e.to_string(),
            }),
        ),
    };
    let (bucket, key) = found.as_ref().map_or((sent_bucket, sent_key), |f| {
        (f.object.bucket(), f.object.key())
    });
    let source = SourceInfo {
        bucket,
        key,
        e_tag: section.and_then(|s| s.object.e_tag.as_deref()),
        size: section.and_then(|s| s.object.size).unwrap_or(size),
        event_name: &job.record.event_name,
        event_time: &job.record.event_time,
    };
    let (status, classification, error) = match &outcome {
        Ok(c) => (RecordStatus::Classified, Some(c), None),
        Err(ClassifyFailure::Rejected { code, message }) => (
            RecordStatus::Rejected,
            None,
            Some(ErrorInfo { code, message }),
        ),
        Err(ClassifyFailure::Unavailable(why)) => {
            let why = format!("classifier unavailable: {why}");
            return Err(("classifier_unavailable".into(), why));
        }
    };
    let rejection = error
        .as_ref()
        .map(|e| (e.code.to_string(), e.message.to_string()));
    let object = ResultObject {
        status: if error.is_some() { "error" } else { "ok" },
        source,
        classification,
        error,
        fetch_ms: crate::millis(fetch_time),
        processing_ms: crate::millis(started.elapsed()),
    };
    let body = serde_json::to_vec_pretty(&object).map_err(|e| {
        (
            "internal".to_string(),
            format!("cannot encode the result: {e}"),
        )
    })?;
    let result = job
        .result_for(key, prefix)
        .map_err(|e| (e.code().to_string(), e.to_string()))?;
    oss.put_object(&result, Bytes::from(body), RESULT_CONTENT_TYPE, access)
        .await
        .map_err(|e| {
            (
                e.code().to_string(),
                format!("cannot write the result: {e}"),
            )
        })?;
    Ok(Done {
        status,
        result: result.object.to_string(),
        rejection,
    })
}

/// GetObject with the raw key; on 404, if the key has `%` escapes, once more with it decoded
/// (docs/function-compute.md §2: OSS documents raw keys, but be defensive) — never a decoded key under
/// the result prefix (the trigger-loop guard, also checked by `plan`).
async fn fetch_source(
    source: &Location,
    access: &Access,
    oss: &OssService,
    prefix: &str,
) -> Result<(Bytes, Location), OssError> {
    match oss.get_object(source, access).await {
        Err(e @ OssError::NotFound { .. }) => {
            let key = source.object.key();
            let decoded = key
                .contains('%')
                .then(|| percent_decode(key))
                .flatten()
                .filter(|d| d != key && (prefix.is_empty() || !d.starts_with(prefix)))
                .and_then(|d| ObjectRef::new(source.object.bucket(), &d).ok());
            match decoded {
                Some(object) => {
                    let retry = Location {
                        object,
                        ..source.clone()
                    };
                    let bytes = oss.get_object(&retry, access).await?;
                    Ok((bytes, retry))
                }
                None => Err(e),
            }
        }
        other => other.map(|bytes| (bytes, source.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_fields_parse() {
        let body = br#"{"events":[{"eventName":"ObjectCreated:PutObject","oss":{
            "bucket":{"name":"b","ownerIdentity":{"principalId":"1"}},
            "object":{"key":"a.jpg","size":"12","deltaSize":null}}}]}"#;
        let event = OssEvent::parse(body).unwrap();
        let object = &event.events[0].oss.as_ref().unwrap().object;
        assert_eq!(object.size, Some(12));
        assert_eq!(object.e_tag, None);
    }

    #[test]
    fn non_events_are_told_apart_from_malformed_events() {
        assert_eq!(
            OssEvent::parse(br#"{"url":"oss://b/k"}"#),
            Err(EventError::NotAnEvent)
        );
        assert!(matches!(
            OssEvent::parse(b"not json"),
            Err(EventError::Malformed(_))
        ));
        assert!(matches!(
            OssEvent::parse(br#"{"events":[{"oss":{"bucket":{}}}]}"#),
            Err(EventError::Malformed(_))
        ));
    }

    #[test]
    fn result_names_fall_back_to_the_hashed_name_past_the_key_limit() {
        assert_eq!(result_key("results/", "a/b.jpg"), "results/a/b.jpg.json");
        // 1023 − "results/".len() − ".json".len() = 1010 bytes still fit; 1011 do not.
        let fits = "k".repeat(1010);
        assert_eq!(
            result_key("results/", &fits),
            format!("results/{fits}.json")
        );
        let long = "k".repeat(1011);
        let hashed = result_key("results/", &long);
        assert_eq!(hashed, hashed_result_key("results/", &long));
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hashed_result_key("out/", "abc"),
            "out/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.json"
        );
        // A key whose plain result name would have a `..` segment is hashed too.
        assert!(result_key("results/", "a/../b").starts_with("results/"));
        assert_ne!(result_key("results/", "a/../b"), "results/a/../b.json");
    }

    #[test]
    fn the_result_prefix_guard_sees_percent_decoded_keys() {
        assert!(under_result_prefix("results/a.jpg.json", "results/"));
        assert!(under_result_prefix("results%2Fa.jpg.json", "results/"));
        assert!(under_result_prefix("%72esults/a.jpg", "results/"));
        assert!(!under_result_prefix("uploads/results%2Fa.jpg", "results/"));
        assert!(!under_result_prefix("anything", ""));
    }
}
