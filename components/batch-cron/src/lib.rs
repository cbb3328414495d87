//! Batch cron component: each tick runs due scheduled jobs, async jobs whose own run never
//! finished, runs interrupted past their lease, and the next turn of jobs too big for one; then
//! deletes jobs past retention. A tick starts no run after `tick_budget`.
//! All the logic is `kana_jobs::Jobs::tick` (components/jobs-core/src/tick.rs); claims make
//! overlapping ticks and several hosts safe.

use kana_jobs::spin::Setup;

// Generates `Guest`, `Metadata`, `Error` and `export!` for the `spin-cron` world.
spin_sdk::wit_bindgen::generate!({
    world: "spin-cron",
    path: "../../host/wit/deps/spin-cron@3.0.0",
    runtime_path: "spin_sdk::wit_bindgen::rt",
});

struct BatchCron;

impl Guest for BatchCron {
    async fn handle_cron_event(_metadata: Metadata) -> Result<(), Error> {
        tick().await.map_err(|e| Error::Other(format!("{e:#}")))
    }
}

async fn tick() -> anyhow::Result<()> {
    let setup = Setup::open().await?;
    // A fresh owner per tick: two ticks of the same instance must not share a claim.
    let owner = kana_jobs::job::new_owner_id();
    let report = setup.jobs().tick(&owner, &setup.predictor()).await?;
    if report.ran + report.paused + report.deferred + report.expired + report.lost_claims > 0 || report.swept {
        kana_jobs::log_line(&format!(
            "batch-cron: ran {} job(s), lost {} claim(s) to other runners, paused {} big job(s), deferred {} to the next tick, deleted {} expired, swept: {} ({} orphan keys deleted)",
            report.ran, report.lost_claims, report.paused, report.deferred, report.expired, report.swept, report.orphans
        ));
    }
    Ok(())
}

export!(BatchCron);
