//! TorchVision's 1000 ImageNet category names, in class-index order, embedded in the binary,
//! with a Simplified-Chinese name for each class.
//!
//! Source of the English names: `_IMAGENET_CATEGORIES` in `torchvision/models/_meta.py`
//! (torchvision 0.29.2 wheel on PyPI), one name per line in `model/imagenet_classes.txt`.
//! The Chinese names in `model/imagenet_classes.zh.txt` were written for this project, line `i`
//! naming the same class as line `i` of the English list; all 1000 are distinct.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

const RAW: &str = include_str!("../model/imagenet_classes.txt");
const RAW_ZH: &str = include_str!("../model/imagenet_classes.zh.txt");

/// All 1000 labels, index `i` naming class `i` (281 = "tabby").
pub fn imagenet_labels() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| RAW.lines().collect())
}

/// All 1000 Simplified-Chinese labels, index `i` naming class `i` (281 = "虎斑猫").
pub fn imagenet_labels_zh() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| RAW_ZH.lines().collect())
}

/// Label of class `index`, or `None` outside `0..1000`.
pub fn label(index: usize) -> Option<&'static str> {
    imagenet_labels().get(index).copied()
}

/// Simplified-Chinese label of class `index`, or `None` outside `0..1000`.
pub fn label_zh(index: usize) -> Option<&'static str> {
    imagenet_labels_zh().get(index).copied()
}

/// The language class names are given in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Lang {
    /// English: TorchVision's names (the default).
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The code accepted by [`Lang::from_str`] and shown to users: `en` or `zh`.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh",
        }
    }

    /// Label of class `index` in this language, or `None` outside `0..1000`.
    pub fn label(self, index: usize) -> Option<&'static str> {
        match self {
            Self::En => label(index),
            Self::Zh => label_zh(index),
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A language code other than `en` and `zh`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported language; use `en` (English) or `zh` (Simplified Chinese)")]
pub struct UnknownLang;

/// A BCP 47 subtag: 1 to 8 ASCII letters or digits.
fn is_subtag(text: &str) -> bool {
    (1..=8).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl FromStr for Lang {
    type Err = UnknownLang;

    /// A language tag, ASCII case-insensitive, surrounding whitespace ignored: `en` or any
    /// `en-…` is English; `zh`, `zh-CN`, `zh-SG`, `zh-Hans` and `zh-Hans-…` are Simplified
    /// Chinese. Traditional Chinese (`zh-TW`, `zh-HK`, `zh-Hant`) is refused: the names are
    /// Simplified.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let tag = s.trim().to_ascii_lowercase();
        let mut subtags = tag.split(['-', '_']);
        let primary = subtags.next().unwrap_or_default();
        let rest: Vec<&str> = subtags.collect();
        if !rest.iter().all(|subtag| is_subtag(subtag)) {
            return Err(UnknownLang);
        }
        match (primary, rest.first().copied()) {
            ("en", _) => Ok(Self::En),
            ("zh", None | Some("cn" | "sg" | "hans")) => Ok(Self::Zh),
            _ => Err(UnknownLang),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn labels_are_torchvision_imagenet_categories_in_order() {
        let labels = imagenet_labels();
        assert_eq!(labels.len(), crate::resnet::NUM_CLASSES);
        assert_eq!(label(0), Some("tench"));
        assert_eq!(label(281), Some("tabby"));
        assert_eq!(label(282), Some("tiger cat"));
        assert_eq!(label(999), Some("toilet tissue"));
        assert_eq!(label(1000), None);
    }

    #[test]
    fn chinese_labels_cover_every_class() {
        assert_eq!(imagenet_labels_zh().len(), crate::resnet::NUM_CLASSES);
        assert_eq!(label_zh(1000), None);
        for (i, name) in imagenet_labels_zh().iter().enumerate() {
            assert!(
                !name.trim().is_empty(),
                "class {i} has an empty Chinese name"
            );
            assert_eq!(
                name.trim(),
                *name,
                "class {i} {name:?} has stray whitespace"
            );
            assert!(
                name.chars().any(|c| ('\u{3400}'..='\u{9fff}').contains(&c)),
                "class {i} {name:?} has no Chinese character"
            );
        }
    }

    /// Well-known classes spread over the list; a line added or dropped anywhere before one
    /// of them shifts it and fails here.
    #[test]
    fn chinese_labels_are_aligned_with_the_english_ones() {
        let expected = [
            (0, "tench", "丁鲷"),
            (1, "goldfish", "金鱼"),
            (2, "great white shark", "大白鲨"),
            (130, "flamingo", "火烈鸟"),
            (207, "golden retriever", "金毛寻回犬"),
            (208, "Labrador retriever", "拉布拉多寻回犬"),
            (281, "tabby", "虎斑猫"),
            (282, "tiger cat", "虎猫"),
            (291, "lion", "狮子"),
            (340, "zebra", "斑马"),
            (388, "giant panda", "大熊猫"),
            (407, "ambulance", "救护车"),
            (430, "basketball", "篮球"),
            (620, "laptop", "笔记本电脑"),
            (760, "refrigerator", "冰箱"),
            (817, "sports car", "跑车"),
            (948, "Granny Smith", "青苹果"),
            (954, "banana", "香蕉"),
            (963, "pizza", "披萨"),
            (999, "toilet tissue", "卫生纸"),
        ];
        for (index, en, zh) in expected {
            assert_eq!(label(index), Some(en), "English class {index}");
            assert_eq!(label_zh(index), Some(zh), "Chinese class {index} ({en})");
        }
    }

    #[test]
    fn chinese_labels_are_distinct() {
        let mut seen = HashSet::new();
        for (i, name) in imagenet_labels_zh().iter().enumerate() {
            assert!(seen.insert(*name), "class {i} repeats the name {name:?}");
        }
    }

    #[test]
    fn lang_parses_english_and_simplified_chinese_tags_only() {
        assert_eq!("en".parse(), Ok(Lang::En));
        assert_eq!(" ZH ".parse(), Ok(Lang::Zh));
        assert_eq!("Zh".parse(), Ok(Lang::Zh));
        for zh in ["zh-CN", "zh-cn", "zh_CN", "zh-Hans", "zh-SG", "zh-Hans-CN"] {
            assert_eq!(zh.parse(), Ok(Lang::Zh), "{zh:?}");
        }
        for en in ["en-US", "EN-gb"] {
            assert_eq!(en.parse(), Ok(Lang::En), "{en:?}");
        }
        for bad in [
            "", "fr", "chinese", "e n", "zh-TW", "zh-HK", "zh-Hant", "zh-", "en-", "de-DE",
            "zh-CN-!", "en-US-",
        ] {
            assert_eq!(bad.parse::<Lang>(), Err(UnknownLang), "{bad:?}");
        }
        assert_eq!(Lang::default(), Lang::En);
        assert_eq!(Lang::Zh.label(281), Some("虎斑猫"));
        assert_eq!(Lang::En.label(281), Some("tabby"));
        assert_eq!(Lang::Zh.to_string(), "zh");
    }
}
