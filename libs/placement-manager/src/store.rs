//! Where the authoritative partition map lives, with compare-and-swap updates.

use std::path::PathBuf;

use parking_lot::Mutex;
use prost::Message;
use shmdb_placement::PartitionMap;
use shmdb_proto::storage as pb;

/// A failed load or store of the map.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else stored a newer map: reload and re-plan.
    #[error("the stored map changed: expected version {expected:?}, found {found:?}")]
    Conflict {
        /// The version the writer based its change on.
        expected: Option<u64>,
        /// The version actually stored.
        found: Option<u64>,
    },
    /// The backing store failed.
    #[error("map store: {0}")]
    Backend(String),
}

/// Durable home of the partition map. Updates are compare-and-swap on the map version so
/// that two managers (a restarted one and a stale one) can never overwrite each other.
#[async_trait::async_trait]
pub trait MapStore: Send + Sync {
    /// The stored map, if any.
    async fn load(&self) -> Result<Option<PartitionMap>, StoreError>;
    /// Stores `map` if the stored version is still `expected` (`None` = nothing stored).
    async fn compare_and_swap(
        &self,
        expected: Option<u64>,
        map: &PartitionMap,
    ) -> Result<(), StoreError>;
}

/// A map kept in memory (the embedded cluster, tests).
#[derive(Debug, Default)]
pub struct MemoryMapStore {
    map: Mutex<Option<PartitionMap>>,
}

#[async_trait::async_trait]
impl MapStore for MemoryMapStore {
    async fn load(&self) -> Result<Option<PartitionMap>, StoreError> {
        Ok(self.map.lock().clone())
    }

    async fn compare_and_swap(
        &self,
        expected: Option<u64>,
        map: &PartitionMap,
    ) -> Result<(), StoreError> {
        let mut stored = self.map.lock();
        let found = stored.as_ref().map(|m| m.version);
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
        *stored = Some(map.clone());
        Ok(())
    }
}

/// A map kept in a file (protobuf), replaced atomically by rename; survives a manager
/// restart in the local multi-process cluster.
#[derive(Debug)]
pub struct FileMapStore {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl FileMapStore {
    /// A store at `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileMapStore {
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    async fn read(&self) -> Result<Option<PartitionMap>, StoreError> {
        match tokio::fs::read(&self.path).await {
            Ok(bytes) => {
                let proto = pb::PartitionMap::decode(bytes.as_slice())
                    .map_err(|e| StoreError::Backend(format!("{}: {e}", self.path.display())))?;
                PartitionMap::from_proto(&proto)
                    .map(Some)
                    .map_err(|e| StoreError::Backend(format!("{}: {e}", self.path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Backend(format!("{}: {e}", self.path.display()))),
        }
    }
}

#[async_trait::async_trait]
impl MapStore for FileMapStore {
    async fn load(&self) -> Result<Option<PartitionMap>, StoreError> {
        let _guard = self.lock.lock().await;
        self.read().await
    }

    async fn compare_and_swap(
        &self,
        expected: Option<u64>,
        map: &PartitionMap,
    ) -> Result<(), StoreError> {
        let _guard = self.lock.lock().await;
        let found = self.read().await?.map(|m| m.version);
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
        let tmp = self.path.with_extension("tmp");
        let bytes = map.to_proto().encode_to_vec();
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| StoreError::Backend(format!("{}: {e}", tmp.display())))?;
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(|e| StoreError::Backend(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn map(version: u64) -> PartitionMap {
        let nodes: BTreeMap<u64, String> = [(1, "127.0.0.1:1".to_string())].into();
        let mut m = PartitionMap::bootstrap(nodes, 1, 1);
        m.version = version;
        m
    }

    async fn cas_semantics(store: &dyn MapStore) {
        assert!(store.load().await.expect("load").is_none());
        store.compare_and_swap(None, &map(1)).await.expect("first");
        assert!(matches!(
            store.compare_and_swap(None, &map(2)).await,
            Err(StoreError::Conflict { found: Some(1), .. })
        ));
        store
            .compare_and_swap(Some(1), &map(2))
            .await
            .expect("second");
        assert!(matches!(
            store.compare_and_swap(Some(1), &map(3)).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            store.load().await.expect("load").map(|m| m.version),
            Some(2)
        );
    }

    #[tokio::test]
    async fn memory_store_is_compare_and_swap() {
        cas_semantics(&MemoryMapStore::default()).await;
    }

    #[tokio::test]
    async fn file_store_is_compare_and_swap_and_survives_reopen() {
        let dir = std::env::temp_dir().join(format!("shmdb-map-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("map.pb");
        let _ = std::fs::remove_file(&path);
        cas_semantics(&FileMapStore::new(&path)).await;
        let reopened = FileMapStore::new(&path);
        assert_eq!(
            reopened.load().await.expect("load").map(|m| m.version),
            Some(2)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
