//! `cargo xtask <command>` (alias in .cargo/config.toml):
//! - `setup`: idempotent machine setup (wasm32-wasip2 target, Debian packages),
//! - `build-components`: one release wasm build of every component spin.toml names, plus the
//!   test-only components ([`TEST_ONLY_COMPONENTS`]) the host tests mount,
//! - `up [host args]`: setup + a build of only what spin.toml names + run kana-host
//!   (`up --listen 127.0.0.1:3000 ...`),
//! - `test [cargo test args]`: setup + build-components + `cargo test` on the default members,
//! - `trainer [trainer args]`: the trainer CLI from the release build (`cargo run --release`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

const WASM_TARGET: &str = "wasm32-wasip2";
/// Lavapipe (Vulkan on the CPU) for the wgpu trainer, and the Fashion-MNIST data set.
const APT_PACKAGES: &[&str] = &[
    "mesa-vulkan-drivers",
    "dataset-fashion-mnist",
    // `trainer synth kana` prints hiragana in these (brush, handwriting, mincho, gothic); the
    // synthetic dataset's README lists which family each split used.
    "fonts-aoyagi-kouzan-t",
    "fonts-aoyagi-soseki",
    "fonts-kouzan-mouhitsu",
    "fonts-kiloji",
    "fonts-seto",
    "fonts-ipafont-mincho",
    "fonts-ipaexfont-mincho",
    "fonts-dejima-mincho",
    "fonts-hanazono",
    "fonts-sawarabi-mincho",
    "fonts-oradano-mincho-gsrr",
    "fonts-ipafont-gothic",
    "fonts-ipaexfont-gothic",
    "fonts-vlgothic",
    "fonts-sawarabi-gothic",
    "fonts-umeplus",
    "fonts-konatu",
    "fonts-motoya-l-cedar",
    "fonts-motoya-l-maruberi",
    // Pen handwriting faces, training families only (synthetic data v2,
    // models/hiragana-data/README.md).
    "fonts-klee",
    "fonts-yozvox-yozfont-standard-kana",
    "fonts-yozvox-yozfont-antique",
    "fonts-yozvox-yozfont-cute",
    // The browser test (host/tests/all/browser.rs): headless Chromium driven through chromedriver.
    "chromium",
    "chromium-driver",
    // The Redis key-value backend's tests and the multi-host test (host/tests/all/multi_host.rs)
    // start their own redis-server and read it with redis-cli (redis-tools, a dependency).
    "redis-server",
];

/// Component packages that only the host integration tests use (host/tests/all/support.rs adds
/// them to its copy of spin.toml); spin.toml never names them, so nothing ships them.
/// `build-components` and `test` build them together with spin.toml's components in the same
/// single cargo invocation; `up` builds only what spin.toml names.
const TEST_ONLY_COMPONENTS: &[&str] = &["debug-routes"];

