//! TorchVision's 1000 ImageNet category names, in class-index order, embedded in the binary.
//!
//! Source: `_IMAGENET_CATEGORIES` in `torchvision/models/_meta.py` (torchvision 0.29.2 wheel on
//! PyPI), one name per line in `model/imagenet_classes.txt`.

use std::sync::OnceLock;

const RAW: &str = include_str!("../model/imagenet_classes.txt");

/// All 1000 labels, index `i` naming class `i` (281 = "tabby").
pub fn imagenet_labels() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| RAW.lines().collect())
}

/// Label of class `index`, or `None` outside `0..1000`.
pub fn label(index: usize) -> Option<&'static str> {
    imagenet_labels().get(index).copied()
}

#[cfg(test)]
mod tests {
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
}
