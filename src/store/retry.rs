//! Retries temporary errors with exponential back-off and jitter. `NotFound` and
//! permanent errors pass straight through: retrying cannot help them.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{DynStore, ObjectMeta, Store, StoreError};

#[derive(Debug)]
pub struct Retry {
    inner: DynStore,
    retries: u32,
    base: Duration,
}

impl Retry {
    pub fn new(inner: DynStore, retries: u32) -> Self {
        Retry {
            inner,
            retries,
            base: Duration::from_millis(50),
        }
    }

    /// Back-off before attempt `n` (1-based): base·2ⁿ⁻¹, capped at 2 s, ±50 % jitter.
    fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1 << (attempt - 1).min(6));
        let exp = exp.min(Duration::from_secs(2));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        exp.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut + Send + Sync,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
        T: Send,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if e.is_temporary() && attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(store = self.inner.name(), attempt, "retrying: {e}");
                    tokio::time::sleep(self.delay(attempt)).await;
                }
                r => return r,
            }
        }
    }
}

#[async_trait]
impl Store for Retry {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        self.run(|| self.inner.get_range(key, range.clone())).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.run(|| self.inner.put(key, data.clone())).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.run(|| self.inner.head(key)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(|| self.inner.delete(key)).await
    }
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        self.run(|| self.inner.get_bounded(key, max)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.run(|| self.inner.list(prefix)).await
    }
}
