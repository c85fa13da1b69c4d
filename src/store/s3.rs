//! PLACEHOLDER: S3 store (being written).
use std::ops::Range;
use async_trait::async_trait;
use bytes::Bytes;
use super::{ErrorKind, ObjectMeta, Store, StoreError};

#[derive(Debug)]
pub struct S3Store {
    name: String,
}

impl S3Store {
    pub fn new(name: &str, _bucket: &str, _prefix: &str, _endpoint: Option<&str>, _region: Option<&str>) -> Result<Self, StoreError> {
        Ok(S3Store { name: name.into() })
    }
    fn no(&self) -> StoreError {
        StoreError::new(ErrorKind::Permanent, &self.name, "s3 store not built yet")
    }
}

#[async_trait]
impl Store for S3Store {
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
