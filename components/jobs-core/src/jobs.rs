//! The job service the components call: submit, read, list, run one job under a claim, and the
//! cron tick (due jobs, stale async jobs, interrupted runs, retention).

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::job::{self, Job, Kind, Lease, Status, keys};
use crate::kv::{Clock, KeyValue};
use crate::{chunks, claim, index};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("upload is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

pub struct NewJob<'b> {
    pub model: &'b str,
    pub content_type: &'b str,
    pub body: &'b [u8],
    pub kind: Kind,
    /// For scheduled jobs; async jobs run now.
    pub execute_at: Option<DateTime<Utc>>,
}

/// Why `run` was called: right after an async submission, or by a cron tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Submitted,
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// This call ran the job to this terminal status.
    Finished(Status),
    /// Not due, already finished, or running under someone else's live lease.
    NotDue,
    /// Another runner holds the claim, or took the job between our first read and our claim.
    Claimed,
    Missing,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub ran: usize,
    /// Jobs this tick wanted to run but another runner had claimed (overlapping ticks or hosts).
    pub lost_claims: usize,
    pub expired: usize,
    pub swept: bool,
    /// Keys of jobs without a record, deleted by the sweep.
    pub orphans: usize,
}

pub struct Page {
    pub jobs: Vec<Job>,
    /// Pass as `after` for the next page; None on the last page.
    pub next: Option<String>,
}

/// What turns a stored upload into the `/predict` results array. Errors are stored on the job.
#[allow(async_fn_in_trait)]
pub trait Predictor {
    async fn predict(&self, job: &Job, input: Vec<u8>) -> Result<serde_json::Value, String>;
}

pub struct Jobs<'a, K, C> {
    pub kv: &'a K,
    pub clock: &'a C,
    pub config: &'a Config,
}

