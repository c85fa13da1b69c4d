//! Bounds every request in time; a request that runs over fails with a
//! temporary error (so the retry layer above may try again). Listing gets a
//! longer allowance since it may page through many keys.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{DynStore, ErrorKind, ObjectMeta, Store, StoreError};

#[derive(Debug)]
pub struct Timeout {
    inner: DynStore,
    limit: Duration,
}

impl Timeout {
    pub fn new(inner: DynStore, limit: Duration) -> Self {
        Timeout { inner, limit }
    }

    async fn run<T>(
        &self,
        limit: Duration,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::new(
                ErrorKind::Temporary,
                self.inner.name(),
                format!("{what}: timed out after {limit:?}"),
            )),
        }
    }
}

#[async_trait]
impl Store for Timeout {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        self.run(self.limit, key, self.inner.get_range(key, range))
            .await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.run(self.limit, key, self.inner.put(key, data)).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.run(self.limit, key, self.inner.head(key)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run(self.limit, key, self.inner.delete(key)).await
    }
    async fn get_bounded(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        self.run(self.limit, key, self.inner.get_bounded(key, max))
            .await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.run(self.limit * 6, prefix, self.inner.list(prefix))
            .await
    }
}
