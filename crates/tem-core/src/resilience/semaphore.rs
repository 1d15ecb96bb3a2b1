//! A counting semaphore that runs a closure while holding a permit.

use std::future::Future;

/// At most `permits` operations inside [`Semaphore::run`] at once; waiters are served in order.
#[derive(Debug)]
pub struct Semaphore {
    inner: tokio::sync::Semaphore,
}

impl Semaphore {
    /// A semaphore with `permits` permits.
    pub fn new(permits: usize) -> Self {
        Semaphore {
            inner: tokio::sync::Semaphore::new(permits),
        }
    }

    /// Runs `op` once a permit is free; the permit is returned when `op` finishes (or panics).
    pub async fn run<T, Fut: Future<Output = T>>(&self, op: impl FnOnce() -> Fut) -> T {
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self.inner.acquire().await.ok();
        op().await
    }

    /// Permits free right now.
    pub fn available(&self) -> usize {
        self.inner.available_permits()
    }

    /// Adds permits.
    pub fn release(&self, permits: usize) {
        self.inner.add_permits(permits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn never_more_than_permits_inside() {
        let sem = Arc::new(Semaphore::new(3));
        let inside = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..20 {
            let (sem, inside, peak) = (sem.clone(), inside.clone(), peak.clone());
            handles.push(tokio::spawn(async move {
                sem.run(|| async {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(sem.available(), 3);
    }
}
