//! An in-memory store, for tests of the layers above stores.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ErrorKind, ObjectMeta, Store, StoreError, check_key, clamp_range};

#[derive(Debug, Default)]
pub struct MemoryStore {
    name: String,
    objects: Mutex<BTreeMap<String, (Bytes, SystemTime)>>,
}

impl MemoryStore {
    pub fn new(name: impl Into<String>) -> Self {
        MemoryStore {
            name: name.into(),
            objects: Mutex::default(),
        }
    }

    /// Replace an object's bytes directly (for corruption tests).
    pub fn overwrite(&self, key: &str, data: Bytes) {
        self.objects
            .lock()
            .unwrap()
            .insert(key.to_string(), (data, SystemTime::now()));
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }
    async fn get_range(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, StoreError> {
        check_key(&self.name, key)?;
        let map = self.objects.lock().unwrap();
        let (data, _) = map
            .get(key)
            .ok_or_else(|| StoreError::new(ErrorKind::NotFound, &self.name, key))?;
        let r = clamp_range(range, data.len() as u64);
        Ok(data.slice(r.start as usize..r.end as usize))
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        check_key(&self.name, key)?;
        self.overwrite(key, data);
        Ok(())
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        check_key(&self.name, key)?;
        let map = self.objects.lock().unwrap();
        let (data, t) = map
            .get(key)
            .ok_or_else(|| StoreError::new(ErrorKind::NotFound, &self.name, key))?;
        Ok(ObjectMeta {
            key: key.into(),
            size: data.len() as u64,
            modified: Some(*t),
        })
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(&self.name, key)?;
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let map = self.objects.lock().unwrap();
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (d, t))| ObjectMeta {
                key: k.clone(),
                size: d.len() as u64,
                modified: Some(*t),
            })
            .collect())
    }
}