/// Which components [`build_components`] builds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Components {
    /// Only those spin.toml names (`up`).
    Shipped,
    /// Those plus [`TEST_ONLY_COMPONENTS`] (`build-components`, `test`).
    WithTestOnly,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    match command.as_str() {
        "setup" => setup(),
        // Also the test-only ones: the host tests need them, and CI-style runs build, then test.
        "build-components" => build_components(&root, Components::WithTestOnly),
        "up" => {
            setup()?;
            build_components(&root, Components::Shipped)?;
            let mut host_args = vec!["up".to_owned()];
            host_args.extend(rest);
            cargo(&root, ["run", "-p", "kana-host", "--"].into_iter().map(str::to_owned).chain(host_args))
        }
        "test" => {
            setup()?;
            build_components(&root, Components::WithTestOnly)?;
            cargo(&root, ["test".to_owned()].into_iter().chain(rest))
        }
        // The release build: the bench's speed for real training runs; tests stay on the dev profile.
        "trainer" => cargo(&root, ["run", "--release", "-p", "kana-trainer", "--"].into_iter().map(str::to_owned).chain(rest)),
        _ => bail!("usage: cargo xtask <setup | build-components | up [host args] | test [cargo test args] | trainer [trainer args]>"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Installs what a fresh machine lacks; does nothing (quickly) when all is there.
fn setup() -> Result<()> {
    ensure_wasm_target()?;
    ensure_apt_packages()?;
    println!("xtask setup: ok");
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    let installed = match installed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => bail!(
            "rustup not found: install Rust with rustup (https://rustup.rs), or add the \
             `{WASM_TARGET}` target to your toolchain yourself"
        ),
    };
    if installed.lines().any(|l| l.trim() == WASM_TARGET) {
        return Ok(());
    }
    println!("xtask setup: installing the Rust target {WASM_TARGET} (rustup target add {WASM_TARGET})");
    run_checked(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

fn ensure_apt_packages() -> Result<()> {
    if Command::new("dpkg-query").arg("--version").output().is_err() {
        println!(
            "xtask setup: not a Debian/Ubuntu system; make sure these are available yourself: {}",
            APT_PACKAGES.join(", ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = APT_PACKAGES.iter().copied().filter(|p| !dpkg_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        bail!("missing Debian packages: {list}. Run as root, or: sudo apt-get update && sudo apt-get install -y {list}");
    }
    println!("xtask setup: installing Debian packages: {list} (apt-get update, then apt-get install -y)");
    run_checked(Command::new("apt-get").arg("update"))?;
    run_checked(Command::new("apt-get").args(["install", "-y"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

#[derive(Deserialize)]
struct Component {
    source: String,
    build: Option<Build>,
}

#[derive(Deserialize)]
struct Build {
    command: String,
}

/// Builds every component named in spin.toml with one cargo invocation (one lock, one
/// dependency resolution), taking each package from its `build.command`'s `-p <package>`; with
/// [`Components::WithTestOnly`], the same invocation also builds [`TEST_ONLY_COMPONENTS`].
fn build_components(root: &Path, which: Components) -> Result<()> {
    let text = std::fs::read_to_string(root.join("spin.toml")).context("cannot read spin.toml")?;
    let manifest: Manifest = toml::from_str(&text).context("cannot parse spin.toml")?;
    let mut packages = Vec::new();
    for (id, component) in &manifest.component {
        let package = component
            .build
            .as_ref()
            .and_then(|b| package_of(&b.command))
            .with_context(|| format!("[component.{id}.build] command has no `-p <package>`"))?;
        if !packages.contains(&package) {
            packages.push(package);
        }
    }
    if which == Components::WithTestOnly {
        for package in TEST_ONLY_COMPONENTS {
            if !packages.iter().any(|p| p == package) {
                packages.push((*package).to_owned());
            }
        }
    }
    if packages.is_empty() {
        return Ok(());
    }
    let mut args = vec!["build", "--release", "--target", WASM_TARGET];
    for package in &packages {
        args.extend(["-p", package.as_str()]);
    }
    println!("xtask: building components: {}", packages.join(", "));
    cargo(root, args.into_iter().map(str::to_owned))?;
    for (id, component) in &manifest.component {
        if !root.join(&component.source).is_file() {
            bail!("component `{id}`: build finished but {} is missing", component.source);
        }
    }
    if which == Components::WithTestOnly {
        for package in TEST_ONLY_COMPONENTS {
            let wasm = test_only_wasm(package);
            if !root.join(&wasm).is_file() {
                bail!("test-only component `{package}`: build finished but {wasm} is missing");
            }
        }
    }
    Ok(())
}

/// Where cargo puts a component package's release wasm (`-` becomes `_` in the file name).
fn test_only_wasm(package: &str) -> String {
    format!("target/{WASM_TARGET}/release/{}.wasm", package.replace('-', "_"))
}

fn package_of(command: &str) -> Option<String> {
    let mut words = command.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-p" || word == "--package" {
            return words.next().map(str::to_owned);
        }
        if let Some(package) = word.strip_prefix("--package=") {
            return Some(package.to_owned());
        }
    }
    None
}

fn cargo(root: &Path, args: impl IntoIterator<Item = String>) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run_checked(Command::new(cargo).args(args).current_dir(root))
}

fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_comes_from_the_build_command() {
        assert_eq!(package_of("cargo build -p health --target wasm32-wasip2 --release").as_deref(), Some("health"));
        assert_eq!(package_of("cargo build --package=batch-cron --release").as_deref(), Some("batch-cron"));
        assert_eq!(package_of("cargo build --release"), None);
    }

    #[test]
    fn the_repository_manifest_names_buildable_components() {
        let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
        let manifest: Manifest = toml::from_str(&text).unwrap();
        assert!(manifest.component.contains_key("health"));
        for (id, c) in &manifest.component {
            let command = &c.build.as_ref().unwrap_or_else(|| panic!("{id} has no build")).command;
            assert!(package_of(command).is_some(), "{id}: {command}");
            assert!(c.source.starts_with("target/wasm32-wasip2/release/"), "{id}: {}", c.source);
        }
    }

    #[test]
    fn test_only_components_are_workspace_packages_that_spin_toml_never_names() {
        let text = std::fs::read_to_string(workspace_root().join("spin.toml")).unwrap();
        let manifest: Manifest = toml::from_str(&text).unwrap();
        for package in TEST_ONLY_COMPONENTS {
            let cargo_toml = workspace_root().join("components").join(package).join("Cargo.toml");
            let cargo_toml = std::fs::read_to_string(&cargo_toml).unwrap_or_else(|e| panic!("{package}: {e}"));
            assert!(cargo_toml.contains(&format!("name = \"{package}\"")), "{package}");
            for (id, c) in &manifest.component {
                let command = &c.build.as_ref().unwrap().command;
                assert_ne!(package_of(command).as_deref(), Some(*package), "spin.toml ships test-only `{id}`");
                assert_ne!(c.source, test_only_wasm(package), "spin.toml ships test-only `{id}`");
            }
        }
        assert_eq!(test_only_wasm("debug-routes"), "target/wasm32-wasip2/release/debug_routes.wasm");
    }
}
