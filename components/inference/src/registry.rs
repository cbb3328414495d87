//! The set of servable models: every `*.card.json` in a directory whose card, files and graph all
//! check out. Problems are collected at load time so a bad card never surfaces as a 500 later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::card::{CARD_SUFFIX, ModelCard};
use crate::model::Model;

/// Why a card in the models directory is not served.
#[derive(Clone, Debug, PartialEq, thiserror::Error, serde::Serialize)]
#[error("{}: {message}", path.display())]
pub struct CardError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Registry {
    models: BTreeMap<String, Model>,
}

impl Registry {
    /// Loads and validates every card in `dir` (not recursive), building each model's plan.
    /// A missing directory gives an empty registry and one error.
    pub fn load_dir(dir: &Path) -> (Registry, Vec<CardError>) {
        let mut registry = Registry::default();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                errors.push(CardError { path: dir.to_path_buf(), message: format!("cannot list models: {e}") });
                return (registry, errors);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(CARD_SUFFIX)))
            .collect();
        paths.sort();
        for path in paths {
            match load_card(&path, dir) {
                Ok(model) if registry.models.contains_key(&model.card.name) => errors.push(CardError {
                    path,
                    message: format!("duplicate model name '{}'", model.card.name),
                }),
                Ok(model) => {
                    registry.models.insert(model.card.name.clone(), model);
                }
                Err(message) => errors.push(CardError { path, message }),
            }
        }
        (registry, errors)
    }

    /// Adds an already loaded model (tests, benches).
    pub fn insert(&mut self, model: Model) {
        self.models.insert(model.card.name.clone(), model);
    }

    pub fn get(&self, name: &str) -> Option<&Model> {
        self.models.get(name)
    }

    /// Served models, sorted by name.
    pub fn models(&self) -> impl Iterator<Item = &Model> {
        self.models.values()
    }

    pub fn cards(&self) -> impl Iterator<Item = &ModelCard> {
        self.models.values().map(|m| &m.card)
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

fn load_card(path: &Path, dir: &Path) -> Result<Model, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let card: ModelCard = serde_json::from_slice(&text).map_err(|e| format!("invalid card JSON: {e}"))?;
    Model::load(card, dir)
}
