//! The files of `deploy/` parse, and every name they reference exists in spin.toml: the routes
//! the CronJob calls, the Spin variables the SpinApp sets, the key-value stores the runtime
//! config defines; and the names they share among themselves (Secrets, Services, ports) agree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn spin_toml() -> toml::Table {
    read("spin.toml").parse().expect("spin.toml parses")
}

/// Every document of a YAML file (`---` separated).
fn yaml_docs(path: &str) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of `kind` in `path`.
fn doc_of_kind(path: &str, kind: &str) -> Yaml {
    let mut docs: Vec<Yaml> = yaml_docs(path).into_iter().filter(|d| d["kind"].as_str() == Some(kind)).collect();
    assert_eq!(docs.len(), 1, "{path}: one {kind}");
    docs.remove(0)
}

fn str_at<'a>(yaml: &'a Yaml, what: &str) -> &'a str {
    yaml.as_str().unwrap_or_else(|| panic!("{what} is not a string: {yaml:?}"))
}

/// spin.toml's `[[trigger.http]]` routes of `component`.
fn http_routes(manifest: &toml::Table, component: &str) -> Vec<String> {
    manifest["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["component"].as_str() == Some(component))
        .map(|t| t["route"].as_str().unwrap().to_owned())
        .collect()
}

/// A `secretKeyRef`'s (name, key).
fn secret_ref(value_from: &Yaml, what: &str) -> (String, String) {
    let r = &value_from["secretKeyRef"];
    (str_at(&r["name"], what).to_owned(), str_at(&r["key"], what).to_owned())
}

#[test]
fn the_runtime_config_puts_the_default_store_on_the_redis_service() {
    let config: toml::Table = read("deploy/runtime-config.toml").parse().expect("runtime-config.toml parses");
    let stores = config["key_value_store"].as_table().expect("[key_value_store.*]");
    let default = stores["default"].as_table().expect("[key_value_store.default]");
    assert_eq!(default["type"].as_str(), Some("redis"));
    let url = default["url"].as_str().unwrap();
    let (host, port) = url.strip_prefix("redis://").and_then(|a| a.trim_end_matches('/').split_once(':')).expect("redis://host:port");

    // Every store it defines is one a component of spin.toml opens.
    let manifest = spin_toml();
    let used: BTreeSet<&str> = manifest["component"]
        .as_table()
        .unwrap()
        .values()
        .filter_map(|c| c.get("key_value_stores")?.as_array())
        .flatten()
        .filter_map(|s| s.as_str())
        .collect();
    for name in stores.keys() {
        assert!(used.contains(name.as_str()), "store {name} is opened by no component in spin.toml");
    }

    // redis.yaml's Service is that host and port, and selects the Deployment's pods.
    let service = doc_of_kind("deploy/redis.yaml", "Service");
    assert_eq!(service["metadata"]["name"].as_str(), Some(host));
    let ports = service["spec"]["ports"].as_sequence().unwrap();
    assert!(ports.iter().any(|p| p["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(port)), "Service port {port}");
    let deployment = doc_of_kind("deploy/redis.yaml", "Deployment");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&labels[key.as_str().unwrap()], value, "the Service selects the Deployment's pods");
    }
    assert_eq!(deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"]);
}

#[test]
fn the_spinapp_sets_only_variables_spin_toml_declares_and_takes_the_tick_token_from_a_secret() {
    let app = doc_of_kind("deploy/spinapp.yaml", "SpinApp");
    assert_eq!(app["apiVersion"].as_str(), Some("core.spinkube.dev/v1alpha1"));
    let spec = &app["spec"];
    assert_eq!(spec["executor"].as_str(), Some("containerd-shim-spin"));
    assert!(spec["replicas"].as_u64().is_some_and(|n| n >= 2), "replicas: {:?}", spec["replicas"]);
    assert!(spec["image"].as_str().is_some_and(|i| i.contains(':')), "image with a tag");
    assert!(spec["runtimeConfig"]["loadFromSecret"].as_str().is_some_and(|s| !s.is_empty()));

    let manifest = spin_toml();
    let declared = manifest["variables"].as_table().unwrap();
    let variables = spec["variables"].as_sequence().expect("spec.variables");
    for v in variables {
        let name = str_at(&v["name"], "variable name");
        assert!(declared.contains_key(name), "SpinApp variable {name} is not in spin.toml [variables]");
        assert!(v["value"].is_string() != v["valueFrom"].is_mapping(), "{name}: value or valueFrom");
    }

    let token = variables.iter().find(|v| v["name"].as_str() == Some("jobs_tick_token")).expect("jobs_tick_token is set");
    let (secret, key) = secret_ref(&token["valueFrom"], "jobs_tick_token");
    assert_eq!(declared["jobs_tick_token"].get("secret").and_then(|s| s.as_bool()), Some(true));
    let jobs_vars = manifest["component"]["jobs"]["variables"].as_table().unwrap();
    assert_eq!(jobs_vars["tick_token"].as_str(), Some("{{ jobs_tick_token }}"));

    // deploy/README.md creates both Secrets under these names, and the CronJob reads the same one.
    let readme = read("deploy/README.md");
    let runtime_secret = str_at(&spec["runtimeConfig"]["loadFromSecret"], "loadFromSecret");
    let create = format!("kubectl create secret generic {runtime_secret} --from-file=runtime-config.toml=deploy/runtime-config.toml");
    assert!(readme.contains(&create), "deploy/README.md runs `{create}`");
    let create = format!("kubectl create secret generic {secret} --from-literal={key}=");
    assert!(readme.contains(&create), "deploy/README.md runs `{create}`");
    let cron = doc_of_kind("deploy/tick-cronjob.yaml", "CronJob");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let cron_token = env.iter().find(|e| e["name"].as_str() == Some("TICK_TOKEN")).expect("TICK_TOKEN");
    assert_eq!(secret_ref(&cron_token["valueFrom"], "TICK_TOKEN"), (secret, key));
}

#[test]
fn the_cronjob_posts_to_the_tick_route_of_the_jobs_component_on_the_apps_service() {
    let cron = doc_of_kind("deploy/tick-cronjob.yaml", "CronJob");
    assert_eq!(cron["apiVersion"].as_str(), Some("batch/v1"));
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    assert_eq!(str_at(&cron["spec"]["schedule"], "schedule").split_whitespace().count(), 5, "a 5-field Kubernetes schedule");
    let container = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let url = env.iter().find(|e| e["name"].as_str() == Some("TICK_URL")).map(|e| str_at(&e["value"], "TICK_URL")).expect("TICK_URL");
    let (host, path) = url.strip_prefix("http://").and_then(|u| u.split_once('/')).expect("http://service/path");

    // SpinKube's Service for a SpinApp has the app's name.
    let app = doc_of_kind("deploy/spinapp.yaml", "SpinApp");
    assert_eq!(Some(host.split(':').next().unwrap()), app["metadata"]["name"].as_str());
    let manifest = spin_toml();
    assert!(http_routes(&manifest, "jobs").contains(&format!("/{path}")), "/{path} is a route of the jobs component");
    assert_eq!(path, "jobs/tick");

    let script: String = container["args"].as_sequence().unwrap().iter().map(|a| str_at(a, "args")).collect();
    for needed in ["-X POST", "Authorization: Bearer ${TICK_TOKEN}", "${TICK_URL}", "--fail"] {
        assert!(script.contains(needed), "the script sends {needed}");
    }
}

#[test]
fn the_readme_covers_every_file() {
    let readme = read("deploy/README.md");
    for needed in ["runtime-config.toml", "spinapp.yaml", "redis.yaml", "tick-cronjob.yaml", "spin registry push", "/jobs/tick"] {
        assert!(readme.contains(needed), "deploy/README.md mentions {needed}");
    }
}
