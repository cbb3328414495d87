//! The cron trigger: for each `[[trigger.cron]]`, call the component's `handle-cron-event`
//! on a 6-field (with seconds) UTC schedule.
//!
//! One task per trigger runs its ticks one after another, so a trigger never overlaps itself: a
//! tick that runs past the next scheduled time makes that time be skipped. The instance is kept
//! between ticks (globals survive) and replaced after a trap or when a tick runs past its time
//! limit (the store is dropped, which stops the guest mid-computation).

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use cron::Schedule;
use wasmtime::component::Component;
use wasmtime::{Engine, Store};

use crate::bindings::cron::{SpinCron, SpinCronPre, spin::cron::cron_types::Metadata};
use crate::engine::new_linker;
use crate::state::{ComponentEnv, HostState};

/// Parses a Spin cron expression (sec min hour day-of-month month day-of-week [year]).
pub fn parse_schedule(expression: &str) -> Result<Schedule> {
    Schedule::from_str(expression)
        .with_context(|| format!("invalid cron expression `{expression}` (6 fields, seconds first)"))
}

pub struct CronTrigger {
    pub expression: String,
    schedule: Schedule,
    engine: Engine,
    pre: SpinCronPre<HostState>,
    env: ComponentEnv,
    timeout: Duration,
}

impl CronTrigger {
    /// A tick running longer than `timeout` is stopped and its instance replaced.
    pub fn new(engine: &Engine, component: &Component, expression: &str, env: ComponentEnv, timeout: Duration) -> Result<Self> {
        let schedule = parse_schedule(expression)?;
        let linker = new_linker(engine)?;
        let pre = SpinCronPre::new(linker.instantiate_pre(component)?)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("component `{}` does not export spin:cron handle-cron-event", env.id))?;
        Ok(Self { expression: expression.to_owned(), schedule, engine: engine.clone(), pre, env, timeout })
    }

    pub fn component(&self) -> &str {
        &self.env.id
    }

    /// Runs until the task is dropped/aborted (at shutdown).
    pub async fn run(self) {
        let mut instance: Option<(Store<HostState>, SpinCron)> = None;
        while let Some(next) = self.schedule.upcoming(Utc).next() {
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            let started = Instant::now();
            let timestamp = u64::try_from(next.timestamp()).unwrap_or_default();
            match self.tick(&mut instance, timestamp).await {
                Ok(()) => tracing::info!(
                    "cron {} ({}) ok {:.1}ms",
                    self.env.id,
                    self.expression,
                    started.elapsed().as_secs_f64() * 1e3
                ),
                Err(e) => {
                    tracing::warn!("cron {} ({}) failed: {e:#}", self.env.id, self.expression);
                }
            }
        }
    }

    async fn tick(&self, slot: &mut Option<(Store<HostState>, SpinCron)>, timestamp: u64) -> Result<()> {
        if slot.is_none() {
            let mut store = crate::engine::new_store(&self.engine, self.env.new_state()?);
            let cron = self.pre.instantiate_async(&mut store).await?;
            *slot = Some((store, cron));
        }
        let (store, cron) = slot.as_mut().expect("filled above");
        let cron = &*cron;
        let run = store.run_concurrent(async |accessor| cron.call_handle_cron_event(accessor, Metadata { timestamp }).await);
        let Ok(outcome) = tokio::time::timeout(self.timeout, run).await else {
            *slot = None;
            anyhow::bail!("stopped after its time limit of {} s; the instance will be replaced", self.timeout.as_secs());
        };
        // Like the HTTP pool, an instance whose memory grew past the recycle threshold (a big
        // batch) is not kept: wasm memory never shrinks, so only dropping it gives RSS back.
        if store.data().memory.oversized_flag().load(std::sync::atomic::Ordering::Relaxed) {
            let peak_mib = store.data().memory.peak_bytes() >> 20;
            *slot = None;
            crate::limits::release_freed_memory();
            tracing::info!("cron {}: instance recycled after its memory grew to {peak_mib} MiB", self.env.id);
        }
        match outcome.and_then(|r| r) {
            Ok(Ok(())) => Ok(()),
            // The guest reported an error; its instance is fine and stays.
            Ok(Err(guest_error)) => Err(anyhow::anyhow!("guest error: {guest_error:?}")),
            Err(trap) => {
                *slot = None;
                Err(anyhow::Error::from(trap).context("trapped; the instance will be replaced"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn six_field_expressions_with_seconds() {
        let every_ten = parse_schedule("*/10 * * * * *").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 3).unwrap();
        let next: Vec<_> = every_ten.after(&start).take(3).map(|t| t.second()).collect();
        assert_eq!(next, [10, 20, 30]);
        let every_second = parse_schedule("* * * * * *").unwrap();
        let after = every_second.after(&start).next().unwrap();
        assert_eq!((after - start).num_seconds(), 1);
    }

    #[test]
    fn invalid_expressions_are_rejected_with_the_expression_named() {
        let err = parse_schedule("every minute").unwrap_err();
        assert!(format!("{err:#}").contains("every minute"));
    }
}
