//! Liveness and readiness as the main loop reports them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long the main loop may go without a heartbeat before /healthz
/// calls it wedged. The loop beats at least once a second; one sync of
/// 100k services takes a few seconds at most.
pub const DEFAULT_WEDGE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds after `started` of the last heartbeat.
    heartbeat_ms: AtomicU64,
    sources_synced: AtomicBool,
    first_apply: AtomicBool,
    wedge_after: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(DEFAULT_WEDGE_AFTER)
    }
}

impl Health {
    pub fn new(wedge_after: Duration) -> Self {
        Self {
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            sources_synced: AtomicBool::new(false),
            first_apply: AtomicBool::new(false),
            wedge_after,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The main loop is making progress.
    pub fn beat(&self) {
        self.heartbeat_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Every source listed all its objects once.
    pub fn set_sources_synced(&self) {
        self.sources_synced.store(true, Ordering::Relaxed);
    }

    /// The first plan from synced sources is in the datapath.
    pub fn set_first_apply_done(&self) {
        self.first_apply.store(true, Ordering::Relaxed);
    }

    /// `Ok` when alive; otherwise how long the loop has been silent.
    pub fn liveness(&self) -> Result<(), String> {
        let silent = self
            .now_ms()
            .saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed));
        let silent = Duration::from_millis(silent);
        if silent > self.wedge_after {
            return Err(format!(
                "main loop silent for {:.1}s (limit {}s)",
                silent.as_secs_f64(),
                self.wedge_after.as_secs()
            ));
        }
        Ok(())
    }

    /// `Ok` after the first full sync; otherwise what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.sources_synced.load(Ordering::Relaxed) {
            return Err("waiting for the object sources' initial sync".into());
        }
        if !self.first_apply.load(Ordering::Relaxed) {
            return Err("waiting for the first plan to be applied".into());
        }
        self.liveness()
    }

    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ready_only_after_sync_and_first_apply() {
        let h = Health::new(Duration::from_secs(30));
        h.beat();
        assert!(h.liveness().is_ok());
        assert!(h.readiness().unwrap_err().contains("initial sync"));
        h.set_first_apply_done();
        assert!(
            h.readiness().unwrap_err().contains("initial sync"),
            "an apply before the sources synced does not count"
        );
        h.set_sources_synced();
        assert!(h.readiness().is_ok());
        assert!(h.is_ready());
    }

    #[test]
    fn a_silent_loop_is_not_alive_nor_ready() {
        let h = Health::new(Duration::ZERO);
        h.set_sources_synced();
        h.set_first_apply_done();
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.liveness().unwrap_err().contains("silent"));
        assert!(!h.is_ready());
    }
}
