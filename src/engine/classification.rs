//! What the engine answers for one image: one family of types ([`Prediction`] is the
//! classifier's own), serialised as they are into the
//! `/classify` answer (`http`) and into OSS result objects (`results/<key>.json`).
//!
//! ```text
//! {"model": "resnet18",
//!  "predictions": [{"rank": 1, "index": 281, "label": "tabby", "score": 0.61}, …],
//!  "timing_ms": {"fetch": 0.0, "decode": 4.1, "inference": 38.2, "total": 45.0}}
//! ```
//!
//! The engine fills `decode`, `inference` and `queued`; the HTTP answer replaces `queued` with
//! `fetch` and `total`, a result object keeps `queued` (see [`Timing`]).

use serde::{Deserialize, Serialize};

use crate::classifier::MODEL_NAME;
pub use crate::classifier::Prediction;

/// One classified image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Always [`MODEL_NAME`].
    pub model: String,
    /// Best first.
    pub predictions: Vec<Prediction>,
    /// Where the time went, in milliseconds.
    pub timing_ms: Timing,
    /// Images in the forward pass this one was part of (1 when not batched); not serialised.
    #[serde(skip)]
    pub batch_size: usize,
}

impl Classification {
    /// The classification of [`MODEL_NAME`] with these predictions and times.
    pub fn new(predictions: Vec<Prediction>, timing_ms: Timing, batch_size: usize) -> Self {
        Self {
            model: MODEL_NAME.to_string(),
            predictions,
            timing_ms,
            batch_size,
        }
    }
}

/// Milliseconds per stage, rounded to 0.1 ms ([`crate::millis`]). The stages a
/// caller does not report are absent from the JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Fetching the image from a URL (0 for inline images); set by the HTTP answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<f64>,
    /// Decoding and preprocessing (resize, crop, normalise).
    pub decode: f64,
    /// The forward pass (shared by the images of a batch).
    pub inference: f64,
    /// Waiting for a free worker and in the batch queue; kept in OSS result objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<f64>,
    /// Whole request, from arrival to answer (includes queueing); set by the HTTP answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Lang;

    fn tabby() -> Prediction {
        Prediction {
            rank: 1,
            index: 281,
            label: "tabby".into(),
            label_en: None,
            label_zh: None,
            score: 0.5,
        }
    }

    #[test]
    fn english_predictions_keep_their_wire_shape() {
        let json = serde_json::to_value(tabby().in_lang(Lang::En)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rank": 1, "index": 281, "label": "tabby", "score": 0.5})
        );
    }

    #[test]
    fn chinese_predictions_carry_the_english_name_too() {
        let json = serde_json::to_value(tabby().in_lang(Lang::Zh)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rank": 1, "index": 281, "label": "虎斑猫", "label_en": "tabby", "score": 0.5})
        );
        let json = serde_json::to_value(tabby().with_both_names()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"rank": 1, "index": 281, "label": "tabby", "label_zh": "虎斑猫", "score": 0.5})
        );
    }

    #[test]
    fn result_objects_and_answers_show_only_their_stages() {
        let timing = Timing {
            decode: 1.5,
            inference: 2.0,
            queued: Some(0.5),
            ..Timing::default()
        };
        let c = Classification::new(vec![tabby()], timing, 2);
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({
                "model": "resnet18",
                "predictions": [{"rank": 1, "index": 281, "label": "tabby", "score": 0.5}],
                "timing_ms": {"decode": 1.5, "inference": 2.0, "queued": 0.5},
            })
        );
        let answer = Timing {
            fetch: Some(0.0),
            queued: None,
            total: Some(4.0),
            ..timing
        };
        assert_eq!(
            serde_json::to_value(answer).unwrap(),
            serde_json::json!({"fetch": 0.0, "decode": 1.5, "inference": 2.0, "total": 4.0})
        );
    }
}
