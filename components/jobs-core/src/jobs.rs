//! The job service the components call: submit, read, list, run one job under a claim, and the
//! cron tick (due jobs, stale async jobs, interrupted runs, retention).
//!
//! A run works in slices of `slice_images`: after each it renews its claim, appends the slice's
//! results and saves its progress, so a crash loses at most one slice and a run that lost its
//! claim stops without writing. A turn ends after `run_budget` (the rest is continued by the next
//! tick), and a tick starts no run after `tick_budget`, so one big job cannot hold the others back.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::job::{self, Job, Kind, Lease, Status, keys};
use crate::kv::{Clock, KeyValue};
use crate::{chunks, claim, index};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("upload is {size} bytes, larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("too much queued work: {} unfinished jobs with {} bytes of uploads", .0.jobs, .0.bytes)]
    QueueFull(Queued),
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

/// Unfinished jobs in the store and the bytes of their uploads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    pub jobs: usize,
    pub bytes: usize,
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
    /// This turn used its budget; progress is saved and the next tick continues.
    Paused,
    /// Not due, already finished, or running under someone else's live lease.
    NotDue,
    /// Another runner holds the claim, or took the job between our first read and our claim.
    Claimed,
    /// Our claim expired or changed hands mid-run: we stopped and wrote nothing more.
    LeaseLost,
    Missing,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub ran: usize,
    /// Jobs this tick worked on for a turn and left for the next one (too big for one turn).
    pub paused: usize,
    /// Due jobs this tick did not start because its `tick_budget` was spent.
    pub deferred: usize,
    /// Jobs this tick wanted to run but another runner had claimed (overlapping ticks or hosts),
    /// or took from it mid-run.
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

/// What turns a stored upload into `/predict` result objects, a slice of images at a time.
/// Errors are stored on the job (it fails; bad input does not get better on retry).
#[allow(async_fn_in_trait)]
pub trait Predictor {
    /// A decoded upload; decoded once per turn.
    type Images;
    async fn decode(&self, job: &Job, input: Vec<u8>) -> Result<Self::Images, String>;
    fn count(&self, images: &Self::Images) -> usize;
    /// One result object per image of `range`, its `index` counted in the whole upload.
    async fn predict(&self, job: &Job, images: &Self::Images, range: Range<usize>) -> Result<Vec<serde_json::Value>, String>;
}

/// A job key without a record younger than this may belong to a submission still being written
/// (its record comes last), so it is neither deleted nor given up on.
const IN_SUBMISSION: chrono::Duration = chrono::Duration::hours(1);

fn maybe_in_submission(id: &str, now: DateTime<Utc>) -> bool {
    job::created_at_of(id).is_some_and(|created| now - created < IN_SUBMISSION)
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

    /// Unfinished jobs and their upload bytes, from one key listing: the `queued` markers of jobs
    /// whose record exists (a crashed submission's marker does not count).
    pub async fn queued(&self) -> anyhow::Result<Queued> {
        let all = self.kv.get_keys().await?;
        let records: BTreeSet<&str> = all.iter().filter_map(|k| keys::meta_key_id(k)).collect();
        let mut queued = Queued::default();
        for (_, bytes) in all.iter().filter_map(|k| keys::queued_key(k)).filter(|(id, _)| records.contains(id)) {
            queued.jobs += 1;
            queued.bytes += bytes;
        }
        Ok(queued)
    }

    /// Refuses the submission if the store already holds `max_queued_jobs` unfinished jobs or
    /// `max_queued_bytes` of their uploads. Racing submissions can each pass: a soft cap.
    async fn check_queue(&self, size: usize) -> Result<(), SubmitError> {
        let queued = self.queued().await?;
        if queued.jobs + 1 > self.config.max_queued_jobs || queued.bytes + size > self.config.max_queued_bytes {
            return Err(SubmitError::QueueFull(queued));
        }
        Ok(())
    }

    /// Stores the input, a `queued` marker, the due-index entry and last the job record, so a
    /// record always has its index entry and a crash in between leaves only keys the sweep
    /// deletes (an index entry without a record is kept while it may be a submission in progress).
    /// Async jobs are indexed one lease ahead: if the run started after the response never
    /// finishes, cron picks them up then.
    pub async fn submit(&self, new: NewJob<'_>) -> Result<Job, SubmitError> {
        self.check_size(new.body.len())?;
        self.check_queue(new.body.len()).await?;
        let now = self.clock.now();
        let task_id = job::new_task_id(now);
        let input_chunks = chunks::put(self.kv, &keys::input(&task_id), new.body, self.config.chunk_bytes).await?;
        self.kv.set(&keys::queued(&task_id, new.body.len()), b"").await?;
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
            result_bytes: None,
            images: 0,
            images_done: 0,
            error: None,
            runs: 0,
            turns: 0,
            run_owners: Vec::new(),
            lease: None,
        };
        index::DUE.add(self.kv, &job.task_id, job.due_at(self.config.lease), now).await?;
        self.put(&job).await?;
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
        let mut bytes = chunks::get(self.kv, &keys::result(&job.task_id), job.result_chunks).await?;
        if let Some(len) = job.result_bytes {
            bytes.truncate(len);
        }
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

    /// Runs job `id` for one turn (at most `run_budget`) if it wants running and `owner` wins its claim.
    pub async fn run(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor) -> anyhow::Result<RunOutcome> {
        self.run_until(id, owner, trigger, predictor, None).await
    }

    /// As [`Jobs::run`], ending the turn at `until` too (a tick's budget).
    async fn run_until(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor, until: Option<DateTime<Utc>>) -> anyhow::Result<RunOutcome> {
        let Some(job) = self.get(id).await? else { return Ok(RunOutcome::Missing) };
        if !self.wants_run(&job, trigger, self.clock.now()) {
            return Ok(RunOutcome::NotDue);
        }
        let (lease, settle) = (self.config.lease, self.config.settle);
        if !claim::acquire(self.kv, self.clock, id, owner, lease, settle).await? {
            return Ok(RunOutcome::Claimed);
        }
        let outcome = self.run_claimed(id, owner, trigger, predictor, until).await;
        claim::release(self.kv, id, owner).await?;
        outcome
    }

    async fn run_claimed(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor, until: Option<DateTime<Utc>>) -> anyhow::Result<RunOutcome> {
        // Re-read under the claim: another runner may have finished it, or still be running it.
        let Some(mut job) = self.get(id).await? else { return Ok(RunOutcome::Missing) };
        let now = self.clock.now();
        if !self.wants_run(&job, trigger, now) {
            return Ok(RunOutcome::Claimed);
        }
        let deadline = until.map_or(now + self.config.run_budget, |u| u.min(now + self.config.run_budget));
        // Running with a lease: its runner died (the lease expired). Without: a paused turn.
        let interrupted = job.status == Status::Running && job.lease.is_some();
        let give_up = interrupted && job.runs >= self.config.max_attempts;
        if job.status == Status::Pending || (interrupted && !give_up) {
            job.runs += 1;
            job.run_owners.push(owner.to_owned());
            self.kv.set(&keys::run_marker(id, owner), job::timestamp_ms(now).as_bytes()).await?;
        }
        job.status = Status::Running;
        job.turns += 1;
        job.started_at.get_or_insert(now);
        job.lease = Some(Lease { owner: owner.to_owned(), expires_at: now + self.config.lease });
        self.put(&job).await?;
        if give_up {
            job.error = Some(format!("gave up after {} interrupted runs", job.runs));
            return self.finish(job, owner).await;
        }

        let input = chunks::get(self.kv, &keys::input(id), job.input_chunks).await?;
        let images = match predictor.decode(&job, input).await {
            Ok(images) => images,
            Err(message) => return self.fail(job, owner, message).await,
        };
        job.images = predictor.count(&images);
        if job.images_done > job.images {
            return self.fail(job, owner, "the stored progress does not match the upload".into()).await;
        }
        let mut progressed = false;
        while job.images_done < job.images {
            if progressed && self.clock.now() >= deadline {
                return self.pause(job, owner).await;
            }
            let range = job.images_done..(job.images_done + self.config.slice_images.max(1)).min(job.images);
            let end = range.end;
            let results = match predictor.predict(&job, &images, range).await {
                Ok(results) => results,
                Err(message) => return self.fail(job, owner, message).await,
            };
            if !self.still_ours(id, owner).await? {
                return Ok(RunOutcome::LeaseLost);
            }
            self.append_results(&mut job, &results).await?;
            job.images_done = end;
            job.lease = Some(Lease { owner: owner.to_owned(), expires_at: self.clock.now() + self.config.lease });
            self.put(&job).await?;
            progressed = true;
        }
        self.finish(job, owner).await
    }

    /// Renews our claim and checks the record still names us as its runner. False: someone else
    /// has (or may have) taken the job, so we must not write to it again.
    async fn still_ours(&self, id: &str, owner: &str) -> anyhow::Result<bool> {
        if !claim::renew(self.kv, self.clock, id, owner, self.config.lease).await? {
            return Ok(false);
        }
        let record = self.get(id).await?;
        Ok(record.is_some_and(|j| j.status == Status::Running && j.lease.is_some_and(|l| l.owner == owner)))
    }

    /// Appends result objects to the stored JSON array, rewriting only its last chunk.
    async fn append_results(&self, job: &mut Job, results: &[serde_json::Value]) -> anyhow::Result<()> {
        let len = job.result_bytes.unwrap_or(0);
        if results.is_empty() && len > 0 {
            return Ok(());
        }
        let array = serde_json::to_vec(results)?;
        // `[a,b]` after `[x]` becomes `[x,a,b]`: overwrite the stored `]` with `,a,b]`.
        let (at, data) = if len == 0 { (0, array) } else { (len - 1, [b",", &array[1..]].concat()) };
        job.result_chunks = chunks::append(self.kv, &keys::result(&job.task_id), at, &data, self.config.chunk_bytes).await?;
        job.result_bytes = Some(at + data.len());
        Ok(())
    }

    /// Ends a turn that used its budget: the job stays `running` without a lease, and is indexed
    /// as due now so the next tick continues it even once its first bucket has left the window.
    async fn pause(&self, mut job: Job, owner: &str) -> anyhow::Result<RunOutcome> {
        if !self.still_ours(&job.task_id, owner).await? {
            return Ok(RunOutcome::LeaseLost);
        }
        let now = self.clock.now();
        index::DUE.add(self.kv, &job.task_id, now, now).await?;
        job.lease = None;
        self.put(&job).await?;
        Ok(RunOutcome::Paused)
    }

    async fn fail(&self, mut job: Job, owner: &str, message: String) -> anyhow::Result<RunOutcome> {
        job.error = Some(message);
        self.finish(job, owner).await
    }

    /// Marks the job done (failed if it has an error) and indexes its expiry, unless another
    /// runner has taken it: a record someone else finished or runs is never overwritten.
    async fn finish(&self, mut job: Job, owner: &str) -> anyhow::Result<RunOutcome> {
        if !self.still_ours(&job.task_id, owner).await? {
            return Ok(RunOutcome::LeaseLost);
        }
        let now = self.clock.now();
        job.status = if job.error.is_some() { Status::Failed } else { Status::Done };
        if job.status == Status::Done && job.result_bytes.is_none() {
            self.append_results(&mut job, &[]).await?; // an upload of no images: `[]`
        }
        job.finished_at = Some(now);
        job.lease = None;
        self.put(&job).await?;
        self.kv.delete(&keys::queued(&job.task_id, job.input_bytes)).await?;
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
        self.kv.delete(&keys::queued(id, job.input_bytes)).await?;
        self.kv.delete(&keys::claim(id)).await?;
        self.kv.delete(&keys::meta(id)).await
    }

    /// One cron tick: run due and stale jobs from the recent index buckets, delete expired ones,
    /// and every `sweep_interval` sweep all jobs (catches index misses and long downtimes).
    /// Runs start only within `tick_budget`, jobs not yet started before continuations of big
    /// ones, so a big job gets what the others leave and the rest wait at most one tick.
    pub async fn tick(&self, owner: &str, predictor: &impl Predictor) -> anyhow::Result<TickReport> {
        let now = self.clock.now();
        let deadline = now + self.config.tick_budget;
        let mut report = TickReport::default();
        // Buckets older than the sweep interval are covered by the sweep.
        let window = self.config.sweep_interval.num_minutes() + 2;

        let last_sweep = self.kv.get(keys::LAST_SWEEP).await?.and_then(|v| {
            DateTime::parse_from_rfc3339(std::str::from_utf8(&v).ok()?).ok().map(|t| t.to_utc())
        });
        let mut all = None;
        if last_sweep.is_none_or(|t| now - t >= self.config.sweep_interval) {
            // Written first so overlapping ticks rarely sweep twice (harmless if they do).
            self.kv.set(keys::LAST_SWEEP, job::timestamp(now).as_bytes()).await?;
            report.swept = true;
            all = Some(self.kv.get_keys().await?);
        }
        let due = index::DUE.recent(self.kv, now, window).await?;
        let expire = index::EXPIRE.recent(self.kv, now, window).await?;

        // Every job this tick looks at, once, oldest first (ids sort by creation time).
        let mut ids: BTreeSet<&str> = all.iter().flatten().filter_map(|k| keys::meta_key_id(k)).collect();
        ids.extend(due.iter().chain(&expire).flat_map(|(_, ids)| ids.iter().map(String::as_str)));
        let mut states: HashMap<&str, JobState> = HashMap::new();
        let (mut fresh, mut continued) = (Vec::new(), Vec::new());
        for &id in &ids {
            let state = match self.get(id).await? {
                None => JobState::Gone,
                Some(job) if self.expired(&job, now) => {
                    self.delete(&job).await?;
                    report.expired += 1;
                    JobState::Gone
                }
                Some(job) if job.status.is_terminal() => JobState::Finished,
                Some(job) => {
                    if job.status == Status::Running && job.lease.is_none() {
                        continued.push(id);
                    } else {
                        fresh.push(id);
                    }
                    JobState::Open
                }
            };
            states.insert(id, state);
        }
        for id in fresh.into_iter().chain(continued) {
            if self.clock.now() >= deadline {
                report.deferred += 1;
                // Found only by the sweep: index it, or it would wait for the next sweep.
                if !due.iter().any(|(_, ids)| ids.iter().any(|i| i == id)) {
                    index::DUE.add(self.kv, id, now, now).await?;
                }
                continue;
            }
            let state = match self.run_until(id, owner, Trigger::Tick, predictor, Some(deadline)).await? {
                RunOutcome::Finished(_) => {
                    report.ran += 1;
                    JobState::Finished
                }
                RunOutcome::Missing => JobState::Gone,
                RunOutcome::Claimed | RunOutcome::LeaseLost => {
                    report.lost_claims += 1;
                    JobState::Open
                }
                RunOutcome::Paused => {
                    report.paused += 1;
                    JobState::Open
                }
                RunOutcome::NotDue => JobState::Open,
            };
            states.insert(id, state);
        }

        if let Some(all) = &all {
            report.orphans = self.delete_leftovers(all, &states, now, window).await?;
        }
        let state = |id: &String| states.get(id.as_str()).copied().unwrap_or(JobState::Gone);
        for (bucket, ids) in &due {
            // A missing record may still be on its way (the index entry is written first).
            let open = ids.iter().any(|id| state(id) == JobState::Open || (state(id) == JobState::Gone && maybe_in_submission(id, now)));
            if !open {
                index::DUE.retire(self.kv, *bucket, now).await?;
            }
        }
        for (bucket, ids) in &expire {
            if ids.iter().all(|id| state(id) == JobState::Gone) {
                index::EXPIRE.retire(self.kv, *bucket, now).await?;
            }
        }
        Ok(report)
    }

    /// What the sweep deletes besides expired jobs: sub-keys (input chunks, run markers, claims,
    /// queued markers) of jobs without a record that are too old to be a submission in progress,
    /// queued markers of finished jobs (a crash between the record and the marker), and index
    /// buckets older than the tick window (the sweep has just visited every job in them).
    /// Returns the number of orphaned job keys deleted.
    async fn delete_leftovers(&self, all: &[String], states: &HashMap<&str, JobState>, now: DateTime<Utc>, window: i64) -> anyhow::Result<usize> {
        let records: BTreeSet<&str> = all.iter().filter_map(|k| keys::meta_key_id(k)).collect();
        let mut orphans = 0;
        for key in all {
            if let Some((_, minute)) = keys::bucket_key(key) {
                if minute < index::minute(now) - window {
                    self.kv.delete(key).await?;
                }
                continue;
            }
            let Some(id) = key.strip_prefix(keys::JOB_PREFIX).and_then(|rest| rest.split_once('/')).map(|(id, _)| id) else { continue };
            if !records.contains(id) && !maybe_in_submission(id, now) {
                self.kv.delete(key).await?;
                orphans += 1;
            } else if keys::queued_key(key).is_some() && states.get(id) == Some(&JobState::Finished) {
                self.kv.delete(key).await?;
            }
        }
        Ok(orphans)
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
    use futures::future::{FutureExt, LocalBoxFuture};
    use std::cell::{Cell, RefCell};

    type Hook<'a> = Box<dyn Fn(usize) -> LocalBoxFuture<'a, ()> + 'a>;

    /// One "image" per input byte, whose result is `{model, index, byte}`; inputs starting with
    /// "bad" do not decode. Predicting moves `clock` on by `ms_per_image` per image (work takes
    /// time), and `before_slice` runs before each slice with its first index (a stall, a rival).
    #[derive(Default)]
    struct Echo<'a> {
        clock: Option<&'a ManualClock>,
        ms_per_image: i64,
        before_slice: Option<Hook<'a>>,
        /// Uploads decoded (one per turn).
        calls: Cell<usize>,
        /// Images predicted, over all turns.
        images: Cell<usize>,
    }

    impl<'a> Echo<'a> {
        fn slow(clock: &'a ManualClock, ms_per_image: i64) -> Self {
            Echo { clock: Some(clock), ms_per_image, ..Echo::default() }
        }
    }

    impl Predictor for Echo<'_> {
        type Images = Vec<u8>;
        async fn decode(&self, _job: &Job, input: Vec<u8>) -> Result<Vec<u8>, String> {
            self.calls.set(self.calls.get() + 1);
            if input.starts_with(b"bad") {
                return Err("cannot decode upload".into());
            }
            Ok(input)
        }
        fn count(&self, images: &Vec<u8>) -> usize {
            images.len()
        }
        async fn predict(&self, job: &Job, images: &Vec<u8>, range: Range<usize>) -> Result<Vec<serde_json::Value>, String> {
            if let Some(hook) = &self.before_slice {
                hook(range.start).await;
            }
            if let Some(clock) = self.clock {
                clock.advance(Duration::milliseconds(self.ms_per_image * range.len() as i64));
            }
            self.images.set(self.images.get() + range.len());
            Ok(range.map(|i| serde_json::json!({ "model": job.model, "index": i, "byte": images[i] })).collect())
        }
    }

    /// What Echo's results for `body` are.
    fn echoed(body: &[u8]) -> serde_json::Value {
        body.iter().enumerate().map(|(i, b)| serde_json::json!({ "model": "cnn", "index": i, "byte": b })).collect()
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
            assert_eq!(jobs.results(&done).await.unwrap().unwrap(), echoed(b"0123456789"));
            assert_eq!((done.images, done.images_done, done.turns), (10, 10, 1));
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
            crashed.lease = Some(Lease { owner: "dead again".into(), expires_at: clock.now() });
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
            assert_eq!(kv.keys_with_prefix(&keys::meta(&kept.task_id)).len(), 5, "record + 3 chunks + queued marker");
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
    fn a_long_run_renews_its_lease_so_no_second_runner_takes_it() {
        let (kv, clock) = (MemoryKv::new(), clock());
        // 20 images at 3 s each: 60 s of work against a 10 s lease, renewed every 2 images (6 s).
        let config = Config { lease: Duration::seconds(10), slice_images: 2, run_budget: Duration::hours(1), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let (slow, rival, finished) = (Echo::slow(&clock, 3000), Echo::default(), Cell::new(false));
        let body = b"abcdefghijklmnopqrst";
        block_on(async {
            // Async, so rival ticks do not find it due before the runner has claimed it.
            let job = jobs.submit(NewJob { body, kind: Kind::Async, execute_at: None, ..scheduled(clock.now()) }).await.unwrap();
            let start = clock.now();
            let runner = async {
                let outcome = jobs.run(&job.task_id, "runner", Trigger::Submitted, &slow).await.unwrap();
                finished.set(true);
                outcome
            };
            let rivals = async {
                let mut ticks = 0;
                while !finished.get() {
                    let report = jobs.tick("rival", &rival).await.unwrap();
                    assert_eq!((report.ran, report.paused, report.lost_claims), (0, 0, 0), "{report:?}");
                    ticks += 1;
                }
                ticks
            };
            let (outcome, ticks) = futures::join!(runner, rivals);
            assert_eq!(outcome, RunOutcome::Finished(Status::Done));
            assert!(clock.now() - start >= config.lease * 5, "the run outlived its lease several times");
            assert!(ticks >= 10, "rivals ticked throughout the run ({ticks})");
            let done = jobs.get(&job.task_id).await.unwrap().unwrap();
            assert_eq!((done.runs, done.turns, runs(&kv, &job.task_id)), (1, 1, 1));
            assert_eq!((slow.images.get(), rival.calls.get()), (20, 0));
            assert_eq!(jobs.results(&done).await.unwrap().unwrap(), echoed(body));
        });
    }

    #[test]
    fn a_runner_that_lost_its_lease_stops_and_writes_nothing() {
        // 10 images in slices of 2 (0, 2, 4, 6, 8); the runner stalls past its lease before the
        // second slice, or before the last, and a tick takes the job over and finishes it.
        for stall_before in [2, 8] {
            let (kv, clock) = (MemoryKv::new(), clock());
            let config = Config { lease: Duration::seconds(10), slice_images: 2, ..config() };
            let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
            let (rival, rivals_record) = (Echo::default(), RefCell::new(None));
            block_on(async {
                let job = jobs.submit(scheduled(clock.now())).await.unwrap();
                let id = job.task_id.as_str();
                let (jobs, clock, rival, rivals_record) = (&jobs, &clock, &rival, &rivals_record);
                let stalled = Echo {
                    before_slice: Some(Box::new(move |start| {
                        async move {
                            if start == stall_before {
                                clock.advance(Duration::seconds(11));
                                let outcome = jobs.run(id, "rival", Trigger::Tick, rival).await.unwrap();
                                assert_eq!(outcome, RunOutcome::Finished(Status::Done));
                                *rivals_record.borrow_mut() = jobs.get(id).await.unwrap();
                            }
                        }
                        .boxed_local()
                    })),
                    ..Echo::default()
                };
                let outcome = jobs.run(id, "stalled", Trigger::Tick, &stalled).await.unwrap();
                assert_eq!(outcome, RunOutcome::LeaseLost, "stall before {stall_before}");
                let record = jobs.get(id).await.unwrap().unwrap();
                assert_eq!(Some(&record), rivals_record.borrow().as_ref(), "the rival's record is kept as it wrote it");
                assert_eq!((record.status, record.runs, runs(&kv, id)), (Status::Done, 2, 2));
                assert_eq!(jobs.results(&record).await.unwrap().unwrap(), echoed(b"0123456789"), "each image once");
                assert_eq!(rival.images.get(), 10 - stall_before, "the rival resumed where the stalled runner had saved");
                assert!(kv.get(&keys::claim(id)).await.unwrap().is_none());
            });
        }
    }

    #[test]
    fn a_big_job_runs_in_turns_so_a_tick_leaves_time_for_other_due_jobs() {
        let (kv, clock) = (MemoryKv::new(), clock());
        // 10 images a slice at 100 ms each: 1 s a slice; a turn may last 3 s.
        let config = Config { slice_images: 10, run_budget: Duration::seconds(3), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let echo = Echo::slow(&clock, 100);
        let big_body: Vec<u8> = (0..100).collect();
        block_on(async {
            // Ids order jobs by creation second: the big one is oldest, so it goes first.
            let big = jobs.submit(NewJob { body: &big_body, ..scheduled(clock.now()) }).await.unwrap().task_id;
            let mut small = Vec::new();
            for _ in 0..3 {
                clock.advance(Duration::seconds(1));
                small.push(jobs.submit(scheduled(clock.now())).await.unwrap().task_id);
            }
            let start = clock.now();
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!((report.ran, report.paused, report.deferred), (3, 1, 0), "{report:?}");
            assert_eq!(clock.now() - start, Duration::seconds(3 + 3), "one turn of the big job, then the small ones");
            for id in &small {
                assert_eq!(jobs.get(id).await.unwrap().unwrap().status, Status::Done);
            }
            let paused = jobs.get(&big).await.unwrap().unwrap();
            assert_eq!((paused.status, paused.images_done, paused.images, &paused.lease), (Status::Running, 30, 100, &None));
            assert!(jobs.results(&paused).await.unwrap().is_none(), "no results until done");

            // A job due now goes before the big job's next turn.
            let late = jobs.submit(scheduled(clock.now())).await.unwrap().task_id;
            let start = clock.now();
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 1);
            assert_eq!(jobs.get(&late).await.unwrap().unwrap().started_at, Some(start));

            let mut ticks = 2;
            while jobs.get(&big).await.unwrap().unwrap().status != Status::Done {
                jobs.tick("cron", &echo).await.unwrap();
                ticks += 1;
                assert!(ticks < 10, "the big job never finished");
            }
            let done = jobs.get(&big).await.unwrap().unwrap();
            assert_eq!((ticks, done.runs, done.turns, done.images_done, runs(&kv, &big)), (4, 1, 4, 100, 1));
            assert_eq!(jobs.results(&done).await.unwrap().unwrap(), echoed(&big_body));
            assert_eq!(echo.images.get(), 100 + 3 * 10 + 10, "no image predicted twice");
        });
    }

    #[test]
    fn a_tick_starts_no_run_once_its_budget_is_spent_and_the_deferred_job_goes_first_next() {
        let (kv, clock) = (MemoryKv::new(), clock());
        let config = Config { slice_images: 10, run_budget: Duration::seconds(3), tick_budget: Duration::seconds(5), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let echo = Echo::slow(&clock, 100);
        let body: Vec<u8> = (0..30).collect(); // one 3 s turn each
        block_on(async {
            let mut ids = Vec::new();
            for _ in 0..3 {
                ids.push(jobs.submit(NewJob { body: &body, ..scheduled(clock.now()) }).await.unwrap().task_id);
                clock.advance(Duration::seconds(1));
            }
            let start = clock.now();
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!((report.ran, report.paused, report.deferred), (1, 1, 1), "{report:?}");
            assert_eq!(clock.now() - start, config.tick_budget, "the second job's turn ended with the tick's budget");
            assert_eq!(jobs.get(&ids[2]).await.unwrap().unwrap().status, Status::Pending);
            let start = clock.now();
            jobs.tick("cron", &echo).await.unwrap();
            let third = jobs.get(&ids[2]).await.unwrap().unwrap();
            assert_eq!((third.status, third.started_at), (Status::Done, Some(start)), "before the paused job's next turn");
        });
    }

    #[test]
    fn a_run_after_submission_is_bounded_and_the_next_tick_continues_it() {
        let (kv, clock) = (MemoryKv::new(), clock());
        let config = Config { slice_images: 10, run_budget: Duration::seconds(3), ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        let echo = Echo::slow(&clock, 100);
        let body: Vec<u8> = (0..100).collect();
        block_on(async {
            let id = jobs.submit(NewJob { body: &body, kind: Kind::Async, execute_at: None, ..scheduled(clock.now()) }).await.unwrap().task_id;
            assert_eq!(jobs.run(&id, "spawned", Trigger::Submitted, &echo).await.unwrap(), RunOutcome::Paused);
            assert_eq!(jobs.get(&id).await.unwrap().unwrap().images_done, 30);
            // Well before the lease after creation (when cron would pick up a lost async run).
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!(report.paused, 1, "{report:?}");
            assert_eq!(jobs.get(&id).await.unwrap().unwrap().images_done, 60);
            while jobs.tick("cron", &echo).await.unwrap().ran == 0 {}
            let done = jobs.get(&id).await.unwrap().unwrap();
            assert_eq!((done.status, done.runs, done.turns, runs(&kv, &id)), (Status::Done, 1, 4, 1));
            assert!(clock.now() - done.created_at < config.lease, "finished before a lost run would even be noticed");
            assert_eq!(jobs.results(&done).await.unwrap().unwrap(), echoed(&body));
        });
    }

    type Fault<'a> = Box<dyn Fn(&str) -> Option<anyhow::Error> + 'a>;

    /// A store whose `set` fails for keys `fail` picks: a crash, a lock or a full disk at that write.
    struct FaultyKv<'a> {
        kv: &'a MemoryKv,
        fail: Fault<'a>,
    }

    impl KeyValue for FaultyKv<'_> {
        async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
            self.kv.get(key).await
        }
        async fn set(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
            match (self.fail)(key) {
                Some(e) => Err(e),
                None => self.kv.set(key, value).await,
            }
        }
        async fn delete(&self, key: &str) -> anyhow::Result<()> {
            self.kv.delete(key).await
        }
        async fn get_keys(&self) -> anyhow::Result<Vec<String>> {
            self.kv.get_keys().await
        }
    }

    #[test]
    fn a_submission_cut_off_between_its_writes_never_strands_a_job() {
        let (kv, clock, config, echo) = (MemoryKv::new(), clock(), config(), Echo::default());
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            jobs.tick("cron", &echo).await.unwrap(); // the first sweep, out of the way
            // Cut off at the index write: there is no record, so no job the client could wait for.
            let faulty = FaultyKv { kv: &kv, fail: Box::new(|key| key.starts_with("jobs/index/due/").then(|| anyhow::anyhow!("killed"))) };
            let cut = Jobs { kv: &faulty, clock: &clock, config: &config };
            assert!(matches!(cut.submit(scheduled(clock.now())).await, Err(SubmitError::Store(_))));
            assert!(kv.keys_with_prefix("jobs/job/").iter().all(|k| keys::meta_key_id(k).is_none()), "no record");
            assert_eq!(jobs.queued().await.unwrap(), Queued::default(), "its marker does not count");

            // Cut off (or stalled on a lock) after the index entry, before the record: a tick
            // finds no record but keeps the entry, and runs the job once the record is there.
            let job = jobs.submit(scheduled(clock.now())).await.unwrap();
            let record = kv.get(&keys::meta(&job.task_id)).await.unwrap().unwrap();
            kv.delete(&keys::meta(&job.task_id)).await.unwrap();
            clock.advance(Duration::minutes(3));
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!((report.ran, report.swept), (0, false));
            kv.set(&keys::meta(&job.task_id), &record).await.unwrap();
            clock.advance(Duration::seconds(10));
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!((report.ran, report.swept), (1, false), "found through the index, not the sweep");
            assert_eq!(jobs.get(&job.task_id).await.unwrap().unwrap().status, Status::Done);

            // The cut-off submission's keys go with the sweep once no submission can be writing them.
            clock.advance(Duration::hours(1));
            let report = jobs.tick("cron", &echo).await.unwrap();
            assert_eq!((report.swept, report.orphans), (true, 4), "3 input chunks and the queued marker");
            let done = jobs.get(&job.task_id).await.unwrap().unwrap();
            let kept = 1 + 3 + done.result_chunks as usize + 1;
            assert_eq!(kv.keys_with_prefix("jobs/job/").len(), kept, "the done job: record, input and result chunks, run marker");
        });
    }

    #[test]
    fn store_faults_on_submit_keep_their_kind_for_the_answer() {
        let (kv, clock, config) = (MemoryKv::new(), clock(), config());
        block_on(async {
            let full = FaultyKv { kv: &kv, fail: Box::new(|_| Some(crate::kv::StoreFull("database or disk is full".into()).into())) };
            let jobs = Jobs { kv: &full, clock: &clock, config: &config };
            let Err(SubmitError::Store(e)) = jobs.submit(scheduled(clock.now())).await else { panic!("stored on a full disk") };
            assert_eq!(crate::faults::store_fault(&e).status, 507);
            let locked = FaultyKv { kv: &kv, fail: Box::new(|_| Some(anyhow::anyhow!("database is locked"))) };
            let jobs = Jobs { kv: &locked, clock: &clock, config: &config };
            let Err(SubmitError::Store(e)) = jobs.submit(scheduled(clock.now())).await else { panic!("stored under a lock") };
            let reply = crate::faults::store_fault(&e);
            assert_eq!((reply.status, reply.retry_after), (503, Some(crate::faults::STORE_RETRY_SECONDS)));
            assert!(kv.is_empty());
        });
    }

    #[test]
    fn submissions_over_the_queue_cap_are_refused_and_store_nothing() {
        let (kv, clock, echo) = (MemoryKv::new(), clock(), Echo::default());
        let config = Config { max_queued_jobs: 3, max_queued_bytes: 25, ..config() };
        let jobs = Jobs { kv: &kv, clock: &clock, config: &config };
        block_on(async {
            let later = clock.now() + Duration::minutes(5);
            for _ in 0..2 {
                jobs.submit(scheduled(later)).await.unwrap(); // 10 bytes each
            }
            let stored = kv.len();
            let refused = jobs.submit(scheduled(later)).await.unwrap_err();
            assert!(matches!(refused, SubmitError::QueueFull(Queued { jobs: 2, bytes: 20 })), "{refused:?}: 30 bytes > 25");
            assert_eq!(kv.len(), stored, "nothing stored");
            jobs.submit(NewJob { body: b"01234", ..scheduled(later) }).await.unwrap();
            let refused = jobs.submit(NewJob { body: b"0", ..scheduled(later) }).await.unwrap_err();
            assert!(matches!(refused, SubmitError::QueueFull(Queued { jobs: 3, bytes: 25 })), "{refused:?}: a 4th job");
            let reply = crate::faults::queue_full(Queued { jobs: 3, bytes: 25 }, 3, 25);
            assert_eq!((reply.status, reply.retry_after.is_some()), (429, true));

            // Finished jobs leave the queue.
            clock.advance(Duration::minutes(5));
            assert_eq!(jobs.tick("cron", &echo).await.unwrap().ran, 3);
            assert_eq!(jobs.queued().await.unwrap(), Queued::default());
            jobs.submit(scheduled(clock.now())).await.unwrap();
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
