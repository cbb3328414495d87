//! `/async_predict`, `/schedule`, `/tasks` and the `batch-cron` component through the real host,
//! real HTTP and the real SQLite key-value file: asynchrony, schedule timing, durability across a
//! SIGKILL, retry of an interrupted run after its lease, racing cron ticks, and bad input.
//!
//! Each host gets a models folder with the test CNN "cnn" and a copy of spin.toml whose
//! batch-cron trigger fires every second (spin.toml's is every 10 s), so a test takes seconds.
//! Runs are counted from the `jobs/job/{id}/run/{owner}` keys each started run writes, read
//! straight from SQLite, not from the job record the runners themselves update.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kana_inference::testing::{self, fixture, multipart_body};
use rusqlite::Connection;
use serde_json::Value;

use crate::support::{ModelHost, Reply, eventually};

const NPZ: &str = "application/x-npz";

struct JobsHost(ModelHost);

impl std::ops::Deref for JobsHost {
    type Target = ModelHost;
    fn deref(&self) -> &ModelHost {
        &self.0
    }
}

impl std::ops::DerefMut for JobsHost {
    fn deref_mut(&mut self) -> &mut ModelHost {
        &mut self.0
    }
}

impl JobsHost {
    /// A host whose batch-cron runs every second from `cron_triggers` triggers (more than one
    /// makes overlapping ticks race on the same jobs), with extra `SPIN_VARIABLE_*` env vars.
    fn start(tag: &str, cron_triggers: usize, env: &[(&str, &str)]) -> JobsHost {
        Self::start_configured(tag, cron_triggers, env, &[])
    }

    /// As [`JobsHost::start`], with `jobs_variables` (kana-jobs `Config` variable names) set to
    /// literal values in both the jobs and the batch-cron component of the test manifest.
    fn start_configured(tag: &str, cron_triggers: usize, env: &[(&str, &str)], jobs_variables: &[(&str, &str)]) -> JobsHost {
        let every_second_cron = |text: String| {
            let trigger = "component = \"batch-cron\"\ncron_expression = \"*/10 * * * * *\"";
            assert!(text.contains(trigger), "spin.toml's batch-cron trigger changed; update this test");
            let every_second = "component = \"batch-cron\"\ncron_expression = \"* * * * * *\"";
            let mut text = text.replace(trigger, every_second);
            for _ in 1..cron_triggers {
                text.push_str(&format!("\n[[trigger.cron]]\n{every_second}\n"));
            }
            for (name, value) in jobs_variables {
                let templated = format!("\n{name} = \"{{{{ jobs_{name} }}}}\"");
                if text.contains(&templated) {
                    text = text.replace(&templated, &format!("\n{name} = \"{value}\""));
                } else {
                    for section in ["[component.jobs.variables]", "[component.batch-cron.variables]"] {
                        assert!(text.contains(section), "spin.toml has no {section}; update this test");
                        text = text.replace(section, &format!("{section}\n{name} = \"{value}\""));
                    }
                }
            }
            text
        };
        JobsHost(ModelHost::start(&format!("jobs-{tag}"), every_second_cron, env))
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        self.host.post_as(path, content_type, body)
    }

    /// Submits and checks the 202 every submission gets; returns the task id.
    fn submit(&self, path: &str, content_type: &str, body: &[u8]) -> String {
        let reply = self.post(path, content_type, body);
        assert_eq!(reply.status, 202, "{path}: {}", reply.body);
        let json = reply.json();
        let id = json["task_id"].as_str().unwrap().to_owned();
        assert_eq!(json["status"], "pending");
        assert_eq!(json["status_url"], format!("/tasks/{id}"));
        assert_eq!(reply.header("location"), Some(format!("/tasks/{id}").as_str()));
        id
    }

    fn schedule(&self, at: DateTime<Utc>, file: &str) -> String {
        let (ct, body) = multipart_body("upload_file", file, NPZ, &fixture(&format!("k49/{file}")));
        self.submit(&format!("/schedule/cnn?execute_at={}", query_time(at)), &ct, &body)
    }

