//! The periodic map walks — datapath counters every `stats_every`, a
//! conntrack GC pass every `gc_every` — on a thread of their own, with their
//! own handles on the pinned maps, so a sync never waits behind a walk over
//! a large conntrack table. Results go back to the main loop, which
//! publishes them and does the one follow-up that needs the map writer:
//! releasing reverse-NAT entries that no frontend and no flow names.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tracing::{error, warn};

use super::seams::{DatapathStats, GcStats};

/// One GC pass done off the loop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcPass {
    pub stats: GcStats,
    /// Reverse-NAT indices live flows still name; `None` when the scan was
    /// cut short (then nothing may be released).
    pub referenced_rev_nat: Option<HashSet<u16>>,
}

/// The walks themselves, on handles of their own.
pub trait Walks: Send {
    fn stats(&mut self) -> anyhow::Result<DatapathStats>;
    fn gc(&mut self) -> anyhow::Result<GcPass>;
}

/// What the walker thread reports.
#[derive(Debug)]
pub enum Walked {
    Stats(DatapathStats),
    Gc(GcPass),
}

/// The walker thread; dropping the handle stops it.
pub struct Walker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Walker {
    /// Starts walking at once (GC first: the counters report the CT count of
    /// the last pass), then every `stats_every` / `gc_every`.
    pub fn start(
        mut walks: Box<dyn Walks>,
        stats_every: Duration,
        gc_every: Duration,
        report: UnboundedSender<Walked>,
    ) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("weir-walker".into())
            .spawn(move || {
                let (mut next_stats, mut next_gc) = (Instant::now(), Instant::now());
                loop {
                    let now = Instant::now();
                    if now >= next_gc {
                        next_gc = now + gc_every;
                        let walked = walks.gc().map(Walked::Gc);
                        if !deliver(&report, walked, "conntrack GC failed") {
                            return;
                        }
                    }
                    if now >= next_stats {
                        next_stats = now + stats_every;
                        let walked = walks.stats().map(Walked::Stats);
                        if !deliver(&report, walked, "reading datapath counters failed") {
                            return;
                        }
                    }
                    let wait = next_stats
                        .min(next_gc)
                        .saturating_duration_since(Instant::now());
                    match stopped.recv_timeout(wait) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Sends a walk's result to the loop (a failure is logged here); false
/// once the loop is gone.
fn deliver(
    report: &UnboundedSender<Walked>,
    walked: anyhow::Result<Walked>,
    failure: &str,
) -> bool {
    match walked {
        Ok(walked) => report.send(walked).is_ok(),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "{failure}");
            true
        }
    }
}

impl Drop for Walker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("the map walker thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Counting;

    impl Walks for Counting {
        fn stats(&mut self) -> anyhow::Result<DatapathStats> {
            Ok(DatapathStats {
                ct_entries: Some(7),
                ..DatapathStats::default()
            })
        }
        fn gc(&mut self) -> anyhow::Result<GcPass> {
            Ok(GcPass {
                stats: GcStats {
                    scanned: 7,
                    expired: 1,
                },
                referenced_rev_nat: Some([3].into()),
            })
        }
    }

    #[test]
    fn walks_gc_first_then_counters_and_stops_on_drop() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let walker = Walker::start(
            Box::new(Counting),
            Duration::from_secs(60),
            Duration::from_secs(60),
            tx,
        )
        .unwrap();
        let first = rx.blocking_recv().unwrap();
        assert!(
            matches!(first, Walked::Gc(ref p) if p.stats.expired == 1),
            "{first:?}"
        );
        let second = rx.blocking_recv().unwrap();
        assert!(matches!(second, Walked::Stats(ref s) if s.ct_entries == Some(7)));
        drop(walker);
        assert!(rx.blocking_recv().is_none(), "the thread ended");
    }
}
