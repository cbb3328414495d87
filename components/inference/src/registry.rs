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
    /// Alias → model name.
    aliases: BTreeMap<String, String>,
}

impl Registry {
    /// Loads and validates every card in `dir` (not recursive), building each model's plan.
    /// A missing directory gives an empty registry and one error.
    pub fn load_dir(dir: &Path) -> (Registry, Vec<CardError>) {
        Registry::scan(dir, Model::load)
    }

    /// As [`Registry::load_dir`], but each model's weights are read, checked and planned on its
    /// first prediction ([`Model::deferred`]): what a serving instance does, so its first answer
    /// does not wait for every shipped model and it holds only the plans it uses. Broken cards
    /// and missing files are still found here; a weights file that does not match its card is
    /// found on first use (a 500 naming the problem, and in `GET /models`).
    pub fn open_dir(dir: &Path) -> (Registry, Vec<CardError>) {
        Registry::scan(dir, Model::deferred)
    }

    fn scan(dir: &Path, open: fn(ModelCard, &Path) -> Result<Model, String>) -> (Registry, Vec<CardError>) {
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
            match ModelCard::read(&path).and_then(|card| open(card, dir)).and_then(|model| registry.add(model)) {
                Ok(()) => {}
                Err(message) => errors.push(CardError { path, message }),
            }
        }
        (registry, errors)
    }

    /// Adds a loaded model unless its name or an alias is already taken (by a name or an alias).
    pub fn add(&mut self, model: Model) -> Result<(), String> {
        let card = &model.card;
        for name in std::iter::once(&card.name).chain(&card.aliases) {
            if let Some(owner) = self.models.get(name).map(|m| &m.card.name).or_else(|| self.aliases.get(name)) {
                return Err(format!("name '{name}' is already taken by model '{owner}'"));
            }
        }
        if let Some(dup) = card.aliases.iter().enumerate().find(|(i, a)| **a == card.name || card.aliases[..*i].contains(a)) {
            return Err(format!("alias '{}' is listed twice", dup.1));
        }
        for alias in &card.aliases {
            self.aliases.insert(alias.clone(), card.name.clone());
        }
        self.models.insert(card.name.clone(), model);
        Ok(())
    }

    /// The model with this name or alias.
    pub fn get(&self, name: &str) -> Option<&Model> {
        self.models.get(name).or_else(|| self.models.get(self.aliases.get(name)?))
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
