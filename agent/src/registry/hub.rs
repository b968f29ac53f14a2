//! Fan-out of decoded policy events to `monitor` subscribers.
//!
//! The event reader publishes into a bounded broadcast channel and never
//! waits: a subscriber that falls behind loses its oldest events (counted,
//! and told how many), the reader and the other subscribers do not notice.
//! The hub also tracks which pods subscribers watch, so the main loop can
//! set `EMIT_ALLOWS` on exactly those endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, watch};

use super::monitor::{MonitorEvent, MonitorFilter};
use crate::k8s::ObjectName;

/// Events buffered per subscriber before the slowest starts losing them.
pub const SUBSCRIBER_BUFFER: usize = 4096;

#[derive(Debug)]
struct Inner {
    events: broadcast::Sender<Arc<MonitorEvent>>,
    /// Watched pod → number of subscribers watching it.
    watched: watch::Sender<BTreeMap<ObjectName, usize>>,
    published: AtomicU64,
    dropped: AtomicU64,
}

/// Cheap to clone; every clone is the same hub.
#[derive(Clone, Debug)]
pub struct MonitorHub {
    inner: Arc<Inner>,
}

impl Default for MonitorHub {
    fn default() -> Self {
        Self::new(SUBSCRIBER_BUFFER)
    }
}

/// What a subscriber gets next.
#[derive(Debug, PartialEq)]
pub enum Next {
    Event(Arc<MonitorEvent>),
    /// This many events were skipped because the subscriber was slow.
    Dropped(u64),
    /// The hub is gone.
    Closed,
}

impl MonitorHub {
    pub fn new(buffer: usize) -> Self {
        let (events, _) = broadcast::channel(buffer.max(1));
        let (watched, _) = watch::channel(BTreeMap::new());
        Self {
            inner: Arc::new(Inner {
                events,
                watched,
                published: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Hands an event to every subscriber; never blocks.
    pub fn publish(&self, event: MonitorEvent) {
        self.inner.published.fetch_add(1, Ordering::Relaxed);
        // No subscriber: nobody to tell.
        let _ = self.inner.events.send(Arc::new(event));
    }

    /// Whether anyone listens (the reader may skip decoding otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.inner.events.receiver_count() > 0
    }

    pub fn subscribers(&self) -> usize {
        self.inner.events.receiver_count()
    }

    /// Events published, ever.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }

    /// Events slow subscribers missed, ever.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Pods some subscriber watches, changing as they come and go.
    pub fn watched(&self) -> watch::Receiver<BTreeMap<ObjectName, usize>> {
        self.inner.watched.subscribe()
    }

    /// The pods watched right now.
    pub fn watched_pods(&self) -> BTreeSet<ObjectName> {
        self.inner.watched.borrow().keys().cloned().collect()
    }

    /// A new subscriber. Fails on a malformed pod filter.
    pub fn subscribe(&self, filter: MonitorFilter) -> Result<Subscription, String> {
        let pod = filter.pod_name()?;
        if let Some(pod) = &pod {
            self.inner.watched.send_modify(|w| {
                *w.entry(pod.clone()).or_default() += 1;
            });
        }
        Ok(Subscription {
            events: self.inner.events.subscribe(),
            filter,
            pod,
            hub: self.clone(),
        })
    }

    fn unwatch(&self, pod: &ObjectName) {
        self.inner.watched.send_modify(|w| {
            if let Some(count) = w.get_mut(pod) {
                *count -= 1;
                if *count == 0 {
                    w.remove(pod);
                }
            }
        });
    }
}

/// One subscriber's view; dropping it unsubscribes (and unwatches).
#[derive(Debug)]
pub struct Subscription {
    events: broadcast::Receiver<Arc<MonitorEvent>>,
    filter: MonitorFilter,
    pod: Option<ObjectName>,
    hub: MonitorHub,
}

impl Subscription {
    /// The next event matching the filter.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.events.recv().await {
                Ok(event) if self.filter.matches(&event) => return Next::Event(event),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.hub.inner.dropped.fetch_add(n, Ordering::Relaxed);
                    return Next::Dropped(n);
                }
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(pod) = &self.pod {
            self.hub.unwatch(pod);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::monitor::MonitorVerdict;
    use crate::registry::monitor::tests::event;

    #[tokio::test]
    async fn subscribers_get_what_their_filter_asks_for() {
        let hub = MonitorHub::new(16);
        let mut all = hub.subscribe(MonitorFilter::default()).unwrap();
        let mut drops_of_a = hub
            .subscribe(MonitorFilter {
                pod: Some("x/a".into()),
                verdict: Some(MonitorVerdict::Drop),
            })
            .unwrap();
        assert_eq!(hub.subscribers(), 2);
        hub.publish(event(MonitorVerdict::Allow, "x/a"));
        hub.publish(event(MonitorVerdict::Drop, "x/b"));
        hub.publish(event(MonitorVerdict::Drop, "x/a"));
        for expected in [("x/a", "allow"), ("x/b", "drop"), ("x/a", "drop")] {
            let Next::Event(e) = all.next().await else {
                panic!("an event")
            };
            assert_eq!((e.pod.as_deref().unwrap(), e.verdict.as_str()), expected);
        }
        let Next::Event(e) = drops_of_a.next().await else {
            panic!("an event")
        };
        assert_eq!(
            (e.pod.as_deref(), e.verdict),
            (Some("x/a"), MonitorVerdict::Drop)
        );
        assert_eq!(hub.published(), 3);
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_and_is_told() {
        let hub = MonitorHub::new(4);
        let mut slow = hub.subscribe(MonitorFilter::default()).unwrap();
        for _ in 0..10 {
            hub.publish(event(MonitorVerdict::Drop, "x/a"));
        }
        assert_eq!(slow.next().await, Next::Dropped(6));
        for _ in 0..4 {
            assert!(matches!(slow.next().await, Next::Event(_)));
        }
        assert_eq!(hub.dropped(), 6);
    }

    #[test]
    fn watched_pods_follow_their_subscribers() {
        let hub = MonitorHub::default();
        let watched = hub.watched();
        let pod = |p: &str| MonitorFilter {
            pod: Some(p.into()),
            verdict: None,
        };
        let a1 = hub.subscribe(pod("x/a")).unwrap();
        let a2 = hub.subscribe(pod("x/a")).unwrap();
        let b = hub.subscribe(pod("y/b")).unwrap();
        let everything = hub.subscribe(MonitorFilter::default()).unwrap();
        assert!(watched.has_changed().unwrap());
        assert_eq!(
            hub.watched_pods().into_iter().collect::<Vec<_>>(),
            [ObjectName::new("x", "a"), ObjectName::new("y", "b")]
        );
        drop(a1);
        drop(b);
        drop(everything);
        assert_eq!(
            hub.watched_pods().into_iter().collect::<Vec<_>>(),
            [ObjectName::new("x", "a")]
        );
        drop(a2);
        assert!(hub.watched_pods().is_empty());
        assert!(hub.subscribe(pod("nope")).is_err());
        assert!(
            hub.watched_pods().is_empty(),
            "a refused filter watches nothing"
        );
    }
}
