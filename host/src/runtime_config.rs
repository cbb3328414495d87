//! Spin's runtime config file (`kana-host up --runtime-config-file runtime-config.toml`), the part
//! kana-host reproduces: where each key-value store label keeps its data.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"                    # shared by every host pointed at it
//! url = "redis://127.0.0.1:6379"
//!
//! [key_value_store.cache]
//! type = "spin"                     # SQLite; `path` relative to this file, none: in memory
//! path = "cache.db"
//! ```
//!
//! Labels the file does not name use `<state-dir>/sqlite_key_value.db`, as without the file.
//! Anything else in the file (other sections, store types, fields) is refused at startup rather
//! than ignored, so a config meant for Spin never silently runs on the wrong store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::key_value::{KeyValueBackend, RedisBackend, SqliteBackend, Stores};

/// Where one store label keeps its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreConfig {
    /// `type = "spin"`: SQLite in Spin's layout; `None`: a database in memory.
    Sqlite { path: Option<PathBuf> },
    /// `type = "redis"`.
    Redis { url: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub key_value_stores: BTreeMap<String, StoreConfig>,
}

/// The default store's file when the runtime config does not say otherwise (Spin's name).
pub const DEFAULT_SQLITE_FILE: &str = "sqlite_key_value.db";

impl RuntimeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read runtime config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base).with_context(|| format!("runtime config {}", path.display()))
    }

    /// Parses the file's text; relative `path`s are resolved against `base` (the file's folder).
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let doc: toml::Table = toml::from_str(text).context("not valid TOML")?;
        let mut config = RuntimeConfig::default();
        for (section, value) in doc {
            if section != "key_value_store" {
                bail!("`[{section}]` is not supported by kana-host: it reads only `[key_value_store.<label>]` tables");
            }
            let toml::Value::Table(stores) = value else { bail!("`key_value_store` must be a table of `[key_value_store.<label>]` tables") };
            for (label, store) in stores {
                let store = parse_store(&store, base).with_context(|| format!("[key_value_store.{label}]"))?;
                config.key_value_stores.insert(label, store);
            }
        }
        Ok(config)
    }

    /// Opens the backend of every label in `labels` (the ones components declare): the
    /// configured one, else the SQLite file in `state_dir`. Backends with the same file or url
    /// are opened once and shared. Unreachable Redis, a file in use by another host: errors.
    pub async fn open_stores(&self, labels: &BTreeSet<String>, state_dir: &Path) -> Result<Stores> {
        let default_file = StoreConfig::Sqlite { path: Some(state_dir.join(DEFAULT_SQLITE_FILE)) };
        let mut opened: BTreeMap<&StoreConfig, Arc<dyn KeyValueBackend>> = BTreeMap::new();
        let mut by_label = BTreeMap::new();
        for label in labels.iter().chain(self.key_value_stores.keys()).collect::<BTreeSet<_>>() {
            let config = self.key_value_stores.get(label).unwrap_or(&default_file);
            // Each in-memory store is its own; a file or server is opened once.
            let shared = (config != &StoreConfig::Sqlite { path: None }).then(|| opened.get(config).cloned()).flatten();
            let backend = match shared {
                Some(backend) => backend,
                None => open(config).await.with_context(|| format!("key-value store `{label}`"))?,
            };
            opened.insert(config, backend.clone());
            tracing::info!("key-value store `{label}`: {}", describe(config));
            by_label.insert(label.clone(), backend);
        }
        Ok(Stores::new(by_label))
    }
}

impl PartialOrd for StoreConfig {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StoreConfig {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        describe(self).cmp(&describe(other))
    }
}

fn describe(config: &StoreConfig) -> String {
    match config {
        StoreConfig::Sqlite { path: Some(path) } => format!("SQLite {}", path.display()),
        StoreConfig::Sqlite { path: None } => "SQLite in memory".into(),
        StoreConfig::Redis { url } => format!("Redis {}", url.rsplit_once('@').map_or(url.as_str(), |(_, host)| host)),
    }
}

async fn open(config: &StoreConfig) -> Result<Arc<dyn KeyValueBackend>> {
    Ok(match config {
        StoreConfig::Sqlite { path: Some(path) } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
            }
            Arc::new(SqliteBackend::open(path)?)
        }
        StoreConfig::Sqlite { path: None } => Arc::new(SqliteBackend::open_in_memory()?),
        StoreConfig::Redis { url } => Arc::new(RedisBackend::connect(url).await?),
    })
}

