//! Limits and timings, read from Spin variables (declared in spin.toml) with safe defaults.

use chrono::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    /// Uploads above this are refused with 413.
    pub max_input_bytes: usize,
    /// Images per job (a batch may be far larger than one `/predict` request).
    pub max_images: usize,
    /// How far ahead `execute_at` may be.
    pub max_horizon: Duration,
    /// How long finished jobs (and their results) are kept.
    pub retention: Duration,
    /// How long a claim protects a run; an async job still pending after this is run by cron.
    pub lease: Duration,
    /// Every this often a tick lists all keys to find jobs the bucket index missed.
    pub sweep_interval: Duration,
    /// Runs that were interrupted (lease expired) this many times make the job `failed`.
    pub max_attempts: u32,
    /// Values are split into chunks of at most this many bytes.
    pub chunk_bytes: usize,
    /// Whether `GET /tasks` lists tasks (every client's); off by default, for operators only.
    pub list_tasks: bool,
    /// Images predicted between two claim renewals and progress saves. A slice must take far
    /// less than `lease`, or the runner loses its claim and the slice is thrown away.
    pub slice_images: usize,
    /// How long one runner's turn on a job may last (after the submission or in a tick) before
    /// it saves its progress and leaves the rest to the next tick. At least one slice always runs.
    pub run_budget: Duration,
    /// A tick starts no run after this long, so one tick ends in time for the next and a big job
    /// cannot hold every other due job back.
    pub tick_budget: Duration,
    /// Unfinished jobs one store may hold; more submissions are refused with 429.
    pub max_queued_jobs: usize,
    /// Upload bytes of unfinished jobs one store may hold; more submissions are refused with 429.
    pub max_queued_bytes: usize,
    /// The bearer token of `POST /jobs/tick` (a tick driven over HTTP where no cron trigger
    /// runs, e.g. SpinKube); `None` (the variable empty or unset) disables the route.
    pub tick_token: Option<Secret>,
}

/// A value that must not reach a log: `Debug` prints `Secret(..)`, and [`Secret::matches`]
/// compares in time that does not depend on where a guess first differs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// `None` for an empty value: an empty token would let an empty `Bearer ` header in.
    pub fn new(value: &str) -> Option<Self> {
        let value = value.trim();
        (!value.is_empty()).then(|| Self(value.to_owned()))
    }

    /// Whether `given` is the secret. Every byte of the secret is looked at whatever `given`
    /// is, so the time taken tells a guesser nothing about how much of a guess was right
    /// (only, at most, the secret's length).
    pub fn matches(&self, given: &str) -> bool {
        let (expected, given) = (self.0.as_bytes(), given.as_bytes());
        let mut diff = expected.len() ^ given.len();
        for (i, &byte) in expected.iter().enumerate() {
            diff |= usize::from(byte ^ given.get(i).copied().unwrap_or(0));
        }
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 * 1024 * 1024,
            // The K49 test set (38,547 images) fits; decoded as f32 it needs ~120 MiB of guest
            // memory (~400 MiB peak while the buffer grows), well inside the host's 1 GiB cap.
            // 100,000 images did not fit: 28×28 f32 pixels grow the buffer past 1 GiB.
            max_images: 40_000,
            max_horizon: Duration::days(30),
            retention: Duration::days(7),
            lease: Duration::seconds(60),
            sweep_interval: Duration::minutes(10),
            max_attempts: 3,
            chunk_bytes: 512 * 1024,
            list_tasks: false,
            slice_images: 256,
            run_budget: Duration::seconds(10),
            tick_budget: Duration::seconds(30),
            max_queued_jobs: 200,
            max_queued_bytes: 256 * 1024 * 1024,
            tick_token: None,
        }
    }
}

/// Spin variable names (spin.toml `[variables]`), all optional.
pub const VARIABLES: &[&str] = &[
    "max_input_bytes",
    "max_batch_images",
    "max_schedule_horizon_seconds",
    "retention_seconds",
    "lease_seconds",
    "sweep_interval_seconds",
    "list_tasks",
    "slice_images",
    "run_budget_seconds",
    "tick_budget_seconds",
    "max_queued_jobs",
    "max_queued_bytes",
    "tick_token",
];

