//! Several kana-host processes on one machine sharing one Redis key-value store through Spin's
//! runtime config (`--runtime-config-file`), as replicas behind a load balancer would: jobs
//! submitted to any host run exactly once across all of them, survive a SIGKILL of one host,
//! and are deleted everywhere after retention. Also: a SQLite state dir is refused to a second
//! host, and a runtime config kana-host cannot honour stops it at startup.
//!
//! Needs `redis-server` and `redis-cli` (Debian `redis-server`, installed by `cargo xtask setup`).
//! Exactly-once is counted from the `job <id> Done by <owner>` line a runner logs only after its
//! compare-and-swap made the job final, over every host's log (the killed host's included).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::support::{Options, TempDir, TestHost, core_manifest, edited_manifest, eventually, repo_root};

/// A `redis-server` on a free loopback port, no persistence; stopped on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot run redis-server: install it (`cargo xtask setup`, or apt-get install redis-server)");
        let redis = Redis { child, port };
        eventually(Duration::from_secs(20), "redis-server to answer", || (redis.cli(&["PING"]).trim() == "PONG").then_some(()));
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key under `prefix` (SCAN, as the host does).
    fn keys(&self, prefix: &str) -> Vec<String> {
        let pattern = format!("{prefix}*");
        self.cli(&["--scan", "--pattern", &pattern]).lines().map(str::to_owned).collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped manifest with only jobs, batch-cron and predict, the test CNN "cnn" as the
/// models folder, and batch-cron ticking every second (spin.toml's ticks every 10 s).
struct App {
    manifest: PathBuf,
    models: PathBuf,
    _dir: TempDir,
}

impl App {
    fn new(tag: &str) -> App {
        let relative = format!("target/multi-host-{}-{tag}", std::process::id());
        let models = repo_root().join(&relative);
        let _ = std::fs::remove_dir_all(&models);
        kana_inference::testing::write_reference_cnn(&models, "cnn", 42, false).unwrap();
        let (dir, manifest) = edited_manifest(|text| {
            let cron = "component = \"batch-cron\"\ncron_expression = \"*/10 * * * * *\"";
            assert!(text.contains(cron), "spin.toml's batch-cron trigger changed; update this test");
            let text = text.replace(cron, "component = \"batch-cron\"\ncron_expression = \"* * * * * *\"");
            let text = text.replace("source = \"models\"", &format!("source = \"{relative}\""));
            const KEEP: [&str; 3] = ["jobs", "batch-cron", "predict"];
            let mut doc: toml::Table = toml::from_str(&text).unwrap();
            doc["component"].as_table_mut().unwrap().retain(|id, _| KEEP.contains(&id));
            for (_, triggers) in doc["trigger"].as_table_mut().unwrap().iter_mut() {
                triggers.as_array_mut().unwrap().retain(|t| KEEP.iter().any(|k| t["component"].as_str() == Some(k)));
            }
            toml::to_string(&doc).unwrap()
        });
        App { manifest, models, _dir: dir }
    }

    fn host(&self, runtime_config: &Path, env: &[(&str, &str)]) -> TestHost {
        TestHost::start_with(Options {
            manifest: Some(self.manifest.clone()),
            args: vec!["--runtime-config-file".into(), runtime_config.display().to_string()],
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        })
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.models);
    }
}