fn parse_store(value: &toml::Value, base: &Path) -> Result<StoreConfig> {
    let toml::Value::Table(table) = value else { bail!("must be a table") };
    let text = |field: &str| -> Result<Option<&str>> {
        match table.get(field) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => bail!("`{field}` must be a string"),
        }
    };
    let kind = text("type")?.context("`type` is missing (kana-host supports \"spin\" and \"redis\")")?;
    let allowed: &[&str] = match kind {
        "spin" => &["type", "path"],
        "redis" => &["type", "url"],
        other => bail!("store type \"{other}\" is not supported by kana-host (it supports \"spin\" and \"redis\")"),
    };
    if let Some(field) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
        bail!("unknown field `{field}` for type \"{kind}\" (expected: {})", allowed[1..].join(", "));
    }
    Ok(match kind {
        "spin" => StoreConfig::Sqlite { path: text("path")?.map(|p| base.join(p)) },
        _ => {
            let url = text("url")?.context("`url` is missing (e.g. url = \"redis://127.0.0.1:6379\")")?;
            if !url.starts_with("redis://") {
                bail!("url \"{url}\" must start with redis:// (rediss:// is not built into kana-host)");
            }
            StoreConfig::Redis { url: url.to_owned() }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeConfig> {
        RuntimeConfig::parse(text, Path::new("/etc/kana"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("refused"))
    }

    #[test]
    fn reads_spins_key_value_tables() {
        let config = parse(
            r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://127.0.0.1:6379"

            [key_value_store.cache]
            type = "spin"
            path = "data/cache.db"

            [key_value_store.scratch]
            type = "spin"
            "#,
        )
        .unwrap();
        let stores = config.key_value_stores;
        assert_eq!(stores["default"], StoreConfig::Redis { url: "redis://127.0.0.1:6379".into() });
        assert_eq!(stores["cache"], StoreConfig::Sqlite { path: Some("/etc/kana/data/cache.db".into()) });
        assert_eq!(stores["scratch"], StoreConfig::Sqlite { path: None });
        assert_eq!(parse("").unwrap(), RuntimeConfig::default());
    }

    #[test]
    fn anything_it_cannot_honour_is_refused_with_the_reason() {
        assert!(error("[key_value_store.default]\ntype = \"azure_cosmos\"").contains("[key_value_store.default]: store type \"azure_cosmos\" is not supported"));
        assert!(error("[key_value_store.default]\nurl = \"redis://x\"").contains("`type` is missing"));
        assert!(error("[key_value_store.default]\ntype = \"redis\"").contains("`url` is missing"));
        assert!(error("[key_value_store.default]\ntype = \"redis\"\nurl = \"http://x\"").contains("must start with redis://"));
        assert!(error("[key_value_store.default]\ntype = \"spin\"\nurl = \"redis://x\"").contains("unknown field `url` for type \"spin\""));
        assert!(error("[sqlite_database.default]\ntype = \"spin\"").contains("`[sqlite_database]` is not supported"));
        assert!(error("key_value_store = 3").contains("must be a table"));
        assert!(error("[key_value_store.default\n").contains("not valid TOML"));
    }

    #[test]
    fn the_deploy_runtime_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/runtime-config.toml");
        let config = RuntimeConfig::load(&path).unwrap();
        assert!(matches!(config.key_value_stores["default"], StoreConfig::Redis { .. }));
    }

    #[tokio::test]
    async fn labels_share_a_file_and_unnamed_labels_use_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("kana-runtime-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = RuntimeConfig::parse("[key_value_store.a]\ntype = \"spin\"\npath = \"one.db\"\n[key_value_store.b]\ntype = \"spin\"\npath = \"one.db\"", &dir).unwrap();
        let labels: BTreeSet<String> = ["default".into(), "a".into()].into();
        let stores = config.open_stores(&labels, &dir.join("state")).await.unwrap();
        stores.backend("a").unwrap().set("a", "k", b"v").await.unwrap();
        assert_eq!(stores.backend("b").unwrap().get("a", "k").await.unwrap().as_deref(), Some(&b"v"[..]), "one file, opened once");
        assert!(dir.join("state").join(DEFAULT_SQLITE_FILE).is_file());
        assert!(stores.backend("elsewhere").is_none());
        drop(stores);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
