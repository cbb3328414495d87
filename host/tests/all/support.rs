//! `TestHost`: runs the built `kana-host` binary as a child process on an ephemeral loopback port,
//! with a fresh state dir, and sends it real HTTP requests.
//!
//! The component `.wasm` files must exist (`cargo xtask build-components`, or `cargo xtask test`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The repository root (the folder holding spin.toml).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("kana-host-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The test-only `debug-routes` component (components/debug-routes) and its `/debug/...` route:
/// spin.toml never lists it (nothing ships its routes), the test manifests below add it.
/// `cargo xtask build-components` (and `cargo xtask test`) build its wasm.
pub const DEBUG_COMPONENT: &str = r#"
# ---------------------------------------------------------------- debug-routes (host tests only)
[[trigger.http]]
route = "/debug/..."
component = "debug-routes"

[component.debug-routes]
source = "target/wasm32-wasip2/release/debug_routes.wasm"
key_value_stores = ["default"]
allowed_outbound_hosts = []
"#;

/// Writes a copy of the repository's spin.toml plus [`DEBUG_COMPONENT`], changed by `edit`, with
/// `source` paths made absolute so it works from a temp folder. Returns the folder (keep it
/// alive) and the file.
pub fn edited_manifest(edit: impl FnOnce(String) -> String) -> (TempDir, PathBuf) {
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
    write_manifest(edit(text + DEBUG_COMPONENT))
}

/// The repository's spin.toml as it ships (no [`DEBUG_COMPONENT`]), changed by `edit`, with
/// `source` paths made absolute so it works from a temp folder.
pub fn shipped_manifest(edit: impl FnOnce(String) -> String) -> (TempDir, PathBuf) {
    write_manifest(edit(std::fs::read_to_string(repo_root().join("spin.toml")).unwrap()))
}