fn write_runtime_config(dir: &TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("runtime-config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// One 28×28 image, pixels from `seed`, as a JSON upload.
fn json_image(seed: u64) -> Vec<u8> {
    json_images(1, seed)
}

/// `count` images from `seed` in one JSON upload.
fn json_images(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = kana_inference::testing::Lcg::new(seed);
    let images: Vec<Vec<Vec<u32>>> =
        (0..count).map(|_| (0..28).map(|_| (0..28).map(|_| (rng.next().abs() * 255.0) as u32 % 256).collect()).collect()).collect();
    serde_json::to_vec(&serde_json::json!({ "images": images })).unwrap()
}

/// What a job's one result must share with `/predict`'s for the same image.
fn prediction(result: &Value) -> (Value, Value) {
    (result["prediction"].clone(), result["prediction_label"].clone())
}

const JOBS: usize = 1000;
/// The job the kill interrupts: long enough to be caught running.
const BIG_IMAGES: usize = 2000;
/// Distinct images the jobs cycle through (their expected predictions come from `/predict`).
const IMAGES: usize = 50;
/// Long enough to read every job's results after it is seen done, short enough to wait out.
const RETENTION_SECONDS: u64 = 40;

#[test]
fn three_hosts_on_one_redis_run_every_job_exactly_once_through_a_sigkill() {
    // Timings: `--nocapture` prints the line at the end (jobs/s, claims lost, retries).
    let started = Instant::now();
    let redis = Redis::start();
    let config_dir = TempDir::new("runtime-config");
    let runtime_config = write_runtime_config(&config_dir, &format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url()));
    let app = App::new("redis");
    let retention = RETENTION_SECONDS.to_string();
    let env = [
        ("SPIN_VARIABLE_JOBS_LEASE_SECONDS", "4"),
        ("SPIN_VARIABLE_JOBS_RETENTION_SECONDS", retention.as_str()),
        ("SPIN_VARIABLE_JOBS_MAX_QUEUED_JOBS", "5000"),
        // A sweep every 30 s deletes the keys of submissions cut off by the kill.
        ("SPIN_VARIABLE_JOBS_SWEEP_INTERVAL_SECONDS", "30"),
    ];
    let mut hosts: Vec<TestHost> = (0..3).map(|_| app.host(&runtime_config, &env)).collect();
    assert!(redis.keys("").iter().all(|k| !k.starts_with("jobs/job/")), "a fresh store");

    // What each image must come out as.
    let expected: Vec<(Value, Value)> = (0..IMAGES)
        .map(|i| {
            let reply = hosts[i % 3].post_as("/predict/cnn", "application/json", &json_image(i as u64));
            assert_eq!(reply.status, 200, "{}", reply.body);
            prediction(&reply.json()["results"][0])
        })
        .collect();

    // 1,000 jobs over the three hosts at once: even ones async, odd ones scheduled 20 ms apart
    // from 4 s on (due while submissions go on, and after the kill below).
    let submit_start = Instant::now();
    let first_due = Utc::now() + chrono::Duration::seconds(4);
    let bodies: Vec<Vec<u8>> = (0..IMAGES).map(|i| json_image(i as u64)).collect();
    let ids: Vec<(usize, String)> = std::thread::scope(|scope| {
        let submitters: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(h, host)| {
                let bodies = &bodies;
                scope.spawn(move || {
                    (h..JOBS)
                        .step_by(3)
                        .map(|i| {
                            let path = if i % 2 == 0 {
                                "/async_predict/cnn".to_owned()
                            } else {
                                let at = first_due + chrono::Duration::milliseconds(20 * i as i64);
                                format!("/schedule/cnn?execute_at={}", at.to_rfc3339_opts(SecondsFormat::Secs, true).replace(':', "%3A"))
                            };
                            let reply = host.post_as(&path, "application/json", &bodies[i % IMAGES]);
                            assert_eq!(reply.status, 202, "job {i} on host {h}: {}", reply.body);
                            (i, reply.json()["task_id"].as_str().unwrap().to_owned())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        submitters.into_iter().flat_map(|s| s.join().unwrap()).collect()
    });
    let submitted_in = submit_start.elapsed();
    assert_eq!(ids.iter().map(|(_, id)| id).collect::<BTreeSet<_>>().len(), JOBS, "distinct task ids");

    // SIGKILL one host in the middle of a run: a 2,000-image async job (seconds of work) on host 1,
    // killed once it is `running` there, while the small jobs go on. Then start it again.
    let big = {
        let reply = hosts[1].post_as("/async_predict/cnn", "application/json", &json_images(BIG_IMAGES, 7));
        assert_eq!(reply.status, 202, "{}", reply.body);
        reply.json()["task_id"].as_str().unwrap().to_owned()
    };
    eventually(Duration::from_secs(60), "the big job to run on host 1", || (hosts[1].get(&format!("/tasks/{big}")).json()["status"] == "running").then_some(()));
    hosts[1].kill_hard();
    std::thread::sleep(Duration::from_secs(1));
    hosts[1].restart();

    // Every job ends done with its own image's prediction; results are read as soon as a job is
    // seen done, well within retention.
    let run_start = Instant::now();
    let mut pending: BTreeMap<String, usize> = ids.iter().map(|(i, id)| (id.clone(), *i)).collect();
    let mut runs: BTreeMap<String, u64> = BTreeMap::new();
    eventually(Duration::from_secs(120), "every job to finish", || {
        let ids: Vec<(String, usize)> = pending.iter().map(|(id, i)| (id.clone(), *i)).collect();
        for (id, i) in ids {
            let task = hosts[i % 3].get(&format!("/tasks/{id}"));
            assert_eq!(task.status, 200, "job {i} lost: {}", task.body);
            let task = task.json();
            match task["status"].as_str() {
                Some("done") => {
                    let results = task["results"].as_array().unwrap_or_else(|| panic!("job {i}: {task}"));
                    assert_eq!(results.len(), 1, "job {i}: {task}");
                    assert_eq!(prediction(&results[0]), expected[i % IMAGES], "job {i} ran someone else's input: {task}");
                    runs.insert(id.clone(), task["runs"].as_u64().unwrap());
                    pending.remove(&id);
                }
                Some("pending" | "running") => {}
                other => panic!("job {i} ended {other:?}: {task}"),
            }
        }
        pending.is_empty().then_some(())
    });
    let all_done_in = run_start.elapsed();
    // The interrupted run was taken over once its lease lapsed and finished by another host.
    let task = eventually(Duration::from_secs(60), "the interrupted big job to finish", || {
        let task = hosts[0].get(&format!("/tasks/{big}")).json();
        (task["status"] != "pending" && task["status"] != "running").then_some(task)
    });
    assert_eq!((task["status"].as_str(), task["runs"].as_u64()), (Some("done"), Some(2)), "interrupted once, run again once");
    assert_eq!(task["results"].as_array().map(Vec::len), Some(BIG_IMAGES), "each image once");

    // Exactly once: one `Done` line per job over all hosts' logs, none for a job twice.
    let logs: String = hosts.iter().map(TestHost::logs).collect();
    let mut finished: BTreeMap<&str, usize> = BTreeMap::new();
    for line in logs.lines().filter(|l| l.contains(" Done by ")) {
        if let Some(id) = line.split("job ").nth(1).and_then(|rest| rest.split(' ').next()) {
            *finished.entry(id).or_default() += 1;
        }
    }
    for id in ids.iter().map(|(_, id)| id).chain([&big]) {
        assert_eq!(finished.get(id.as_str()), Some(&1), "job {id} finished {:?} times", finished.get(id.as_str()));
    }
    assert_eq!(finished.len(), JOBS + 1);
    // A second run only takes over a run the kill interrupted (its lease lapsed).
    let retried = runs.values().filter(|&&r| r > 1).count() + 1;
    assert!(runs.values().all(|&r| r <= 2), "{runs:?}");
    let lost_claims: usize = logs
        .lines()
        .filter_map(|l| l.split("lost ").nth(1)?.split(" claim(s)").next()?.parse::<usize>().ok())
        .sum();

    // Nothing left behind: after retention every job's keys are gone from Redis.
    eventually(Duration::from_secs(RETENTION_SECONDS + 60), "finished jobs to be deleted after retention", || {
        redis.keys("jobs/job/").is_empty().then_some(())
    });
    let (_, some_id) = &ids[0];
    assert_eq!(hosts[2].get(&format!("/tasks/{some_id}")).status, 404);
    eprintln!(
        "multi-host: {JOBS} jobs submitted to 3 hosts in {:.1} s ({:.0}/s), all done {:.1} s after the \
         restart; {retried} retried after the kill, {lost_claims} claims lost to other runners; whole test {:.1} s",
        submitted_in.as_secs_f64(),
        JOBS as f64 / submitted_in.as_secs_f64(),
        all_done_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for host in &mut hosts {
        assert!(host.terminate(), "host exits cleanly on SIGTERM");
    }
}

/// Runs `kana-host up` to its exit (expecting it not to start); returns its stderr.
fn refused_start(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kana-host"))
        .args(["up", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kana-host started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_second_host_on_the_same_sqlite_state_dir_is_refused_at_startup() {
    let (dir, manifest) = core_manifest(|text| text);
    let first = TestHost::start_core_with(dir, manifest.clone(), &[]);
    let state = first.state_dir().display().to_string();
    let manifest = manifest.display().to_string();
    let stderr = refused_start(&["--manifest", &manifest, "--state-dir", &state]);
    assert!(stderr.contains("in use by another kana-host"), "{stderr}");
    assert!(stderr.contains("--runtime-config-file"), "says what to do instead: {stderr}");
    assert_eq!(first.get("/health").status, 200, "the first host serves on");
}

#[test]
fn a_runtime_config_kana_host_cannot_honour_stops_it_at_startup() {
    let (_dir, manifest) = core_manifest(|text| text);
    let manifest = manifest.display().to_string();
    let config_dir = TempDir::new("bad-runtime-config");
    let cases = [
        ("[key_value_store.default]\ntype = \"azure_cosmos\"\n", "store type \"azure_cosmos\" is not supported"),
        ("[sqlite_database.default]\ntype = \"spin\"\n", "`[sqlite_database]` is not supported"),
        // Nobody listens on port 1: a store that cannot be reached fails the start, not requests.
        ("[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n", "cannot connect to Redis"),
    ];
    for (text, message) in cases {
        let config = write_runtime_config(&config_dir, text);
        let state = TempDir::new("bad-runtime-config-state");
        let stderr = refused_start(&["--manifest", &manifest, "--state-dir", &state.path().display().to_string(), "--runtime-config-file", &config.display().to_string()]);
        assert!(stderr.contains(message), "{text}: {stderr}");
    }
}
