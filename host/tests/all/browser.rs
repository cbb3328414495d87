//! The drawing page in a real browser: Debian's `chromium`, headless, driven over WebDriver by
//! fantoccini through Debian's `chromedriver`. Loads `/` from a host on the shipped spin.toml and
//! models, draws く with pointer (mouse) events on the canvas, checks that the 28×28 preview has
//! ink and the top 5 renders with probabilities summing to at most 1, uploads
//! `fixtures/k49/test_images_10.npz` and sees 10 results and the contact-sheet link, and saves a
//! screenshot as `target/browser/drawing-page.png`.
//!
//! Without chromium or chromedriver the test fails and says what to install (`cargo xtask setup`
//! installs both): it never passes without having run the browser.

use std::net::TcpListener;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::{Value, json};

use crate::support::{Options, TestHost, eventually, repo_root, shipped_manifest};

/// How long the page gets for anything it waits on the server for (a generous bound, not a
/// speed check: the first /predict of a fresh instance loads the model).
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// `name` on `PATH`, or a panic saying which Debian package brings it.
fn required(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("`{name}` is not on PATH: the browser test needs Debian's `{package}` (run `cargo xtask setup`, or `apt-get install {package}`)")
    })
}

/// A chromedriver child on a free loopback port; killed on drop (it ends its browsers with it).
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let binary = required("chromedriver", "chromium-driver");
        // A port the kernel just handed out and released: free unless something races for it.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chromedriver.log");
        let child = Command::new(binary)
            .args([format!("--port={port}"), format!("--log-path={}", log.display())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        let driver = ChromeDriver { child, url: format!("http://127.0.0.1:{port}") };
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(2))).build().into();
        eventually(Duration::from_secs(20), "chromedriver to answer /status", || agent.get(format!("{}/status", driver.url)).call().ok());
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_drawing_page_draws_predicts_and_uploads_in_headless_chromium() {
    let chromium = required("chromium", "chromium");
    let driver = ChromeDriver::start();
    let (_dir, manifest) = shipped_manifest(|text| text);
    let host = TestHost::start_with(Options { manifest: Some(manifest), ..Default::default() });

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), json!({
            "binary": chromium,
            // Root in a container: no sandbox; no GPU; /dev/shm may be small.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1000"],
        }));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start chromium: {e}"));
        // Close the session, which ends its browser, whatever happened; then report.
        let outcome = AssertUnwindSafe(exercise_page(&client, &host)).catch_unwind().await;
        let _ = client.close().await;
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}\nhost log:\n{}", host.logs()),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
}

/// A WebDriver error, said with what the test was doing.
fn fail(what: &'static str) -> impl Fn(fantoccini::error::CmdError) -> String {
    move |e| format!("{what}: {e}")
}

