//! Building the status conditions (Kubernetes condition format) from what reconcile saw.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's new state; `lastTransitionTime` only moves when `status` changes, as the
/// Kubernetes API conventions ask, so `kubectl wait` and alerting see real transitions.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// The status of a condition type, if present.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_status_change() {
        let t0 = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let t1 = Timestamp::from_second(2_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            "Ready",
            false,
            "Starting",
            "x",
            Some(1),
            t0,
        );
        set(
            &mut conditions,
            "Ready",
            false,
            "Starting",
            "y",
            Some(2),
            t1,
        );
        assert_eq!(conditions[0].last_transition_time, Time(t0));
        assert_eq!(conditions[0].message, "y");
        set(&mut conditions, "Ready", true, "AllReady", "z", Some(2), t1);
        assert_eq!(conditions[0].last_transition_time, Time(t1));
        assert_eq!(status_of(&conditions, "Ready"), Some("True"));
        assert_eq!(status_of(&conditions, "Degraded"), None);
    }
}
