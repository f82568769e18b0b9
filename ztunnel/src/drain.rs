//! Graceful shutdown: on SIGTERM/SIGINT listeners stop accepting, open connections may finish
//! until the drain deadline, then the ones still open are closed. Listeners watch
//! [`DrainWatch::stopping`]; each connection holds a [`ConnToken`] and races its copy against
//! [`DrainWatch::forced`].

use std::time::Duration;

use tokio::sync::watch;

/// Owns the shutdown; hands out [`DrainWatch`]es.
#[derive(Debug)]
pub struct Drain {
    stop: watch::Sender<bool>,
    force: watch::Sender<bool>,
    open: watch::Sender<usize>,
}

/// What a listener or connection watches.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    stop: watch::Receiver<bool>,
    force: watch::Receiver<bool>,
    open: watch::Sender<usize>,
}

/// Held by an open connection; the drain waits for all of them.
#[derive(Debug)]
pub struct ConnToken(watch::Sender<usize>);

impl Drop for ConnToken {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection finished before the deadline.
    Complete,
    /// The deadline passed; this many connections were closed.
    Forced(usize),
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    pub fn new() -> Self {
        Drain {
            stop: watch::Sender::new(false),
            force: watch::Sender::new(false),
            open: watch::Sender::new(0),
        }
    }

    pub fn watcher(&self) -> DrainWatch {
        DrainWatch { stop: self.stop.subscribe(), force: self.force.subscribe(), open: self.open.clone() }
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    /// Stops accepting, waits up to `deadline` for open connections, then forces the rest.
    pub async fn drain(&self, deadline: Duration) -> DrainOutcome {
        self.stop.send_replace(true);
        let mut rx = self.open.subscribe();
        let done = tokio::time::timeout(deadline, rx.wait_for(|n| *n == 0)).await;
        if done.is_ok() {
            return DrainOutcome::Complete;
        }
        let left = *self.open.borrow();
        self.force.send_replace(true);
        DrainOutcome::Forced(left)
    }
}

impl DrainWatch {
    /// Resolves once shutdown has begun (immediately if it has).
    pub async fn stopping(&self) {
        let mut rx = self.stop.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once open connections must close (the drain deadline passed).
    pub async fn forced(&self) {
        let mut rx = self.force.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Registers an open connection until the token drops.
    pub fn conn(&self) -> ConnToken {
        self.open.send_modify(|n| *n += 1);
        ConnToken(self.open.clone())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_connections_then_forces() {
        let d = Drain::new();
        let w = d.watcher();
        let t1 = w.conn();
        let t2 = w.conn();
        assert_eq!(d.open_connections(), 2);
        let w2 = w.clone();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            drop(t1);
            w2.forced().await;
            drop(t2);
        });
        assert_eq!(d.drain(Duration::from_secs(5)).await, DrainOutcome::Forced(1));
        assert!(w.is_stopping());
        closer.await.unwrap();
        assert_eq!(d.open_connections(), 0);

        let d = Drain::new();
        let t = d.watcher().conn();
        drop(t);
        assert_eq!(d.drain(Duration::from_secs(5)).await, DrainOutcome::Complete);
    }
}
