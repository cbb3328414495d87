//! The models a fresh clone serves: every committed card loads, the reference server's model
//! names answer with hiragana models, and cards carry only repository-relative paths.

use std::path::PathBuf;

use kana_inference::Registry;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn every_committed_card_is_served() {
    let (registry, invalid) = Registry::load_dir(&models_dir());
    assert!(invalid.is_empty(), "{invalid:?}");
    assert!(registry.len() >= 5, "{} models", registry.len());
}

#[test]
fn reference_names_cnn_and_densenet_are_hiragana_models() {
    let (registry, _) = Registry::load_dir(&models_dir());
    for alias in ["cnn", "densenet"] {
        let model = registry.get(alias).unwrap_or_else(|| panic!("/predict/{alias} has no model"));
        let card = &model.card;
        assert_eq!(card.classes.len(), 49, "{alias} → {}", card.name);
        assert_eq!(card.classes[0].label, "あ");
        assert_eq!(card.classes[0].codepoint.as_deref(), Some("U+3042"));
        let data = card.training_data.as_deref().unwrap_or_default();
        assert!(data.contains("not real Kuzushiji"), "{alias}: the card must say what it saw: {data:?}");
        assert!(card.attribution.as_deref().unwrap_or_default().contains("KanjiVG"), "{alias}");
        let metrics = card.metrics.as_ref().expect("measured on the exported file");
        assert_eq!(metrics.split, "test");
    }
    assert!(registry.get("resnet").is_none());
}

#[test]
fn cards_record_repository_relative_commands() {
    let (registry, _) = Registry::load_dir(&models_dir());
    for card in registry.cards() {
        let command = &card.training.as_ref().expect("trainer-made card").command;
        assert!(command.starts_with("trainer "), "{}: {command}", card.name);
        assert!(!command.split_whitespace().any(|w| w.starts_with('/')), "{}: absolute path in {command}", card.name);
    }
}