/// Runs `script` every 100 ms until it returns something other than null, false, 0 or "" (or
/// [`PAGE_WAIT`] passes), and returns that.
async fn until(client: &Client, script: &str, what: &'static str) -> Result<Value, String> {
    let poll = async {
        loop {
            let value = client.execute(script, vec![]).await.map_err(fail(what))?;
            if !matches!(&value, Value::Null | Value::Bool(false)) && value != json!(0) && value != json!("") {
                return Ok(value);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(PAGE_WAIT, poll).await.unwrap_or_else(|_| Err(format!("{what}: not there after {PAGE_WAIT:?}")))
}

async fn exercise_page(client: &Client, host: &TestHost) -> Result<(), String> {
    client.goto(&host.url("/")).await.map_err(fail("loading /"))?;
    // The model picker fills from GET /models, hiragana models first.
    // (index.html's placeholder "loading…" has no value attribute; the models' options do.)
    let model = until(client, "const s = document.getElementById('model'); return s.querySelector('option[value]') ? s.value : null;", "the model list").await?;
    assert!(model.as_str().is_some_and(|m| m.starts_with("hiragana")), "the first model offered is {model}");

    // く: one chevron stroke, top right → middle left → bottom right, in the pad's own fractions.
    let rect = client.execute("const r = document.getElementById('pad').getBoundingClientRect(); return [r.left, r.top, r.width, r.height];", vec![]).await.map_err(fail("the pad's box"))?;
    let [left, top, width, height] = [0, 1, 2, 3].map(|i| rect[i].as_f64().unwrap());
    let at = |(fx, fy): (f64, f64)| ((left + fx * width).round(), (top + fy * height).round());
    let corners = [(0.62, 0.15), (0.35, 0.5), (0.62, 0.85)];
    let (x, y) = at(corners[0]);
    let mut pen = MouseActions::new("mouse".into())
        .then(PointerAction::MoveTo { duration: None, x, y })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT });
    for pair in corners.windows(2) {
        for step in 1..=12 {
            let t = step as f64 / 12.0;
            let (x, y) = at((pair[0].0 + (pair[1].0 - pair[0].0) * t, pair[0].1 + (pair[1].1 - pair[0].1) * t));
            pen = pen.then(PointerAction::MoveTo { duration: Some(Duration::from_millis(5)), x, y });
        }
    }
    client.perform_actions(pen.then(PointerAction::Up { button: MOUSE_BUTTON_LEFT })).await.map_err(fail("drawing"))?;

    // The top 5 renders (after the debounce), and the 28×28 the model saw, drawn just before the
    // request, has ink.
    client.wait().at_most(PAGE_WAIT).for_element(Locator::Css("#top5 li:nth-child(5)")).await.map_err(fail("the top 5"))?;
    let lit = client
        .execute("const d = document.getElementById('preview').getContext('2d').getImageData(0, 0, 28, 28).data; let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 0) n++; return n;", vec![])
        .await
        .map_err(fail("reading the preview"))?;
    assert!(lit.as_u64().is_some_and(|n| n >= 20), "the 28×28 preview is (nearly) empty: {lit} lit pixels");
    let mut percents = Vec::new();
    for cell in client.find_all(Locator::Css("#top5 li .p")).await.map_err(fail("the top 5"))? {
        let text = cell.text().await.map_err(fail("a probability"))?;
        percents.push(text.trim_end_matches('%').parse::<f64>().map_err(|e| format!("probability {text:?}: {e}"))?);
    }
    let labels = client.execute("return [...document.querySelectorAll('#top5 li .label')].map(l => l.textContent);", vec![]).await.map_err(fail("the labels"))?;
    eprintln!("browser: drew く; top 5 of {model}: {labels} {percents:?}");
    assert_eq!(percents.len(), 5, "{percents:?}");
    assert!(percents.iter().all(|p| (0.0..=100.0).contains(p)) && percents.windows(2).all(|w| w[0] >= w[1]), "{percents:?}");
    // Shown to 0.1 %: five roundings move the sum by at most 0.25 points.
    assert!(percents.iter().sum::<f64>() <= 100.25, "top 5 sums past 1: {percents:?}");
    assert!(labels.as_array().is_some_and(|l| l.iter().all(|s| s.as_str().is_some_and(|s| !s.is_empty()))), "{labels}");

    // Upload 10 K49 images: 10 result cells, and a contact sheet link once they are in.
    let npz = repo_root().join("fixtures/k49/test_images_10.npz");
    let input = client.find(Locator::Css("#file")).await.map_err(fail("the file input"))?;
    input.send_keys(&npz.display().to_string()).await.map_err(fail("choosing the npz"))?;
    client.wait().at_most(PAGE_WAIT).for_element(Locator::Css("#grid li:nth-child(10)")).await.map_err(fail("10 upload results"))?;
    let cells = client.find_all(Locator::Css("#grid li")).await.map_err(fail("the upload grid"))?;
    assert_eq!(cells.len(), 10, "upload results");
    let sheet = client.wait().at_most(PAGE_WAIT).for_element(Locator::Css("#sheet:not([hidden])")).await.map_err(fail("the contact sheet link"))?;
    let href = sheet.attr("href").await.map_err(fail("the sheet link"))?.unwrap_or_default();
    assert!(href.starts_with("blob:"), "sheet link {href:?}");
    let status = client.find(Locator::Id("upload-status")).await.map_err(fail("the status"))?.text().await.map_err(fail("the status"))?;
    assert!(status.starts_with("10 image(s)"), "upload status {status:?}");

    let shot = client.screenshot().await.map_err(fail("the screenshot"))?;
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("browser");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("drawing-page.png"), &shot).unwrap();
    Ok(())
}
