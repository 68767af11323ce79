//! Spec checks the operator runs before touching anything.
//!
//! The API server enforces the CRD's CEL rules, but an object stored before a rule existed,
//! or under an API server that skips CEL, may still break them; and some facts (a quantity's
//! unit, memory limits versus record memory, name lengths) are easier to check here. Every
//! problem names its field, so the Degraded condition and the Event tell the user exactly
//! what to fix. A spec with problems is never applied: nothing is created, patched or deleted.

use std::fmt;

use crate::crd::SharedMemDatabase;
use crate::quantity;

/// The smallest record memory a storage node is given.
pub const MIN_MEMORY_PER_NODE: u64 = 64 << 20;

/// Longest database name: the longest derived name (`NAME-commit-headless`) must stay a
/// valid 63-character DNS label, and StatefulSet pods add `-NNN`.
pub const MAX_NAME_LEN: usize = 40;

/// One thing wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The offending field, e.g. `spec.storage.memoryPerNode`.
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of `db`'s spec (empty = applicable).
pub fn problems(db: &SharedMemDatabase) -> Vec<SpecProblem> {
    let mut out = Vec::new();
    let mut push = |field: &str, message: String| {
        out.push(SpecProblem {
            field: field.to_string(),
            message,
        })
    };
    if let Err(errors) = db.validate_cel() {
        for e in errors.as_slice() {
            let field = if e.field_path.is_empty() {
                "spec".to_string()
            } else if e.field_path.starts_with("spec") {
                e.field_path.clone()
            } else {
                format!("spec.{}", e.field_path.trim_start_matches('.'))
            };
            push(&field, e.message.clone());
        }
    }
    let spec = &db.spec;
    if db.name().len() > MAX_NAME_LEN {
        push(
            "metadata.name",
            format!("must be at most {MAX_NAME_LEN} characters"),
        );
    }
    if spec.replication_factor < 1 {
        push("spec.replicationFactor", "must be at least 1".to_string());
    }
    match quantity::to_bytes(&spec.storage.memory_per_node) {
        Err(e) => push("spec.storage.memoryPerNode", e),
        Ok(bytes) if bytes < MIN_MEMORY_PER_NODE => push(
            "spec.storage.memoryPerNode",
            format!(
                "{} is below the minimum of 64Mi",
                spec.storage.memory_per_node.0
            ),
        ),
        Ok(bytes) => {
            let limit = spec
                .storage
                .resources
                .as_ref()
                .and_then(|r| r.limits.as_ref())
                .and_then(|l| l.get("memory"));
            if let Some(limit) = limit {
                match quantity::to_bytes(limit) {
                    Ok(limit_bytes) if limit_bytes <= bytes => push(
                        "spec.storage.resources.limits.memory",
                        format!(
                            "{} must exceed memoryPerNode ({}) or the node is killed before it can refuse writes",
                            limit.0, spec.storage.memory_per_node.0
                        ),
                    ),
                    Err(e) => push("spec.storage.resources.limits.memory", e),
                    Ok(_) => {}
                }
            }
        }
    }
    if spec.image.repository.trim().is_empty() {
        push("spec.image.repository", "must not be empty".to_string());
    }
    if spec.storage.replicas < 1 {
        push("spec.storage.replicas", "must be at least 1".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::example_database;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn the_example_has_no_problems() {
        assert_eq!(problems(&example_database("db", "ns")), vec![]);
    }

    #[test]
    fn problems_name_their_field() {
        let mut db = example_database("db", "ns");
        db.spec.storage.memory_per_node = Quantity("lots".into());
        db.spec.replication_factor = 9;
        let found = problems(&db);
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        assert!(fields.contains(&"spec.storage.memoryPerNode"), "{found:?}");
        assert!(
            found
                .iter()
                .any(|p| p.message.contains("replicationFactor must not exceed")),
            "{found:?}"
        );
    }
}
