//! The partition map: ranges of the (table, key) space, their replicas and epochs.

use std::collections::{BTreeMap, BTreeSet};

use shmdb_proto::storage as pb;

/// Identifies a storage node for the lifetime of its data (a restarted, empty node gets a new id
/// only if its operator wants it to; replicas are tracked by id, not by address).
pub type NodeId = u64;
/// Identifies a range; never reused, also not after a split.
pub type RangeId = u64;

/// A map that cannot be trusted for routing or placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The ranges leave a gap or overlap, so some key would have no owner or two.
    #[error("ranges do not tile the key space: {0}")]
    Tiling(String),
    /// A range names a node the map does not know, or names a node twice.
    #[error("range {range}: {reason}")]
    Replicas {
        /// The offending range.
        range: RangeId,
        /// What is wrong with its replica list.
        reason: String,
    },
    /// Two ranges share an id.
    #[error("duplicate range id {0}")]
    DuplicateRange(RangeId),
    /// The replication factor is zero.
    #[error("replication factor must be at least 1")]
    ReplicationFactor,
}

/// One range: the half-open interval `[start, end)` of range keys and who holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeDesc {
    /// Never reused.
    pub id: RangeId,
    /// Inclusive start (an encoded range key; empty for the very first range).
    pub start: Vec<u8>,
    /// Exclusive end; `None` for the last range.
    pub end: Option<Vec<u8>>,
    /// Raised on every change of the replica set or primary, so that a deposed primary's
    /// replication is refused by the backups.
    pub epoch: u64,
    /// Replica node ids, primary first; every write is acknowledged by all of them.
    pub replicas: Vec<NodeId>,
    /// Nodes receiving a copy that are not yet in the acknowledgement set.
    pub learners: Vec<NodeId>,
    /// Created empty at cluster bootstrap: its primary may serve an empty copy.
    pub bootstrap: bool,
}

impl RangeDesc {
    /// Whether the range key falls inside this range.
    pub fn contains(&self, range_key: &[u8]) -> bool {
        range_key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| range_key < end)
    }

    /// The node that orders and serves every operation of this range.
    pub fn primary(&self) -> Option<NodeId> {
        self.replicas.first().copied()
    }

    /// Whether `node` holds or is receiving a copy of this range.
    pub fn involves(&self, node: NodeId) -> bool {
        self.replicas.contains(&node) || self.learners.contains(&node)
    }
}

/// The routing table of the storage layer, with a version that only grows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionMap {
    /// Raised on every change; clients send theirs so nodes can tell who is behind.
    pub version: u64,
    /// Known storage nodes and their gRPC addresses.
    pub nodes: BTreeMap<NodeId, String>,
    /// Ranges sorted by start; they tile the whole key space.
    pub ranges: Vec<RangeDesc>,
    /// Tables that exist; an operation on any other table is refused.
    pub tables: BTreeMap<u64, String>,
    /// How many replicas every range should have.
    pub replication_factor: u32,
}

impl PartitionMap {
    /// A first map: `range_count` ranges split evenly over the table-id space, replicas
    /// assigned round-robin over `nodes`, all marked `bootstrap`.
    pub fn bootstrap(
        nodes: BTreeMap<NodeId, String>,
        replication_factor: u32,
        range_count: u32,
    ) -> Self {
        let node_ids: Vec<NodeId> = nodes.keys().copied().collect();
        let count = u64::from(range_count.max(1));
        let step = u64::MAX / count;
        let rf = (replication_factor.max(1) as usize).min(node_ids.len());
        let mut ranges = Vec::new();
        for i in 0..count {
            let start = if i == 0 {
                Vec::new()
            } else {
                crate::keys::table_start(i * step)
            };
            let end = (i + 1 < count).then(|| crate::keys::table_start((i + 1) * step));
            let replicas = (0..rf)
                .map(|r| node_ids[(i as usize + r) % node_ids.len()])
                .collect();
            ranges.push(RangeDesc {
                id: i + 1,
                start,
                end,
                epoch: 1,
                replicas,
                learners: Vec::new(),
                bootstrap: true,
            });
        }
        PartitionMap {
            version: 1,
            nodes,
            ranges,
            tables: BTreeMap::new(),
            replication_factor: replication_factor.max(1),
        }
    }

