//! Turn-based concurrency for one actor: one call chain at a time, in
//! arrival order. With reentrancy, calls carrying the running chain's
//! `Dapr-Reentrancy-Id` join it (up to `maxStackDepth`) instead of queueing
//! behind it, so A → B → A does not deadlock.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use super::{config::Reentrancy, error::ActorError};

struct Flight {
    seq: u64,
    /// Reentrancy id; `None` never matches another call.
    id: Option<String>,
    depth: usize,
    started: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    flights: VecDeque<Flight>,
    next_seq: u64,
}

/// The turn lock of one active actor.
pub struct TurnLock {
    reentrancy: Reentrancy,
    inner: Mutex<Inner>,
}

/// Holding a turn. Dropping it (also while still waiting) releases it.
pub struct TurnGuard {
    lock: Arc<TurnLock>,
    seq: u64,
    started: watch::Receiver<bool>,
}

impl TurnLock {
    pub fn new(reentrancy: Reentrancy) -> Arc<Self> {
        Arc::new(Self {
            reentrancy,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn reentrancy(&self) -> Reentrancy {
        self.reentrancy
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls running or waiting.
    pub fn pending(&self) -> usize {
        self.inner().flights.iter().map(|f| f.depth).sum()
    }

    /// Takes a turn. `reentrancy_id` is honoured only when reentrancy is
    /// enabled for the type. Waits for earlier chains to finish; the wait
    /// is as long as the caller is willing to wait (callers bound it).
    pub async fn acquire(
        self: &Arc<Self>,
        reentrancy_id: Option<&str>,
    ) -> Result<TurnGuard, ActorError> {
        let guard = self.enqueue(reentrancy_id)?;
        let mut started = guard.started.clone();
        // The sender lives in the queue until this flight is removed, which
        // only our own guard (or a joined call's) does.
        let _ = started.wait_for(|s| *s).await;
        Ok(guard)
    }

    fn enqueue(self: &Arc<Self>, reentrancy_id: Option<&str>) -> Result<TurnGuard, ActorError> {
        let mut inner = self.inner();
        let id = reentrancy_id.filter(|_| self.reentrancy.enabled);
        if let Some(id) = id
            && let Some(f) = inner
                .flights
                .iter_mut()
                .find(|f| f.id.as_deref() == Some(id))
        {
            if f.depth + 1 > self.reentrancy.max_stack_depth {
                return Err(ActorError::MaxStackDepth);
            }
            f.depth += 1;
            return Ok(TurnGuard {
                lock: self.clone(),
                seq: f.seq,
                started: f.started.subscribe(),
            });
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let first = inner.flights.is_empty();
        let (tx, rx) = watch::channel(first);
        inner.flights.push_back(Flight {
            seq,
            id: id.map(str::to_owned),
            depth: 1,
            started: tx,
        });
        Ok(TurnGuard {
            lock: self.clone(),
            seq,
            started: rx,
        })
    }

    fn release(&self, seq: u64) {
        let mut inner = self.inner();
        let Some(pos) = inner.flights.iter().position(|f| f.seq == seq) else {
            return;
        };
        let f = &mut inner.flights[pos];
        f.depth -= 1;
        if f.depth > 0 {
            return;
        }
        inner.flights.remove(pos);
        if pos == 0
            && let Some(next) = inner.flights.front()
        {
            next.started.send_replace(true);
        }
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        self.lock.release(self.seq);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_turn_at_a_time_in_order() {
        let lock = TurnLock::new(Reentrancy::default());
        let g1 = lock.acquire(None).await.unwrap();
        let l2 = lock.clone();
        let second = tokio::spawn(async move { l2.acquire(None).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!second.is_finished());
        assert_eq!(lock.pending(), 2);
        drop(g1);
        second.await.unwrap().unwrap();
        assert_eq!(lock.pending(), 0);
    }

    #[tokio::test]
    async fn reentrant_chain_joins_up_to_the_depth() {
        let lock = TurnLock::new(Reentrancy {
            enabled: true,
            max_stack_depth: 2,
        });
        let g1 = lock.acquire(Some("chain")).await.unwrap();
        let g2 = tokio::time::timeout(Duration::from_secs(1), lock.acquire(Some("chain")))
            .await
            .expect("reentrant call must not wait")
            .unwrap();
        assert!(matches!(
            lock.acquire(Some("chain")).await,
            Err(ActorError::MaxStackDepth)
        ));
        // Another chain waits.
        let other = tokio::time::timeout(Duration::from_millis(30), lock.acquire(Some("x"))).await;
        assert!(other.is_err());
        drop(g2);
        drop(g1);
        assert_eq!(lock.pending(), 0);
    }

    #[tokio::test]
    async fn ids_are_ignored_without_reentrancy() {
        let lock = TurnLock::new(Reentrancy::default());
        let _g = lock.acquire(Some("chain")).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(30), lock.acquire(Some("chain"))).await;
        assert!(r.is_err(), "without reentrancy the same id queues");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_does_not_block_the_queue() {
        let lock = TurnLock::new(Reentrancy::default());
        let g1 = lock.acquire(None).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(10), lock.acquire(None)).await;
        let l3 = lock.clone();
        let third = tokio::spawn(async move { l3.acquire(None).await.map(|_| ()) });
        drop(g1);
        tokio::time::timeout(Duration::from_secs(1), third)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