    fn task(&self, id: &str) -> Value {
        let reply = self.host.get(&format!("/tasks/{id}"));
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    fn wait_finished(&self, id: &str, timeout: Duration) -> Value {
        eventually(timeout, &format!("task {id} to finish"), || {
            let task = self.task(id);
            matches!(task["status"].as_str(), Some("done" | "failed")).then_some(task)
        })
    }

    fn db(&self) -> Connection {
        let db = Connection::open(self.host.state_dir().join("sqlite_key_value.db")).unwrap();
        db.busy_timeout(Duration::from_secs(10)).unwrap();
        db
    }

    /// Start times of every run of job `id`, oldest first (one `run/{owner}` key per started run).
    fn runs(&self, id: &str) -> Vec<DateTime<Utc>> {
        let db = self.db();
        let mut query = db
            .prepare("SELECT value FROM spin_key_value WHERE store = 'default' AND key LIKE ?1")
            .unwrap();
        let mut starts: Vec<DateTime<Utc>> = query
            .query_map([format!("jobs/job/{id}/run/%")], |row| row.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|v| DateTime::parse_from_rfc3339(std::str::from_utf8(&v.unwrap()).unwrap()).unwrap().to_utc())
            .collect();
        starts.sort();
        starts
    }
}

/// `2024-03-22T15%3A51%3A00Z`, as in the reference README's curl example.
fn query_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true).replace(':', "%3A")
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}"))).unwrap().to_utc()
}

/// The next whole second at least `ahead` from now.
fn whole_second_ahead(ahead: Duration) -> DateTime<Utc> {
    let at = Utc::now() + ahead;
    DateTime::from_timestamp(at.timestamp() + 1, 0).unwrap()
}

/// `count` random 28×28 images as a JSON upload: enough work to keep a run busy for a while.
fn json_images(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = testing::Lcg::new(seed);
    let mut text = String::with_capacity(count * 28 * 28 * 4 + 16);
    text.push_str("{\"images\":[");
    for i in 0..count {
        text.push_str(if i == 0 { "[" } else { ",[" });
        for row in 0..28 {
            text.push_str(if row == 0 { "[" } else { ",[" });
            let pixels: Vec<String> = (0..28).map(|_| ((rng.next().abs() * 255.0) as u32 % 256).to_string()).collect();
            text.push_str(&pixels.join(","));
            text.push(']');
        }
        text.push(']');
    }
    text.push_str("]}");
    text.into_bytes()
}

/// What must match between a job's results and `/predict`'s for the same upload (the start
/// timestamp is when the image ran, so it legitimately differs).
fn predictions(results: &Value) -> Vec<[String; 4]> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            ["index", "prediction", "prediction_label", "probability"].map(|f| match &r[f] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
        .collect()
}

#[test]
fn async_predict_answers_202_at_once_and_ends_with_the_results_of_predict() {
    let h = JobsHost::start("async", 1, &[]);
    let id = h.submit_fixture_async("test_images_100.npz");
    let task = h.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(task["status"], "done", "{task}");
    assert_eq!((task["task_id"].as_str(), task["model"].as_str(), task["kind"].as_str()), (Some(id.as_str()), Some("cnn"), Some("async")));
    assert!(time(&task["finished_at"]) >= time(&task["created_at"]));
    assert_eq!(id.len(), 41, "{id}");

    // Listing is off by default (ids are capabilities); the task itself stays readable by id.
    let listing = h.host.get("/tasks");
    assert_eq!((listing.status, listing.json()["kind"].as_str()), (404, Some("listing_disabled")), "{}", listing.body);
    assert_eq!(h.host.get(&format!("/tasks/{id}")).status, 200);

    let sync = h.post_fixture("/predict/cnn", "test_images_100.npz");
    assert_eq!(sync.status, 200, "{}", sync.body);
    let want = predictions(&sync.json()["results"]);
    assert_eq!(want.len(), 100);
    assert_eq!(predictions(&task["results"]), want);
    assert!(task["results"].as_array().unwrap().iter().all(|r| r["start_timestamp"].as_str().is_some_and(|s| s.len() == 15)));

    // The same document for download.
    let download = h.host.get(&format!("/tasks/{id}/results"));
    assert_eq!(download.status, 200);
    assert!(download.header("content-disposition").is_some_and(|d| d.contains(&format!("{id}.json"))), "{:?}", download.headers);
    let document = download.json();
    assert_eq!((document["task_id"].as_str(), document["model"].as_str()), (Some(id.as_str()), Some("cnn")));
    assert_eq!(predictions(&document["results"]), want);

    // A batch that takes a while: the 202 comes back while it is still to be run, the instance
    // running it still answers, and it is run once (by the task spawned after the 202, not cron).
    let big = h.submit("/async_predict/cnn", "application/json", &json_images(2000, 7));
    let status = h.task(&big)["status"].as_str().unwrap().to_owned();
    assert!(status == "pending" || status == "running", "already {status} when the 202 came back");
    let task = h.wait_finished(&big, Duration::from_secs(120));
    assert_eq!((task["status"].as_str(), task["results"].as_array().map(Vec::len)), (Some("done"), Some(2000)));
    assert_eq!(h.runs(&id).len(), 1);
    assert_eq!(h.runs(&big).len(), 1);
}

