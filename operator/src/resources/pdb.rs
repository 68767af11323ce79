//! PodDisruptionBudgets: voluntary evictions (node drains, upgrades) take at most what
//! each tier can lose.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{Names, Tier, labels, meta, selector_labels};
use crate::crd::SharedMemDatabase;

/// The tier's budget. Storage may lose `replicationFactor - 1` pods at once (every range
/// keeps a copy while the placement manager restores the rest); with RF 1 no storage pod
/// may be evicted, since its ranges would be gone. The stateless tiers lose one at a time.
pub fn budget(db: &SharedMemDatabase, names: &Names, tier: Tier) -> PodDisruptionBudget {
    let max_unavailable = match tier {
        Tier::Storage => (db.spec.replication_factor - 1).max(0),
        Tier::Processing | Tier::CommitManager => 1,
    };
    PodDisruptionBudget {
        metadata: meta(db, names, names.pdb(tier), labels(names, tier)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(names, tier)),
                match_expressions: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}