impl Config {
    /// Builds a config from variable values; `lookup` returns None for unset variables.
    pub fn from_variables(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let mut config = Self::default();
        let number = |name: &str| -> anyhow::Result<Option<i64>> {
            match lookup(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or_else(|| anyhow::anyhow!("variable {name} must be a positive integer, got {v:?}")),
            }
        };
        let count = |name: &str, field: &mut usize| -> anyhow::Result<()> {
            if let Some(n) = number(name)? {
                *field = n as usize;
            }
            Ok(())
        };
        let seconds = |name: &str, field: &mut Duration| -> anyhow::Result<()> {
            if let Some(n) = number(name)? {
                *field = Duration::seconds(n);
            }
            Ok(())
        };
        count("max_input_bytes", &mut config.max_input_bytes)?;
        count("max_batch_images", &mut config.max_images)?;
        count("slice_images", &mut config.slice_images)?;
        count("max_queued_jobs", &mut config.max_queued_jobs)?;
        count("max_queued_bytes", &mut config.max_queued_bytes)?;
        seconds("max_schedule_horizon_seconds", &mut config.max_horizon)?;
        seconds("retention_seconds", &mut config.retention)?;
        seconds("lease_seconds", &mut config.lease)?;
        seconds("sweep_interval_seconds", &mut config.sweep_interval)?;
        seconds("run_budget_seconds", &mut config.run_budget)?;
        seconds("tick_budget_seconds", &mut config.tick_budget)?;
        config.tick_token = lookup("tick_token").as_deref().and_then(Secret::new);
        match lookup("list_tasks").as_deref().map(str::trim) {
            None | Some("") => {}
            Some("true") => config.list_tasks = true,
            Some("false") => config.list_tasks = false,
            Some(v) => anyhow::bail!("variable list_tasks must be \"true\" or \"false\", got {v:?}"),
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_override_defaults_and_bad_values_are_errors() {
        let c = Config::from_variables(|n| match n {
            "lease_seconds" => Some("5".into()),
            "max_input_bytes" => Some("1000".into()),
            "run_budget_seconds" => Some("3".into()),
            "max_queued_jobs" => Some("7".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((c.run_budget, c.max_queued_jobs), (Duration::seconds(3), 7));
        assert_eq!(c.tick_budget, Config::default().tick_budget);
        assert_eq!(c.lease, Duration::seconds(5));
        assert_eq!(c.max_input_bytes, 1000);
        assert_eq!(c.retention, Config::default().retention);
        assert!(Config::from_variables(|_| Some("-3".into())).is_err());
        assert!(Config::from_variables(|_| Some("ten".into())).is_err());
    }

    #[test]
    fn listing_tasks_is_off_unless_enabled() {
        assert!(!Config::default().list_tasks);
        assert!(!Config::from_variables(|_| None).unwrap().list_tasks);
        let with = |v: &'static str| Config::from_variables(move |n| (n == "list_tasks").then(|| v.to_string()));
        assert!(with("true").unwrap().list_tasks);
        assert!(!with("false").unwrap().list_tasks);
        assert!(!with("").unwrap().list_tasks);
        assert!(with("yes").is_err());
        assert!(with("1").is_err());
    }

    #[test]
    fn the_tick_token_is_off_unless_set_and_never_printed() {
        assert!(Config::default().tick_token.is_none());
        let with = |v: &'static str| Config::from_variables(move |n| (n == "tick_token").then(|| v.to_string())).unwrap();
        assert!(with("").tick_token.is_none());
        assert!(with("  ").tick_token.is_none());
        let token = with("s3cret").tick_token.unwrap();
        assert!(token.matches("s3cret"));
        for wrong in ["", "s3cre", "s3cret!", "S3cret", "s3crex"] {
            assert!(!token.matches(wrong), "{wrong:?}");
        }
        assert!(!format!("{:?}", with("s3cret")).contains("s3cret"));
    }
}