fn write_manifest(text: String) -> (TempDir, PathBuf) {
    let root = repo_root().display().to_string();
    let text = text.replace("source = \"", &format!("source = \"{root}/"));
    let dir = TempDir::new("manifest");
    let path = dir.path().join("spin.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Like [`edited_manifest`], keeping only the `health`, `heartbeat` and `debug-routes`
/// components and their triggers: host behaviour tests then start in well under a second and do
/// not depend on the (large, separately owned) tract components.
pub fn core_manifest(edit: impl FnOnce(String) -> String) -> (TempDir, PathBuf) {
    edited_manifest(|text| {
        const KEEP: [&str; 3] = ["health", "heartbeat", "debug-routes"];
        let mut doc: toml::Table = toml::from_str(&edit(text)).unwrap();
        doc["component"].as_table_mut().unwrap().retain(|id, _| KEEP.contains(&id));
        for (_, triggers) in doc["trigger"].as_table_mut().unwrap().iter_mut() {
            let triggers = triggers.as_array_mut().unwrap();
            triggers.retain(|t| KEEP.iter().any(|k| t["component"].as_str() == Some(k)));
        }
        toml::to_string(&doc).unwrap()
    })
}

/// Starting options; `TestHost::start()` uses the defaults (repository spin.toml, all components).
#[derive(Default, Clone)]
pub struct Options {
    pub manifest: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

pub struct TestHost {
    child: Option<Child>,
    base_url: String,
    options: Options,
    state: TempDir,
    agent: ureq::Agent,
    _manifest_dir: Option<TempDir>,
}

/// An HTTP reply with the body already read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer whose body is bytes (a PNG), not text.
#[derive(Debug)]
pub struct BytesReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl BytesReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (an error answer).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl TestHost {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Serves only health + heartbeat + debug-routes (see [`core_manifest`]) with extra host
    /// arguments.
    pub fn start_core(args: &[&str]) -> Self {
        let (dir, manifest) = core_manifest(|text| text);
        Self::start_core_with(dir, manifest, args)
    }

    /// Serves a manifest made by [`core_manifest`] (its folder is kept alive by the host).
    pub fn start_core_with(dir: TempDir, manifest: PathBuf, args: &[&str]) -> Self {
        let mut host = Self::start_with(Options {
            manifest: Some(manifest),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Options::default()
        });
        host._manifest_dir = Some(dir);
        host
    }

    pub fn start_with(options: Options) -> Self {
        check_components_built(&options);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut host =
            TestHost { child: None, base_url: String::new(), options, state: TempDir::new("state"), agent, _manifest_dir: None };
        host.spawn();
        host
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The host's stderr (its log lines) so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.state.path().join("host-stderr.log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> Reply {
        self.finish(self.agent.get(self.url(path)).call())
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Reply {
        self.finish(self.agent.post(self.url(path)).send(body))
    }

    /// POST with a content type, asking for JSON (what the reference README's curl sends).
    pub fn post_as(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        let request = self.agent.post(self.url(path)).header("accept", "application/json").header("content-type", content_type);
        self.finish(request.send(body))
    }

    /// POST with extra headers (e.g. `Authorization`).
    pub fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = self.agent.post(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish(request.send(body))
    }

    /// `method path` with an optional Content-Type and body; the answer's body kept as bytes.
    pub fn fetch_bytes(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> BytesReply {
        let mut request = http::Request::builder().method(method).uri(self.url(path));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        // ureq sends no body with GET: an empty one goes as none.
        let result = if body.is_empty() { self.agent.run(request.body(()).unwrap()) } else { self.agent.run(request.body(body.to_vec()).unwrap()) };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}\nhost log:\n{}", self.logs()));
        let headers = response.headers().iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned())).collect();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_vec().unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        BytesReply { status, headers, body }
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Reply {
        self.finish(self.agent.put(self.url(path)).send(body))
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.finish(self.agent.delete(self.url(path)).call())
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut response = result.unwrap_or_else(|e| panic!("request failed: {e}\nhost log:\n{}", self.logs()));
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Reply { status, headers, body }
    }

    /// The host's resident memory (VmRSS) in MiB.
    pub fn rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().expect("running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib / 1024
    }

    /// CPU seconds (user + system) the host process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let pid = self.child.as_ref().expect("running").id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// The listening address, for raw-socket tests.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base_url.trim_start_matches("http://").parse().unwrap()
    }

    /// SIGKILL: no chance to flush or shut down cleanly.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (hard) and starts again on the same state dir, manifest and options.
    pub fn restart(&mut self) {
        self.kill_hard();
        self.spawn();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.success();
            }
            assert!(Instant::now() < deadline, "host ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&mut self) {
        // One host starts at a time: with a cold compile cache, hosts started together would each
        // compile every component at once and all run past the start timeout on a 2-core machine;
        // one at a time, the first fills the cache and the others start in about a second.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _starting = STARTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let manifest = self.options.manifest.clone().unwrap_or_else(|| repo_root().join("spin.toml"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.path().join("host-stderr.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kana-host"))
            .arg("up")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--manifest")
            .arg(&manifest)
            .arg("--state-dir")
            .arg(self.state.path())
            // One compile cache for all tests: each component is compiled once per change, not
            // once per test (the state dir stays fresh per test).
            .arg("--cache-dir")
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("kana-host-compile-cache"))
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("cannot start kana-host");
        // The host prints `Serving http://<addr>` once it is bound; read lines until then, then
        // keep draining stdout on a thread so the child never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Serving ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        self.child = Some(child);
        // Generous: a cold compile cache means Cranelift compiles three ~20 MB tract components
        // (measured 40-47 s each on a busy 2-core machine); a warm start takes well under a second.
        match rx.recv_timeout(Duration::from_secs(400)) {
            Ok(url) => self.base_url = url,
            Err(_) => panic!("kana-host did not start; its log:\n{}", self.logs()),
        }
        self.wait_until_answering();
    }

    fn wait_until_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.agent.get(self.url("/")).call().is_err() {
            assert!(Instant::now() < deadline, "kana-host is not answering; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

fn check_components_built(options: &Options) {
    let manifest = options.manifest.clone().unwrap_or_else(|| repo_root().join("spin.toml"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let base = manifest.parent().unwrap();
    for line in text.lines() {
        let Some(source) = line.trim().strip_prefix("source = \"").and_then(|s| s.strip_suffix('"')) else { continue };
        if source.ends_with(".wasm") && !base.join(source).is_file() {
            panic!("{source} is missing: run `cargo xtask build-components` (or `cargo xtask test`)");
        }
    }
}

/// A host whose copy of spin.toml mounts a fresh models folder holding the test CNN "cnn"
/// (reference size, random weights, from `kana_inference::testing`) instead of `models/`.
pub struct ModelHost {
    pub host: TestHost,
    pub models: PathBuf,
    _manifest: TempDir,
}

impl ModelHost {
    /// `edit` may change the manifest further; `env` adds variables such as `SPIN_VARIABLE_*`.
    pub fn start(tag: &str, edit: impl FnOnce(String) -> String, env: &[(&str, &str)]) -> ModelHost {
        // Inside the repository so the manifest's relative `source` rewriting keeps working.
        let relative = format!("target/model-host-{}-{tag}", std::process::id());
        let models = repo_root().join(&relative);
        let _ = std::fs::remove_dir_all(&models);
        kana_inference::testing::write_reference_cnn(&models, "cnn", 42, false).unwrap();
        let (manifest_dir, manifest) =
            edited_manifest(|text| edit(text.replace("source = \"models\"", &format!("source = \"{relative}\""))));
        let host = TestHost::start_with(Options {
            manifest: Some(manifest),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        });
        ModelHost { host, models, _manifest: manifest_dir }
    }

    /// The reference README's curl: `-F 'upload_file=@data/test/{file};type=application/x-npz'`
    /// with a file from `fixtures/k49/`.
    pub fn post_fixture(&self, path: &str, file: &str) -> Reply {
        let bytes = kana_inference::testing::fixture(&format!("k49/{file}"));
        let (content_type, body) = kana_inference::testing::multipart_body("upload_file", file, "application/x-npz", &bytes);
        self.host.post_as(path, &content_type, &body)
    }
}

impl Drop for ModelHost {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.models);
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