impl JobsHost {
    fn submit_fixture_async(&self, file: &str) -> String {
        let (ct, body) = multipart_body("upload_file", file, NPZ, &fixture(&format!("k49/{file}")));
        self.submit("/async_predict/cnn", &ct, &body)
    }
}

#[test]
fn a_scheduled_batch_runs_after_execute_at_within_one_cron_period() {
    let h = JobsHost::start("schedule", 1, &[("SPIN_VARIABLE_JOBS_LIST_TASKS", "true")]);
    let at = whole_second_ahead(Duration::from_secs(2));
    let reply = h.post_fixture(&format!("/schedule/cnn?execute_at={}", query_time(at)), "test_images_10.npz");
    assert_eq!(reply.status, 202, "{}", reply.body);
    let json = reply.json();
    let id = json["task_id"].as_str().unwrap().to_owned();
    let normalised = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    assert_eq!(json["execute_at"], normalised);
    assert_eq!(json["message"], format!("Batch prediction task scheduled at {normalised}"));

    // The same instant written with an offset is the same UTC time.
    let tokyo = at.with_timezone(&chrono::FixedOffset::east_opt(9 * 3600).unwrap()).to_rfc3339().replace(':', "%3A").replace('+', "%2B");
    let reply = h.post_fixture(&format!("/schedule/cnn?execute_at={tokyo}"), "test_image_0.npz");
    assert_eq!(reply.json()["execute_at"], normalised, "{}", reply.body);
    let offset_id = reply.json()["task_id"].as_str().unwrap().to_owned();

    // Poll until done: every status other than pending must be seen only after execute_at.
    let (mut pending_before, mut seen_done_at) = (0, None);
    while seen_done_at.is_none() {
        let task = h.task(&id);
        let seen_at = Utc::now();
        match task["status"].as_str().unwrap() {
            "pending" => pending_before += usize::from(seen_at < at),
            status => {
                assert!(seen_at >= at, "{status} at {seen_at}, before execute_at {at}");
                if status == "done" {
                    seen_done_at = Some(seen_at);
                }
            }
        }
        assert!(seen_at < at + chrono::Duration::seconds(30), "not run: {task}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pending_before > 0, "never saw it pending before execute_at");
    let task = h.task(&id);
    let (started, finished) = (time(&task["started_at"]), time(&task["finished_at"]));
    assert!(started >= at, "started {started} before {at}");
    // One cron period is 1 s; one more second of slack for a busy CI machine.
    assert!(started <= at + chrono::Duration::seconds(2), "started {started}, execute_at {at}");
    assert!(finished >= started);
    assert_eq!(task["results"].as_array().unwrap().len(), 10);
    assert_eq!(h.runs(&id).len(), 1);
    assert_eq!(h.wait_finished(&offset_id, Duration::from_secs(10))["status"], "done");
    eprintln!("execute_at {at}: started {started}, finished {finished}, seen done at {}", seen_done_at.unwrap());

    let listed = h.host.get("/tasks?status=done").json();
    let ids: Vec<&str> = listed["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&offset_id.as_str()), "{listed}");
}

#[test]
fn jobs_survive_a_hard_kill_and_an_interrupted_run_is_retried_after_its_lease() {
    const LEASE: i64 = 4;
    let mut h = JobsHost::start("durable", 1, &[("SPIN_VARIABLE_JOBS_LEASE_SECONDS", "4")]);
    // A long batch due now, and small ones due in a few seconds, after the kill.
    let now = Utc::now();
    let long = h.submit(
        &format!("/schedule/cnn?execute_at={}", query_time(now)),
        "application/json",
        &json_images(2000, 11),
    );
    let later = whole_second_ahead(Duration::from_secs(3));
    let small: Vec<String> = (0..3).map(|_| h.schedule(later, "test_images_10.npz")).collect();

    eventually(Duration::from_secs(30), "the long batch to start", || (h.task(&long)["status"] == "running").then_some(()));
    h.host.kill_hard();
    let killed_at = Utc::now();
    assert_eq!(h.runs(&long).len(), 1, "its run had started");

    h.host.restart();
    for id in &small {
        let task = h.wait_finished(id, Duration::from_secs(30));
        assert_eq!((task["status"].as_str(), task["runs"].as_u64()), (Some("done"), Some(1)), "{task}");
        assert_eq!(h.runs(id).len(), 1, "{id} ran once");
        assert!(time(&task["started_at"]) >= later);
    }
    let task = h.wait_finished(&long, Duration::from_secs(60));
    assert_eq!((task["status"].as_str(), task["runs"].as_u64()), (Some("done"), Some(2)), "{task}");
    assert_eq!(task["results"].as_array().unwrap().len(), 2000);
    let runs = h.runs(&long);
    assert_eq!(runs.len(), 2, "interrupted once, retried once");
    // Retried only once the lease of the interrupted run had expired (times are whole seconds).
    assert!(runs[1] - runs[0] >= chrono::Duration::seconds(LEASE - 1), "{runs:?}");
    assert!(runs[1] + chrono::Duration::seconds(1) >= killed_at, "{runs:?} killed at {killed_at}");
}

#[test]
fn racing_cron_ticks_run_each_due_job_once() {
    // Four triggers of batch-cron, each with its own instance, all firing every second.
    let h = JobsHost::start("race", 4, &[]);
    let at = whole_second_ahead(Duration::from_secs(2));
    let ids: Vec<String> = (0..6).map(|_| h.schedule(at, "test_images_10.npz")).collect();
    for id in &ids {
        let task = h.wait_finished(id, Duration::from_secs(30));
        assert_eq!((task["status"].as_str(), task["runs"].as_u64()), (Some("done"), Some(1)), "{task}");
        assert_eq!(task["results"].as_array().unwrap().len(), 10);
    }
    // Let a few more ticks pass over the finished jobs, then count runs.
    std::thread::sleep(Duration::from_secs(2));
    for id in &ids {
        assert_eq!(h.runs(id).len(), 1, "{id}");
    }
    // The guest logs what each tick did: the ticks did overlap on these jobs.
    let logs = h.host.logs();
    let count = |word: &str| -> usize {
        logs.lines()
            .filter_map(|l| l.split("batch-cron: ran ").nth(1))
            .filter_map(|rest| rest.split(word).next()?.rsplit(' ').next()?.parse::<usize>().ok())
            .sum()
    };
    assert_eq!(count(" job(s)"), ids.len(), "{logs}");
    assert!(count(" claim(s)") > 0, "no tick lost a claim, so nothing raced:\n{logs}");
}

#[test]
fn bad_input_gets_4xx_json_and_stores_nothing() {
    let h = JobsHost::start(
        "bad",
        1,
        &[
            ("SPIN_VARIABLE_JOBS_MAX_INPUT_BYTES", "20000"),
            ("SPIN_VARIABLE_JOBS_MAX_SCHEDULE_HORIZON_SECONDS", "3600"),
            ("SPIN_VARIABLE_JOBS_LIST_TASKS", "true"),
        ],
    );
    let (ct, one) = multipart_body("upload_file", "test_image_0.npz", NPZ, &fixture("k49/test_image_0.npz"));
    let soon = query_time(Utc::now() + chrono::Duration::seconds(30));
    let cases: Vec<(String, String, Vec<u8>, u16)> = vec![
        ("/schedule/cnn".into(), ct.clone(), one.clone(), 400),
        ("/schedule/cnn?execute_at=".into(), ct.clone(), one.clone(), 400),
        ("/schedule/cnn?execute_at=tomorrow".into(), ct.clone(), one.clone(), 400),
        ("/schedule/cnn?execute_at=2024-03-22T15%3A51%3A00".into(), ct.clone(), one.clone(), 400),
        ("/schedule/cnn?execute_at=2024-13-40T00%3A00%3A00Z".into(), ct.clone(), one.clone(), 400),
        (format!("/schedule/cnn?execute_at={}", query_time(Utc::now() - chrono::Duration::minutes(5))), ct.clone(), one.clone(), 422),
        (format!("/schedule/cnn?execute_at={}", query_time(Utc::now() + chrono::Duration::hours(2))), ct.clone(), one.clone(), 422),
        ("/async_predict/nope".into(), ct.clone(), one.clone(), 404),
        (format!("/schedule/nope?execute_at={soon}"), ct.clone(), one.clone(), 404),
        ("/async_predict/cnn".into(), NPZ.into(), b"this is not an npz file".to_vec(), 422),
        (format!("/schedule/cnn?execute_at={soon}"), NPZ.into(), b"PK\x03\x04 truncated".to_vec(), 422),
        ("/async_predict/cnn".into(), "text/plain".into(), b"hello".to_vec(), 415),
        ("/async_predict/cnn".into(), NPZ.into(), Vec::new(), 422),
        ("/async_predict/cnn".into(), "application/json".into(), b"[[1,2],[3]]".to_vec(), 422),
        // 29,642 bytes against a limit of 20,000.
        ("/async_predict/cnn".into(), NPZ.into(), fixture("k49/test_images_100.npz"), 413),
    ];
    for (path, content_type, body, status) in cases {
        let reply = h.post(&path, &content_type, &body);
        assert_eq!(reply.status, status, "{path} {content_type}: {}", reply.body);
        assert!(reply.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", reply.body);
    }
    assert_eq!(h.host.get("/tasks").json()["tasks"], Value::Array(vec![]), "nothing was stored");

    for path in ["/tasks/20240322_155100_abcdefgh", "/tasks/20240322_155100_abcdefgh/results", "/tasks/..%2F..%2Fetc", "/tasks/nonsense"] {
        let reply = h.host.get(path);
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
        assert!(reply.json()["error"].as_str().is_some(), "{path}");
    }
    for path in ["/tasks?status=finished", "/tasks?limit=0", "/tasks?limit=many"] {
        let reply = h.host.get(path);
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert!(reply.json()["error"].as_str().is_some(), "{path}");
    }
    assert_eq!(h.host.get("/async_predict/cnn").status, 405);

    // Accepted jobs are listed in pages; results of a job not yet run are a 409.
    let far = query_time(Utc::now() + chrono::Duration::minutes(30));
    let ids: Vec<String> = (0..3).map(|_| h.submit(&format!("/schedule/cnn?execute_at={far}"), &ct, &one)).collect();
    let reply = h.host.get(&format!("/tasks/{}/results", ids[0]));
    assert_eq!((reply.status, reply.json()["status"].as_str()), (409, Some("pending")), "{}", reply.body);
    let mut listed = Vec::new();
    let mut next = Some("/tasks?status=pending&limit=2".to_owned());
    while let Some(url) = next {
        let page = h.host.get(&url).json();
        listed.extend(page["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap().to_owned()));
        next = page["next_url"].as_str().map(str::to_owned);
    }
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want);
}

#[test]
fn a_locked_store_is_503_and_a_full_queue_429_both_json_with_retry_after_and_nothing_stored() {
    let h = JobsHost::start_configured("backpressure", 1, &[], &[("max_queued_jobs", "2")]);
    let far = query_time(Utc::now() + chrono::Duration::minutes(30));
    let path = format!("/schedule/cnn?execute_at={far}");
    let (ct, one) = multipart_body("upload_file", "test_image_0.npz", NPZ, &fixture("k49/test_image_0.npz"));
    let records = || -> i64 {
        h.db()
            .query_row(
                "SELECT count(*) FROM spin_key_value WHERE store = 'default' AND key LIKE 'jobs/job/%' AND key NOT LIKE 'jobs/job/%/%'",
                [],
                |row| row.get(0),
            )
            .unwrap()
    };

    // Another writer holds the store's write lock for longer than the host waits for it.
    let db = h.db();
    db.execute_batch("BEGIN IMMEDIATE; INSERT OR REPLACE INTO spin_key_value (store, key, value) VALUES ('elsewhere', 'lock', x'00');").unwrap();
    let reply = h.post(&path, &ct, &one);
    db.execute_batch("ROLLBACK").unwrap();
    assert_eq!((reply.status, reply.json()["kind"].as_str()), (503, Some("store_unavailable")), "{}", reply.body);
    assert!(reply.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "{:?}", reply.headers);
    assert_eq!(records(), 0);

    for _ in 0..2 {
        h.submit(&path, &ct, &one);
    }
    let reply = h.post(&path, &ct, &one);
    assert_eq!((reply.status, reply.json()["kind"].as_str()), (429, Some("queue_full")), "{}", reply.body);
    assert_eq!(reply.json()["queued_jobs"], 2);
    assert!(reply.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "{:?}", reply.headers);
    let reply = h.post("/async_predict/cnn", &ct, &one);
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(records(), 2, "the refused submissions stored nothing");
}

#[test]
fn a_big_async_job_runs_in_turns_once_while_other_due_jobs_get_theirs() {
    // Turns of one second, renewing and saving every 100 images.
    let h = JobsHost::start_configured("turns", 1, &[], &[("run_budget_seconds", "1"), ("slice_images", "100")]);
    let big = h.submit("/async_predict/cnn", "application/json", &json_images(2000, 5));
    let small = h.schedule(whole_second_ahead(Duration::from_secs(1)), "test_images_10.npz");
    let small = h.wait_finished(&small, Duration::from_secs(30));
    assert_eq!(small["status"], "done", "{small}");
    let task = h.wait_finished(&big, Duration::from_secs(120));
    assert_eq!((task["status"].as_str(), task["runs"].as_u64()), (Some("done"), Some(1)), "{}", task["error"]);
    assert!(task["turns"].as_u64().is_some_and(|t| t > 1), "one turn could not do it all: {}", task["turns"]);
    assert!(time(&small["finished_at"]) < time(&task["finished_at"]), "the small job did not wait for the big one");
    let indexes: Vec<u64> = task["results"].as_array().unwrap().iter().map(|r| r["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..2000).collect::<Vec<u64>>(), "every image once, in order");
    assert_eq!(h.runs(&big).len(), 1);
}

#[test]
fn an_http_tick_runs_due_jobs_where_no_cron_trigger_does() {
    // As on SpinKube: batch-cron's trigger never fires during the test; POST /jobs/tick does.
    let never = |text: String| {
        let trigger = "component = \"batch-cron\"\ncron_expression = \"*/10 * * * * *\"";
        assert!(text.contains(trigger), "spin.toml's batch-cron trigger changed; update this test");
        text.replace(trigger, "component = \"batch-cron\"\ncron_expression = \"0 0 0 1 1 *\"")
    };
    let h = ModelHost::start("jobs-http-tick", never, &[("SPIN_VARIABLE_JOBS_TICK_TOKEN", "s3cret")]);
    let at = whole_second_ahead(Duration::from_secs(1));
    let reply = h.post_fixture(&format!("/schedule/cnn?execute_at={}", query_time(at)), "test_images_10.npz");
    assert_eq!(reply.status, 202, "{}", reply.body);
    let id = reply.json()["task_id"].as_str().unwrap().to_owned();

    assert_eq!(h.host.post_with("/jobs/tick", &[], b"").status, 401);
    assert_eq!(h.host.post_with("/jobs/tick", &[("authorization", "Bearer wrong")], b"").status, 401);
    let due_in = (at - Utc::now()).to_std().unwrap_or_default();
    std::thread::sleep(due_in + Duration::from_millis(1200));
    assert_eq!(h.host.get(&format!("/tasks/{id}")).json()["status"], "pending", "no cron ran it");
    let tick = h.host.post_with("/jobs/tick", &[("authorization", "Bearer s3cret")], b"");
    assert_eq!(tick.status, 200, "{}", tick.body);
    assert_eq!(tick.json()["ran"], 1, "{}", tick.body);
    let task = h.host.get(&format!("/tasks/{id}")).json();
    assert_eq!((task["status"].as_str(), task["results"].as_array().map(Vec::len)), (Some("done"), Some(10)), "{task}");
}