    /// Checks that the map can route every key to exactly one range with a sane replica list.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.replication_factor == 0 {
            return Err(MapError::ReplicationFactor);
        }
        let mut ids = BTreeSet::new();
        let mut expected_start: Option<&[u8]> = Some(&[]);
        for range in &self.ranges {
            if !ids.insert(range.id) {
                return Err(MapError::DuplicateRange(range.id));
            }
            match expected_start {
                Some(start) if start == range.start.as_slice() => {}
                Some(start) => {
                    return Err(MapError::Tiling(format!(
                        "range {} starts at {:?}, expected {:?}",
                        range.id, range.start, start
                    )));
                }
                None => {
                    return Err(MapError::Tiling(format!(
                        "range {} follows an unbounded range",
                        range.id
                    )));
                }
            }
            if let Some(end) = &range.end
                && end <= &range.start
            {
                return Err(MapError::Tiling(format!(
                    "range {} is empty or inverted",
                    range.id
                )));
            }
            expected_start = range.end.as_deref();
            let mut seen = BTreeSet::new();
            if range.replicas.is_empty() {
                return Err(MapError::Replicas {
                    range: range.id,
                    reason: "no replicas".into(),
                });
            }
            for node in range.replicas.iter().chain(&range.learners) {
                if !self.nodes.contains_key(node) {
                    return Err(MapError::Replicas {
                        range: range.id,
                        reason: format!("unknown node {node}"),
                    });
                }
                if !seen.insert(*node) {
                    return Err(MapError::Replicas {
                        range: range.id,
                        reason: format!("node {node} listed twice"),
                    });
                }
            }
        }
        if expected_start.is_some() {
            return Err(MapError::Tiling("the last range is bounded".into()));
        }
        Ok(())
    }

    /// The range that owns `range_key` (binary search; the map must be valid).
    pub fn find(&self, range_key: &[u8]) -> Option<&RangeDesc> {
        let idx = self
            .ranges
            .partition_point(|r| r.start.as_slice() <= range_key);
        let range = self.ranges.get(idx.checked_sub(1)?)?;
        range.contains(range_key).then_some(range)
    }

    /// The range with this id.
    pub fn range(&self, id: RangeId) -> Option<&RangeDesc> {
        self.ranges.iter().find(|r| r.id == id)
    }

    /// Mutable access to the range with this id.
    pub fn range_mut(&mut self, id: RangeId) -> Option<&mut RangeDesc> {
        self.ranges.iter_mut().find(|r| r.id == id)
    }

    /// The largest range id in use, so new ids (after a split) are never reused.
    pub fn max_range_id(&self) -> RangeId {
        self.ranges.iter().map(|r| r.id).max().unwrap_or(0)
    }

    /// Ranges whose replica list is shorter than the replication factor allows.
    pub fn under_replicated(&self) -> usize {
        let want = (self.replication_factor as usize).min(self.nodes.len());
        self.ranges
            .iter()
            .filter(|r| r.replicas.len() < want)
            .count()
    }

    /// Converts to the wire form.
    pub fn to_proto(&self) -> pb::PartitionMap {
        pb::PartitionMap {
            version: self.version,
            nodes: self
                .nodes
                .iter()
                .map(|(id, address)| pb::StorageNodeInfo {
                    id: *id,
                    address: address.clone(),
                })
                .collect(),
            ranges: self.ranges.iter().map(RangeDesc::to_proto).collect(),
            tables: self
                .tables
                .iter()
                .map(|(id, name)| pb::TableInfo {
                    id: *id,
                    name: name.clone(),
                })
                .collect(),
            replication_factor: self.replication_factor,
        }
    }

    /// Converts from the wire form and validates.
    pub fn from_proto(map: &pb::PartitionMap) -> Result<Self, MapError> {
        let mut ranges: Vec<RangeDesc> = map.ranges.iter().map(RangeDesc::from_proto).collect();
        ranges.sort_by(|a, b| a.start.cmp(&b.start));
        let out = PartitionMap {
            version: map.version,
            nodes: map
                .nodes
                .iter()
                .map(|n| (n.id, n.address.clone()))
                .collect(),
            ranges,
            tables: map.tables.iter().map(|t| (t.id, t.name.clone())).collect(),
            replication_factor: map.replication_factor,
        };
        out.validate()?;
        Ok(out)
    }
}

impl RangeDesc {
    /// Converts to the wire form (an unbounded end is an empty byte string).
    pub fn to_proto(&self) -> pb::RangeInfo {
        pb::RangeInfo {
            id: self.id,
            start: self.start.clone().into(),
            end: self.end.clone().unwrap_or_default().into(),
            epoch: self.epoch,
            replicas: self.replicas.clone(),
            learners: self.learners.clone(),
            bootstrap: self.bootstrap,
        }
    }

    /// Converts from the wire form.
    pub fn from_proto(r: &pb::RangeInfo) -> Self {
        RangeDesc {
            id: r.id,
            start: r.start.to_vec(),
            end: (!r.end.is_empty()).then(|| r.end.to_vec()),
            epoch: r.epoch,
            replicas: r.replicas.clone(),
            learners: r.learners.clone(),
            bootstrap: r.bootstrap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::range_key;

    fn nodes(n: u64) -> BTreeMap<NodeId, String> {
        (1..=n)
            .map(|i| (i, format!("127.0.0.1:{}", 7000 + i)))
            .collect()
    }

    #[test]
    fn bootstrap_is_valid_and_routes_every_key() {
        let map = PartitionMap::bootstrap(nodes(3), 2, 4);
        map.validate().expect("valid");
        assert_eq!(map.ranges.len(), 4);
        for table in [0, 1, 77, u64::MAX / 3, u64::MAX] {
            let r = map.find(&range_key(table, b"k")).expect("routed");
            assert!(r.contains(&range_key(table, b"k")));
            assert_eq!(r.replicas.len(), 2);
        }
        let back = PartitionMap::from_proto(&map.to_proto()).expect("round trip");
        assert_eq!(back, map);
    }

    #[test]
    fn overlapping_or_gapped_maps_are_rejected() {
        let mut map = PartitionMap::bootstrap(nodes(3), 1, 2);
        map.ranges[1].start = range_key(1, b"");
        assert!(matches!(map.validate(), Err(MapError::Tiling(_))));
        let mut map = PartitionMap::bootstrap(nodes(3), 1, 2);
        map.ranges[0].replicas = vec![9];
        assert!(matches!(map.validate(), Err(MapError::Replicas { .. })));
        let mut map = PartitionMap::bootstrap(nodes(3), 2, 2);
        map.ranges[0].replicas = vec![1, 1];
        assert!(matches!(map.validate(), Err(MapError::Replicas { .. })));
        let mut map = PartitionMap::bootstrap(nodes(3), 1, 2);
        map.ranges[1].id = map.ranges[0].id;
        assert!(matches!(map.validate(), Err(MapError::DuplicateRange(_))));
    }
}
