//! PLACEHOLDER: HTTP client store (being written).
use std::ops::Range;
use async_trait::async_trait;
use bytes::Bytes;
use super::{ErrorKind, ObjectMeta, Store, StoreError};

#[derive(Debug)]
pub struct HttpStore {
    name: String,
}

impl HttpStore {
    pub fn new(name: &str, _base_url: &str) -> Result<Self, StoreError> {
        Ok(HttpStore { name: name.into() })
    }
    fn no(&self) -> StoreError {
        StoreError::new(ErrorKind::Permanent, &self.name, "http store not built yet")
    }
}

#[async_trait]
impl Store for HttpStore {
    fn name(&self) -> &str {
        &self.name
    }
    async fn get_range(&self, _key: &str, _range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        Err(self.no())
    }
    async fn put(&self, _key: &str, _data: Bytes) -> Result<(), StoreError> {
        Err(self.no())
    }
    async fn head(&self, _key: &str) -> Result<ObjectMeta, StoreError> {
        Err(self.no())
    }
    async fn delete(&self, _key: &str) -> Result<(), StoreError> {
        Err(self.no())
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(self.no())
    }
}
