//! The cron tick: due scheduled jobs, async jobs whose own run never finished, runs interrupted
//! past their lease and the next turns of paused big jobs, from the recent index buckets; expired
//! jobs deleted; every `sweep_interval` a sweep over all keys (index misses, long downtimes,
//! leftovers of crashed submissions). `batch-cron` calls [`Jobs::tick`] every cron period.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::job::{self, Job, Status, keys};
use crate::jobs::{Jobs, Predictor, RunOutcome, Trigger};
use crate::kv::{Clock, KeyValue};
use crate::{chunks, index};

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

/// A job key without a record younger than this may belong to a submission still being written
/// (its record comes last), so it is neither deleted nor given up on.
const IN_SUBMISSION: chrono::Duration = chrono::Duration::hours(1);

fn maybe_in_submission(id: &str, now: DateTime<Utc>) -> bool {
    job::created_at_of(id).is_some_and(|created| now - created < IN_SUBMISSION)
}

impl<K: KeyValue, C: Clock> Jobs<'_, K, C> {
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
    use crate::Config;
    use crate::job::{Kind, Lease};
    use crate::jobs::NewJob;
    use crate::kv::MemoryKv;
    use crate::testing::{Echo, clock, config, echoed, runs, scheduled};
    use chrono::Duration;
    use futures::executor::block_on;

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
}