impl<K: KeyValue, C: Clock> Jobs<'_, K, C> {
    pub fn check_size(&self, size: usize) -> Result<(), SubmitError> {
        let limit = self.config.max_input_bytes;
        if size > limit { Err(SubmitError::TooLarge { size, limit }) } else { Ok(()) }
    }

    /// Stores the input, then the job record, then indexes it. Async jobs are indexed one lease
    /// ahead: if the run started after the response never finishes, cron picks them up then.
    pub async fn submit(&self, new: NewJob<'_>) -> Result<Job, SubmitError> {
        self.check_size(new.body.len())?;
        let now = self.clock.now();
        let task_id = job::new_task_id(now);
        let input_chunks = chunks::put(self.kv, &keys::input(&task_id), new.body, self.config.chunk_bytes).await?;
        let job = Job {
            task_id,
            model: new.model.to_owned(),
            kind: new.kind,
            status: Status::Pending,
            created_at: now,
            execute_at: new.execute_at.unwrap_or(now),
            started_at: None,
            finished_at: None,
            content_type: new.content_type.to_owned(),
            input_bytes: new.body.len(),
            input_chunks,
            result_chunks: 0,
            error: None,
            runs: 0,
            run_owners: Vec::new(),
            lease: None,
        };
        self.put(&job).await?;
        index::DUE.add(self.kv, &job.task_id, job.due_at(self.config.lease), now).await?;
        Ok(job)
    }

    pub async fn get(&self, id: &str) -> anyhow::Result<Option<Job>> {
        if !job::is_valid_task_id(id) {
            return Ok(None);
        }
        self.kv.get(&keys::meta(id)).await?.map(|v| serde_json::from_slice(&v)).transpose().map_err(Into::into)
    }

    async fn put(&self, job: &Job) -> anyhow::Result<()> {
        self.kv.set(&keys::meta(&job.task_id), &serde_json::to_vec(job)?).await
    }

    /// The stored results array of a `done` job.
    pub async fn results(&self, job: &Job) -> anyhow::Result<Option<serde_json::Value>> {
        if job.status != Status::Done {
            return Ok(None);
        }
        let bytes = chunks::get(self.kv, &keys::result(&job.task_id), job.result_chunks).await?;
        Ok(Some(serde_json::from_slice(&bytes)?))
    }

    /// Jobs in creation order after the id `after`, optionally of one status. Lists all keys (Spin
    /// has no prefix scan) but reads only the records it needs for the page.
    pub async fn list(&self, status: Option<Status>, after: Option<&str>, limit: usize) -> anyhow::Result<Page> {
        let mut ids: Vec<String> = self
            .kv
            .get_keys()
            .await?
            .iter()
            .filter_map(|k| keys::meta_key_id(k))
            .filter(|id| after.is_none_or(|a| *id > a))
            .map(str::to_owned)
            .collect();
        ids.sort();
        let mut jobs = Vec::new();
        let mut ids = ids.into_iter();
        for id in ids.by_ref() {
            if let Some(job) = self.get(&id).await?
                && status.is_none_or(|s| job.status == s)
            {
                jobs.push(job);
                if jobs.len() == limit {
                    break;
                }
            }
        }
        let more = ids.next().is_some();
        let next = if more { jobs.last().map(|j| j.task_id.clone()) } else { None };
        Ok(Page { jobs, next })
    }

    fn wants_run(&self, job: &Job, trigger: Trigger, now: DateTime<Utc>) -> bool {
        match job.status {
            Status::Pending => trigger == Trigger::Submitted || job.due_at(self.config.lease) <= now,
            Status::Running => job.lease.as_ref().is_none_or(|l| l.expires_at <= now),
            Status::Done | Status::Failed => false,
        }
    }

    /// Runs job `id` if it wants running and `owner` wins its claim.
    pub async fn run(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor) -> anyhow::Result<RunOutcome> {
        let Some(job) = self.get(id).await? else { return Ok(RunOutcome::Missing) };
        if !self.wants_run(&job, trigger, self.clock.now()) {
            return Ok(RunOutcome::NotDue);
        }
        let (lease, settle) = (self.config.lease, self.config.settle);
        if !claim::acquire(self.kv, self.clock, id, owner, lease, settle).await? {
            return Ok(RunOutcome::Claimed);
        }
        let outcome = self.run_claimed(id, owner, trigger, predictor).await;
        claim::release(self.kv, id, owner).await?;
        outcome
    }

    async fn run_claimed(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor) -> anyhow::Result<RunOutcome> {
        // Re-read under the claim: another runner may have finished it, or still be running it.
        let Some(mut job) = self.get(id).await? else { return Ok(RunOutcome::Missing) };
        let now = self.clock.now();
        if !self.wants_run(&job, trigger, now) {
            return Ok(RunOutcome::Claimed);
        }
        if job.status == Status::Running && job.runs >= self.config.max_attempts {
            job.error = Some(format!("gave up after {} interrupted runs", job.runs));
            return self.finish(job, None).await;
        }
        job.status = Status::Running;
        job.runs += 1;
        job.run_owners.push(owner.to_owned());
        job.started_at = Some(now);
        job.lease = Some(Lease { owner: owner.to_owned(), expires_at: now + self.config.lease });
        self.put(&job).await?;
        self.kv.set(&keys::run_marker(id, owner), job::timestamp_ms(now).as_bytes()).await?;

        let input = chunks::get(self.kv, &keys::input(id), job.input_chunks).await?;
        match predictor.predict(&job, input).await {
            Ok(results) => self.finish(job, Some(results)).await,
            Err(message) => {
                job.error = Some(message);
                self.finish(job, None).await
            }
        }
    }

    /// Stores results (if any), marks the job done or failed and indexes its expiry.
    async fn finish(&self, mut job: Job, results: Option<serde_json::Value>) -> anyhow::Result<RunOutcome> {
        let now = self.clock.now();
        job.status = match results {
            Some(results) => {
                let bytes = serde_json::to_vec(&results)?;
                job.result_chunks = chunks::put(self.kv, &keys::result(&job.task_id), &bytes, self.config.chunk_bytes).await?;
                Status::Done
            }
            None => Status::Failed,
        };
        job.finished_at = Some(now);
        job.lease = None;
        self.put(&job).await?;
        index::EXPIRE.add(self.kv, &job.task_id, now + self.config.retention, now).await?;
        Ok(RunOutcome::Finished(job.status))
    }

    fn expired(&self, job: &Job, now: DateTime<Utc>) -> bool {
        job.status.is_terminal() && job.finished_at.is_some_and(|f| f + self.config.retention <= now)
    }

    /// Deletes everything of a job, its record last so an interrupted delete is found again.
    async fn delete(&self, job: &Job) -> anyhow::Result<()> {
        let id = &job.task_id;
        chunks::delete(self.kv, &keys::input(id), job.input_chunks).await?;
        chunks::delete(self.kv, &keys::result(id), job.result_chunks).await?;
        for owner in &job.run_owners {
            self.kv.delete(&keys::run_marker(id, owner)).await?;
        }
        self.kv.delete(&keys::claim(id)).await?;
        self.kv.delete(&keys::meta(id)).await
    }

    /// One cron tick: run due and stale jobs from the recent index buckets, delete expired ones,
    /// and every `sweep_interval` sweep all jobs (catches index misses and long downtimes).
    pub async fn tick(&self, owner: &str, predictor: &impl Predictor) -> anyhow::Result<TickReport> {
        let now = self.clock.now();
        let mut report = TickReport::default();
        // Buckets older than the sweep interval are covered by the sweep.
        let window = self.config.sweep_interval.num_minutes() + 2;

        let last_sweep = self.kv.get(keys::LAST_SWEEP).await?.and_then(|v| {
            DateTime::parse_from_rfc3339(std::str::from_utf8(&v).ok()?).ok().map(|t| t.to_utc())
        });
        if last_sweep.is_none_or(|t| now - t >= self.config.sweep_interval) {
            // Written first so overlapping ticks rarely sweep twice (harmless if they do).
            self.kv.set(keys::LAST_SWEEP, job::timestamp(now).as_bytes()).await?;
            report.swept = true;
            let all = self.kv.get_keys().await?;
            let ids: std::collections::BTreeSet<&str> = all.iter().filter_map(|k| keys::meta_key_id(k)).collect();
            for id in &ids {
                self.settle_job(id, owner, predictor, now, &mut report).await?;
            }
            report.orphans = self.delete_orphans(&all, &ids, now).await?;
        }

        for (bucket, ids) in index::DUE.recent(self.kv, now, window).await? {
            let mut open = false;
            for id in &ids {
                open |= self.settle_job(id, owner, predictor, now, &mut report).await? == JobState::Open;
            }
            if !open {
                index::DUE.retire(self.kv, bucket, now).await?;
            }
        }
        for (bucket, ids) in index::EXPIRE.recent(self.kv, now, window).await? {
            let mut kept = false;
            for id in &ids {
                kept |= self.settle_job(id, owner, predictor, now, &mut report).await? != JobState::Gone;
            }
            if !kept {
                index::EXPIRE.retire(self.kv, bucket, now).await?;
            }
        }
        Ok(report)
    }

    /// Deletes sub-keys (input chunks, run markers, claims) of jobs that have no record and were
    /// created over an hour ago: left by a crash between storing an input and its record, or by a
    /// double run's marker. The hour keeps a submission in progress safe (its record comes last).
    async fn delete_orphans(&self, all: &[String], ids: &std::collections::BTreeSet<&str>, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let mut deleted = 0;
        for key in all {
            let Some(id) = key.strip_prefix(keys::JOB_PREFIX).and_then(|rest| rest.split_once('/')).map(|(id, _)| id) else { continue };
            let old = job::created_at_of(id).is_some_and(|created| now - created > chrono::Duration::hours(1));
            if old && !ids.contains(id) {
                self.kv.delete(key).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Runs or deletes one job as needed and says what is left of it.
    async fn settle_job(&self, id: &str, owner: &str, predictor: &impl Predictor, now: DateTime<Utc>, report: &mut TickReport) -> anyhow::Result<JobState> {
        let Some(job) = self.get(id).await? else { return Ok(JobState::Gone) };
        if self.expired(&job, now) {
            self.delete(&job).await?;
            report.expired += 1;
            return Ok(JobState::Gone);
        }
        if job.status.is_terminal() {
            return Ok(JobState::Finished);
        }
        Ok(match self.run(id, owner, Trigger::Tick, predictor).await? {
            RunOutcome::Finished(_) => {
                report.ran += 1;
                JobState::Finished
            }
            RunOutcome::Missing => JobState::Gone,
            RunOutcome::Claimed => {
                report.lost_claims += 1;
                JobState::Open
            }
            RunOutcome::NotDue => JobState::Open,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    Open,
    Finished,
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{ManualClock, MemoryKv};
    use chrono::Duration;
    use futures::executor::block_on;
    use std::cell::Cell;

    /// Echoes the input length; fails on inputs starting with "bad".
    #[derive(Default)]
    struct Echo {
        calls: Cell<usize>,
    }

    impl Predictor for Echo {
        async fn predict(&self, job: &Job, input: Vec<u8>) -> Result<serde_json::Value, String> {
            self.calls.set(self.calls.get() + 1);
            if input.starts_with(b"bad") {
                return Err("cannot decode upload".into());
            }
            Ok(serde_json::json!([{ "model": job.model, "bytes": input.len() }]))
        }
    }

    fn clock() -> ManualClock {
        ManualClock::new(DateTime::parse_from_rfc3339("2024-03-22T15:00:00Z").unwrap().to_utc())
    }

    fn config() -> Config {
        Config { chunk_bytes: 4, ..Config::default() }
    }

    fn scheduled(at: DateTime<Utc>) -> NewJob<'static> {
        NewJob { model: "cnn", content_type: "application/x-npz", body: b"0123456789", kind: Kind::Scheduled, execute_at: Some(at) }
    }

    fn runs(kv: &MemoryKv, id: &str) -> usize {
        kv.keys_with_prefix(&format!("{}/run/", keys::meta(id))).len()
    }

    #[test]
    fn a_scheduled_job_runs_once_after_its_time() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let job = jobs.submit(scheduled(clock.now() + Duration::seconds(2))).await.unwrap();
            assert_eq!(job.input_chunks, 3, "10 bytes in 4-byte chunks");
            assert_eq!(jobs.tick("t1", &echo).await.unwrap().ran, 0, "not before execute_at");
            clock.advance(Duration::seconds(2));
            assert_eq!(jobs.tick("t1", &echo).await.unwrap().ran, 1);
            assert_eq!(jobs.tick("t2", &echo).await.unwrap().ran, 0);
            let done = jobs.get(&job.task_id).await.unwrap().unwrap();
            assert_eq!((done.status, done.runs, runs(&kv, &job.task_id)), (Status::Done, 1, 1));
            assert_eq!(jobs.results(&done).await.unwrap().unwrap(), serde_json::json!([{ "model": "cnn", "bytes": 10 }]));
            assert_eq!(echo.calls.get(), 1);
        });
    }

    #[test]
    fn an_async_job_runs_on_submit_and_cron_finishes_it_only_when_stale() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let new = || NewJob { kind: Kind::Async, execute_at: None, ..scheduled(clock.now()) };
            let run_now = jobs.submit(new()).await.unwrap();
            assert_eq!(jobs.run(&run_now.task_id, "spawned", Trigger::Submitted, &echo).await.unwrap(), RunOutcome::Finished(Status::Done));
            // A second async job whose run after the response was lost (host crashed).
            let lost = jobs.submit(new()).await.unwrap();
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 0, "still fresh: its own run may be going");
            clock.advance(config.lease);
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 1);
            for id in [&run_now.task_id, &lost.task_id] {
                let job = jobs.get(id).await.unwrap().unwrap();
                assert_eq!((job.status, runs(&kv, id)), (Status::Done, 1));
            }
        });
    }

    #[test]
    fn an_interrupted_run_is_retried_after_its_lease_and_given_up_eventually() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let job = jobs.submit(scheduled(clock.now())).await.unwrap();
            // A runner that crashed mid-run: record says running, lease still live.
            let mut crashed = job.clone();
            crashed.status = Status::Running;
            crashed.runs = 1;
            crashed.lease = Some(Lease { owner: "dead".into(), expires_at: clock.now() + config.lease });
            jobs.put(&crashed).await.unwrap();
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 0, "live lease is respected");
            clock.advance(config.lease);
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 1);
            let done = jobs.get(&job.task_id).await.unwrap().unwrap();
            assert_eq!((done.status, done.runs), (Status::Done, 2));

            let poison = jobs.submit(scheduled(clock.now())).await.unwrap();
            let mut crashed = poison.clone();
            crashed.status = Status::Running;
            crashed.runs = config.max_attempts;
            jobs.put(&crashed).await.unwrap();
            jobs.tick("cron", &echo).await.unwrap();
            let failed = jobs.get(&poison.task_id).await.unwrap().unwrap();
            assert_eq!(failed.status, Status::Failed);
            assert!(failed.error.unwrap().contains("interrupted"));
            assert_eq!(echo.calls.get(), 1, "the poison job was not run again");
        });
    }

    #[test]
    fn racing_ticks_run_each_job_once() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let mut ids = Vec::new();
            for _ in 0..8 {
                ids.push(jobs.submit(scheduled(clock.now())).await.unwrap().task_id);
            }
            let owners = ["a", "b", "c", "d"];
            let reports: Vec<TickReport> =
                futures::future::join_all(owners.iter().map(|o| jobs.tick(o, &echo))).await.into_iter().map(Result::unwrap).collect();
            assert_eq!(reports.iter().map(|r| r.ran).sum::<usize>(), 8);
            assert!(reports.iter().map(|r| r.lost_claims).sum::<usize>() > 0, "the ticks did race");
            assert_eq!(echo.calls.get(), 8);
            for id in &ids {
                assert_eq!(runs(&kv, id), 1, "{id}");
            }
        });
    }

    #[test]
    fn a_failing_prediction_marks_the_job_failed_without_retry() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let job = jobs.submit(NewJob { body: b"bad bytes", ..scheduled(clock.now()) }).await.unwrap();
            jobs.tick("cron", &echo).await.unwrap();
            clock.advance(Duration::minutes(5));
            jobs.tick("cron", &echo).await.unwrap();
            let failed = jobs.get(&job.task_id).await.unwrap().unwrap();
            assert_eq!((failed.status, failed.error.as_deref()), (Status::Failed, Some("cannot decode upload")));
            assert_eq!(echo.calls.get(), 1);
            assert!(jobs.results(&failed).await.unwrap().is_none());
        });
    }

    #[test]
    fn finished_jobs_are_deleted_after_retention() {
        let (kv, clock, echo) = (MemoryKv::new(), clock(), Echo::default());
        let config = Config { retention: Duration::minutes(3), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let job = jobs.submit(scheduled(clock.now())).await.unwrap();
            jobs.tick("cron", &echo).await.unwrap();
            clock.advance(Duration::minutes(2));
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().expired, 0);
            assert!(jobs.get(&job.task_id).await.unwrap().is_some());
            clock.advance(Duration::minutes(2));
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().expired, 1);
            assert!(jobs.get(&job.task_id).await.unwrap().is_none());
            clock.advance(Duration::minutes(2));
            jobs.tick("cron", &echo).await.unwrap();
            assert_eq!(kv.keys_with_prefix("jobs/job/"), Vec::<String>::new());
            assert_eq!(kv.keys_with_prefix("jobs/index/"), vec![keys::LAST_SWEEP.to_string()], "buckets retired");
        });
    }

    #[test]
    fn a_tick_reads_buckets_not_every_job() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            for _ in 0..200 {
                jobs.submit(scheduled(clock.now() + Duration::days(1))).await.unwrap();
            }
            assert!(jobs.tick("cron", &echo).await.unwrap().swept, "first tick sweeps");
            clock.advance(Duration::seconds(10));
            let before = kv.gets();
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert!(!report.swept);
            let window = config.sweep_interval.num_minutes() as usize + 3;
            assert!(kv.gets() - before <= 1 + 2 * window, "{} reads", kv.gets() - before);
        });
    }

    #[test]
    fn the_sweep_finds_a_job_the_index_lost() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            jobs.tick("cron", &echo).await.unwrap();
            let job = jobs.submit(scheduled(clock.now() + Duration::seconds(5))).await.unwrap();
            for key in kv.keys_with_prefix("jobs/index/due/") {
                kv.delete(&key).await.unwrap();
            }
            clock.advance(Duration::seconds(10));
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 0, "lost from the index");
            clock.advance(config.sweep_interval);
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert!(report.swept);
            assert_eq!(report.ran, 1);
            assert_eq!(jobs.get(&job.task_id).await.unwrap().unwrap().status, Status::Done);
        });
    }

    #[test]
    fn the_sweep_deletes_keys_of_jobs_without_a_record_once_they_are_old() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let kept = jobs.submit(scheduled(clock.now() + Duration::days(1))).await.unwrap();
            // A submission that crashed after its input chunks, and one still being written.
            let crashed = job::new_task_id(clock.now() - Duration::hours(2));
            let in_progress = job::new_task_id(clock.now());
            for id in [&crashed, &in_progress] {
                chunks::put(&kv, &keys::input(id), b"0123456789", 4).await.unwrap();
            }
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!((report.swept, report.orphans), (true, 3));
            assert!(kv.keys_with_prefix(&keys::meta(&crashed)).is_empty());
            assert_eq!(kv.keys_with_prefix(&keys::meta(&in_progress)).len(), 3);
            assert_eq!(kv.keys_with_prefix(&keys::meta(&kept.task_id)).len(), 4, "record + 3 chunks");
        });
    }

    #[test]
    fn listing_pages_and_filters_by_status() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let mut ids = Vec::new();
            for i in 0..5 {
                let at = clock.now() + Duration::seconds(if i % 2 == 0 { 0 } else { 3600 });
                ids.push(jobs.submit(scheduled(at)).await.unwrap().task_id);
                clock.advance(Duration::seconds(1));
            }
            jobs.tick("cron", &echo).await.unwrap();
            let first = jobs.list(None, None, 2).await.unwrap();
            assert_eq!(first.jobs.iter().map(|j| &j.task_id).collect::<Vec<_>>(), vec![&ids[0], &ids[1]]);
            let second = jobs.list(None, first.next.as_deref(), 2).await.unwrap();
            assert_eq!(second.jobs[0].task_id, ids[2]);
            let last = jobs.list(None, second.next.as_deref(), 2).await.unwrap();
            assert_eq!((last.jobs.len(), last.next), (1, None));
            let done = jobs.list(Some(Status::Done), None, 10).await.unwrap();
            assert_eq!(done.jobs.iter().map(|j| &j.task_id).collect::<Vec<_>>(), vec![&ids[0], &ids[2], &ids[4]]);
        });
    }

    #[test]
    fn oversized_inputs_are_refused_before_anything_is_stored() {
        let (kv, clock) = (MemoryKv::new(), clock());
        let config = Config { max_input_bytes: 9, ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let err = block_on(jobs.submit(scheduled(clock.now()))).unwrap_err();
        assert!(matches!(err, SubmitError::TooLarge { size: 10, limit: 9 }));
        assert!(kv.is_empty());
        assert!(block_on(jobs.get("../../x")).unwrap().is_none());
    }
}
