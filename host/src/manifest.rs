//! `spin.toml` (spin_manifest_version = 2): the subset of Spin's manifest this host runs.
//!
//! Parsed with serde; unknown keys are ignored (as Spin ignores, e.g., `description`) so the same
//! file works with real Spin. Relative `source`/`files` paths resolve against the manifest's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The parsed manifest plus the folder its relative paths are resolved against.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub base_dir: PathBuf,
    pub application: Application,
    pub variables: BTreeMap<String, VariableDecl>,
    pub http_triggers: Vec<HttpTrigger>,
    pub cron_triggers: Vec<CronTrigger>,
    pub components: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
}

/// `[variables] name = { default = "...", required = true, secret = true }`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VariableDecl {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CronTrigger {
    pub component: String,
    pub cron_expression: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ComponentDecl {
    pub source: String,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub files: Vec<FileMount>,
    /// Component variable name → template such as `"{{ app_variable }}"` or a literal.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    pub build: Option<BuildDecl>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BuildDecl {
    pub command: String,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// A `files` entry: either `"dir"` (mounted at `/dir`) or `{ source = "dir", destination = "/x" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FileMount {
    Same(String),
    Mapped { source: String, destination: String },
}

/// A directory to preopen read-only: host path (absolute) and guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirMount {
    pub host: PathBuf,
    pub guest: String,
}

#[derive(Deserialize)]
struct RawManifest {
    spin_manifest_version: u32,
    application: Application,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: RawTriggers,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Default, Deserialize)]
struct RawTriggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
    #[serde(default)]
    cron: Vec<CronTrigger>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let base_dir = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", path.display()))?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, base_dir).with_context(|| format!("invalid manifest {}", path.display()))
    }

    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        if raw.spin_manifest_version != 2 {
            bail!("spin_manifest_version must be 2, found {}", raw.spin_manifest_version);
        }
        let manifest = Manifest {
            base_dir,
            application: raw.application,
            variables: raw.variables,
            http_triggers: raw.trigger.http,
            cron_triggers: raw.trigger.cron,
            components: raw.component,
        };
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        let triggers = self.http_triggers.iter().map(|t| &t.component);
        for id in triggers.chain(self.cron_triggers.iter().map(|t| &t.component)) {
            if !self.components.contains_key(id) {
                bail!("a trigger names component `{id}`, which has no [component.{id}] table");
            }
        }
        for name in self.variables.keys() {
            check_variable_name(name)?;
        }
        for (id, component) in &self.components {
            for name in component.variables.keys() {
                check_variable_name(name).with_context(|| format!("in [component.{id}.variables]"))?;
            }
            if let Some(host) = component.allowed_outbound_hosts.first() {
                bail!("component `{id}`: outbound HTTP is not supported by this host (`{host}`)");
            }
        }
        Ok(())
    }

    /// Absolute path of a component's wasm file.
    pub fn source_path(&self, component: &ComponentDecl) -> PathBuf {
        self.base_dir.join(&component.source)
    }

    /// The component's `files` as read-only directory mounts, checked to exist.
    pub fn dir_mounts(&self, id: &str, component: &ComponentDecl) -> Result<Vec<DirMount>> {
        component
            .files
            .iter()
            .map(|mount| {
                let (source, guest) = match mount {
                    FileMount::Same(path) => (path.as_str(), format!("/{}", path.trim_start_matches('/'))),
                    FileMount::Mapped { source, destination } => (source.as_str(), destination.clone()),
                };
                if source.contains(['*', '?', '[']) {
                    bail!("component `{id}`: glob patterns in `files` are not supported (`{source}`)");
                }
                let host = self.base_dir.join(source);
                if !host.is_dir() {
                    bail!("component `{id}`: `files` source {} is not a directory", host.display());
                }
                Ok(DirMount { host, guest })
            })
            .collect()
    }
}

/// Spin allows lower-case letters, digits and underscores, starting with a letter.
fn check_variable_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let starts_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !starts_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        bail!("invalid variable name `{name}`: use lower-case letters, digits and `_`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
spin_manifest_version = 2

[application]
name = "demo"
version = "1.0.0"
description = "ignored by the host"

[variables]
deployment = { default = "local" }
token = { required = true, secret = true }

[[trigger.http]]
route = "/health/..."
component = "health"

[[trigger.cron]]
component = "beat"
cron_expression = "*/5 * * * * *"

[component.health]
source = "target/health.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = []
files = [{ source = "models", destination = "/models" }, "static"]
[component.health.variables]
deployment = "{{ deployment }}"
[component.health.build]
command = "cargo build -p health"
watch = ["src/**/*.rs"]

[component.beat]
source = "target/beat.wasm"
"#;

    #[test]
    fn parses_triggers_components_and_variables() {
        let m = Manifest::parse(SAMPLE, PathBuf::from("/app")).unwrap();
        assert_eq!(m.application.name, "demo");
        assert_eq!(m.http_triggers[0].route, "/health/...");
        assert_eq!(m.cron_triggers[0].cron_expression, "*/5 * * * * *");
        assert_eq!(m.variables["deployment"].default.as_deref(), Some("local"));
        assert!(m.variables["token"].required);
        let health = &m.components["health"];
        assert_eq!(health.key_value_stores, ["default"]);
        assert_eq!(health.variables["deployment"], "{{ deployment }}");
        assert_eq!(m.source_path(health), PathBuf::from("/app/target/health.wasm"));
        assert_eq!(health.build.as_ref().unwrap().watch, ["src/**/*.rs"]);
    }

    #[test]
    fn file_mounts_resolve_against_the_manifest_folder() {
        let dir = std::env::temp_dir().join(format!("kana-manifest-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("models")).unwrap();
        std::fs::create_dir_all(dir.join("static")).unwrap();
        let m = Manifest::parse(SAMPLE, dir.clone()).unwrap();
        let mounts = m.dir_mounts("health", &m.components["health"]).unwrap();
        assert_eq!(mounts[0], DirMount { host: dir.join("models"), guest: "/models".into() });
        assert_eq!(mounts[1], DirMount { host: dir.join("static"), guest: "/static".into() });
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = m.dir_mounts("health", &m.components["health"]).unwrap_err();
        assert!(missing.to_string().contains("is not a directory"), "{missing}");
    }

    #[test]
    fn rejects_unknown_component_and_bad_version() {
        let bad_ref = SAMPLE.replace("component = \"beat\"", "component = \"nope\"");
        let err = Manifest::parse(&bad_ref, PathBuf::from("/")).unwrap_err();
        assert!(err.to_string().contains("`nope`"), "{err}");
        let v3 = SAMPLE.replace("spin_manifest_version = 2", "spin_manifest_version = 3");
        assert!(Manifest::parse(&v3, PathBuf::from("/")).is_err());
    }

    #[test]
    fn rejects_invalid_variable_names_and_outbound_hosts() {
        let upper = SAMPLE.replace("deployment = { default", "Deployment = { default");
        assert!(Manifest::parse(&upper, PathBuf::from("/")).is_err());
        let outbound = SAMPLE.replace(
            "allowed_outbound_hosts = []",
            "allowed_outbound_hosts = [\"https://example.com\"]",
        );
        assert!(Manifest::parse(&outbound, PathBuf::from("/")).is_err());
    }
}
