//! The job service the components call: submit, read, list, run one job under a claim. The cron
//! tick (due jobs, stale async jobs, interrupted runs, retention) is in `tick.rs`.
//!
//! A run works in slices of `slice_images`: after each it renews its claim, appends the slice's
//! results and saves its progress, so a crash loses at most one slice and a run that lost its
//! claim stops without writing. Every write of the job record by a runner is a compare-and-swap
//! from the record it last read or wrote, so of two runners that both think they may run a job
//! (a lease that lapsed under a stalled runner) only one moves it on: the other's swap is
//! refused and it stops. A job therefore becomes `done` once, whatever the timing. A turn ends after `run_budget` (the rest is continued by the next
//! tick), and a tick starts no run after `tick_budget`, so one big job cannot hold the others back.

use std::collections::BTreeSet;
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

    pub(crate) async fn put(&self, job: &Job) -> anyhow::Result<()> {
        self.kv.set(&keys::meta(&job.task_id), &serde_json::to_vec(job)?).await
    }

    /// The record as stored (the bytes a [`Jobs::replace`] starts from) and parsed.
    async fn get_stored(&self, id: &str) -> anyhow::Result<Option<(Vec<u8>, Job)>> {
        let Some(bytes) = self.kv.get(&keys::meta(id)).await? else { return Ok(None) };
        let job = serde_json::from_slice(&bytes)?;
        Ok(Some((bytes, job)))
    }

    /// Writes `job` over its record only if the record still is `stored` (what this runner read
    /// or last wrote), and remembers the new bytes. False: another runner changed it first.
    async fn replace(&self, stored: &mut Vec<u8>, job: &Job) -> anyhow::Result<bool> {
        let next = serde_json::to_vec(job)?;
        if !self.kv.compare_and_swap(&keys::meta(&job.task_id), Some(stored), &next).await? {
            return Ok(false);
        }
        *stored = next;
        Ok(true)
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
    pub(crate) async fn run_until(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor, until: Option<DateTime<Utc>>) -> anyhow::Result<RunOutcome> {
        let Some(job) = self.get(id).await? else { return Ok(RunOutcome::Missing) };
        if !self.wants_run(&job, trigger, self.clock.now()) {
            return Ok(RunOutcome::NotDue);
        }
        if !claim::acquire(self.kv, self.clock, id, owner, self.config.lease).await? {
            return Ok(RunOutcome::Claimed);
        }
        let outcome = self.run_claimed(id, owner, trigger, predictor, until).await;
        claim::release(self.kv, self.clock, id, owner).await?;
        outcome
    }

    async fn run_claimed(&self, id: &str, owner: &str, trigger: Trigger, predictor: &impl Predictor, until: Option<DateTime<Utc>>) -> anyhow::Result<RunOutcome> {
        // Re-read under the claim: another runner may have finished it, or still be running it.
        let Some((mut stored, mut job)) = self.get_stored(id).await? else { return Ok(RunOutcome::Missing) };
        let now = self.clock.now();
        if !self.wants_run(&job, trigger, now) {
            return Ok(RunOutcome::Claimed);
        }
        let deadline = until.map_or(now + self.config.run_budget, |u| u.min(now + self.config.run_budget));
        // Running with a lease: its runner died (the lease expired). Without: a paused turn.
        let interrupted = job.status == Status::Running && job.lease.is_some();
        let give_up = interrupted && job.runs >= self.config.max_attempts;
        let starts_run = job.status == Status::Pending || (interrupted && !give_up);
        if starts_run {
            job.runs += 1;
            job.run_owners.push(owner.to_owned());
        }
        job.status = Status::Running;
        job.turns += 1;
        job.started_at.get_or_insert(now);
        job.lease = Some(Lease { owner: owner.to_owned(), expires_at: now + self.config.lease });
        // The start of a run: of runners that read the same record, one swap succeeds.
        if !self.replace(&mut stored, &job).await? {
            return Ok(RunOutcome::Claimed);
        }
        if starts_run {
            self.kv.set(&keys::run_marker(id, owner), job::timestamp_ms(now).as_bytes()).await?;
        }
        if give_up {
            job.error = Some(format!("gave up after {} interrupted runs", job.runs));
            return self.finish(job, owner, &mut stored).await;
        }

        let input = chunks::get(self.kv, &keys::input(id), job.input_chunks).await?;
        let images = match predictor.decode(&job, input).await {
            Ok(images) => images,
            Err(message) => return self.fail(job, owner, &mut stored, message).await,
        };
        job.images = predictor.count(&images);
        if job.images_done > job.images {
            return self.fail(job, owner, &mut stored, "the stored progress does not match the upload".into()).await;
        }
        let mut progressed = false;
        while job.images_done < job.images {
            if progressed && self.clock.now() >= deadline {
                return self.pause(job, owner, &mut stored).await;
            }
            let range = job.images_done..(job.images_done + self.config.slice_images.max(1)).min(job.images);
            let end = range.end;
            let results = match predictor.predict(&job, &images, range).await {
                Ok(results) => results,
                Err(message) => return self.fail(job, owner, &mut stored, message).await,
            };
            if !self.still_ours(id, owner).await? {
                return Ok(RunOutcome::LeaseLost);
            }
            self.append_results(&mut job, &results).await?;
            job.images_done = end;
            job.lease = Some(Lease { owner: owner.to_owned(), expires_at: self.clock.now() + self.config.lease });
            if !self.replace(&mut stored, &job).await? {
                return Ok(RunOutcome::LeaseLost);
            }
            progressed = true;
        }
        self.finish(job, owner, &mut stored).await
    }

    /// Renews our claim. False: our lease lapsed and someone else has (or may have) taken the
    /// job, so we must not write to it again.
    async fn still_ours(&self, id: &str, owner: &str) -> anyhow::Result<bool> {
        claim::renew(self.kv, self.clock, id, owner, self.config.lease).await
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
    async fn pause(&self, mut job: Job, owner: &str, stored: &mut Vec<u8>) -> anyhow::Result<RunOutcome> {
        if !self.still_ours(&job.task_id, owner).await? {
            return Ok(RunOutcome::LeaseLost);
        }
        let now = self.clock.now();
        index::DUE.add(self.kv, &job.task_id, now, now).await?;
        job.lease = None;
        if !self.replace(stored, &job).await? {
            return Ok(RunOutcome::LeaseLost);
        }
        Ok(RunOutcome::Paused)
    }

    async fn fail(&self, mut job: Job, owner: &str, stored: &mut Vec<u8>, message: String) -> anyhow::Result<RunOutcome> {
        job.error = Some(message);
        self.finish(job, owner, stored).await
    }

    /// Marks the job done (failed if it has an error) and indexes its expiry, unless another
    /// runner has taken it: a record someone else finished or runs is never overwritten.
    async fn finish(&self, mut job: Job, owner: &str, stored: &mut Vec<u8>) -> anyhow::Result<RunOutcome> {
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
        // The one transition to a final status: refused if anyone else moved the job on.
        if !self.replace(stored, &job).await? {
            return Ok(RunOutcome::LeaseLost);
        }
        // One line per job, written only by the runner whose swap made it final (what the
        // multi-host test counts: a job ends exactly once).
        #[cfg(feature = "spin")]
        crate::log_line(&format!("job {} {:?} by {} (run {}, {} image(s))", job.task_id, job.status, owner, job.runs, job.images));
        self.kv.delete(&keys::queued(&job.task_id, job.input_bytes)).await?;
        index::EXPIRE.add(self.kv, &job.task_id, now + self.config.retention, now).await?;
        Ok(RunOutcome::Finished(job.status))
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemoryKv;
    use crate::testing::{Echo, FaultyKv, clock, config, echoed, runs, scheduled};
    use chrono::Duration;
    use futures::executor::block_on;
    use futures::future::FutureExt;
    use std::cell::{Cell, RefCell};

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
            assert!(ticks >= 5, "rivals ticked throughout the run ({ticks})");
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
                assert_eq!(claim::holder(&kv, clock, id).await.unwrap(), None, "released");
            });
        }
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
            let kept = 1 + 3 + done.result_chunks as usize + 1 + 1;
            assert_eq!(kv.keys_with_prefix("jobs/job/").len(), kept, "the done job: record, input and result chunks, run marker, released claim");
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
