//! Caps the requests in flight to one store; callers beyond the cap queue.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{DynStore, ErrorKind, ObjectMeta, Store, StoreError};

#[derive(Debug)]
pub struct Limit {
    inner: DynStore,
    permits: Arc<Semaphore>,
}

impl Limit {
    pub fn new(inner: DynStore, max_in_flight: usize) -> Self {
        Limit {
            inner,
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, StoreError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| StoreError::new(ErrorKind::Permanent, self.inner.name(), "store closed"))
    }
}

#[async_trait]
impl Store for Limit {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        let _p = self.permit().await?;
        self.inner.get_range(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let _p = self.permit().await?;
        self.inner.put(key, data).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let _p = self.permit().await?;
        self.inner.head(key).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let _p = self.permit().await?;
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let _p = self.permit().await?;
        self.inner.list(prefix).await
    }
}
