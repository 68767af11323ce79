//! The partition map in a ConfigMap, updated with compare-and-swap on resourceVersion.

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use prost::Message;
use shmdb_placement::PartitionMap;
use shmdb_placement_manager::{MapStore, StoreError};
use shmdb_proto::storage as pb;

use crate::error::is_conflict;

/// The `binaryData` key holding the protobuf-encoded map.
pub const MAP_KEY: &str = "map.pb";

/// A [`MapStore`] backed by one ConfigMap.
///
/// The map is stored as protobuf in `binaryData` (plus its version in `data`, for people).
/// A swap reads the ConfigMap, checks the stored map version against the caller's expected
/// one, and writes back with the resourceVersion it read: the API server refuses the write
/// (409) if anyone changed the ConfigMap in between, so two managers — a deposed leader and
/// its successor — can never overwrite each other's map.
#[derive(Clone)]
pub struct ConfigMapMapStore {
    api: Api<ConfigMap>,
    name: String,
    owner: Option<OwnerReference>,
    labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for ConfigMapMapStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigMapMapStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl ConfigMapMapStore {
    /// A store in ConfigMap `name` of `api`'s namespace, owned by `owner` (so deleting the
    /// database deletes its map).
    pub fn new(
        api: Api<ConfigMap>,
        name: impl Into<String>,
        owner: Option<OwnerReference>,
        labels: BTreeMap<String, String>,
    ) -> Self {
        ConfigMapMapStore {
            api,
            name: name.into(),
            owner,
            labels,
        }
    }

    fn decode(&self, cm: &ConfigMap) -> Result<Option<PartitionMap>, StoreError> {
        let Some(bytes) = cm.binary_data.as_ref().and_then(|d| d.get(MAP_KEY)) else {
            return Ok(None);
        };
        let proto = pb::PartitionMap::decode(bytes.0.as_slice())
            .map_err(|e| backend(format!("configmap {}: {e}", self.name)))?;
        PartitionMap::from_proto(&proto)
            .map(Some)
            .map_err(|e| backend(format!("configmap {}: {e}", self.name)))
    }

    fn encode(&self, map: &PartitionMap, resource_version: Option<String>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels.clone()),
                owner_references: self.owner.clone().map(|o| vec![o]),
                resource_version,
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(
                MAP_KEY.to_string(),
                ByteString(map.to_proto().encode_to_vec()),
            )])),
            data: Some(BTreeMap::from([
                ("version".to_string(), map.version.to_string()),
                ("ranges".to_string(), map.ranges.len().to_string()),
            ])),
            ..Default::default()
        }
    }

    async fn current_version(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.load().await?.map(|m| m.version))
    }
}

#[async_trait]
impl MapStore for ConfigMapMapStore {
    async fn load(&self) -> Result<Option<PartitionMap>, StoreError> {
        match self.api.get_opt(&self.name).await.map_err(backend)? {
            None => Ok(None),
            Some(cm) => self.decode(&cm),
        }
    }

    async fn compare_and_swap(
        &self,
        expected: Option<u64>,
        map: &PartitionMap,
    ) -> Result<(), StoreError> {
        let current = self.api.get_opt(&self.name).await.map_err(backend)?;
        let written = match current {
            None => {
                if expected.is_some() {
                    return Err(StoreError::Conflict {
                        expected,
                        found: None,
                    });
                }
                self.api
                    .create(&PostParams::default(), &self.encode(map, None))
                    .await
            }
            Some(cm) => {
                let found = self.decode(&cm)?.map(|m| m.version);
                if found != expected {
                    return Err(StoreError::Conflict { expected, found });
                }
                let rv = cm.metadata.resource_version.clone();
                self.api
                    .replace(&self.name, &PostParams::default(), &self.encode(map, rv))
                    .await
            }
        };
        match written {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Err(StoreError::Conflict {
                expected,
                found: self.current_version().await?,
            }),
            Err(e) => Err(backend(e)),
        }
    }
}
