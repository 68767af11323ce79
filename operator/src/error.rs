//! The operator library's error type.

/// Why a reconcile, a placement round or a map-store call failed. Callers tell them apart to
/// pick a retry delay and a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer machinery (adding/removing it, or the wrapped reconcile) failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object could not be (de)serialized.
    #[error("serialization: {0}")]
    Serialization(#[from] serde_json::Error),
    /// The placement manager failed.
    #[error("placement: {0}")]
    Placement(#[from] shmdb_placement_manager::ManagerError),
    /// The object lacks something every object read from the API has.
    #[error("object is missing {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Serialization(_) => "serialization",
            Error::Placement(_) => "placement",
            Error::MissingField(_) => "missing_field",
        }
    }
}

/// Whether an API error is "not found" (deleting what is gone is success).
///
/// The code counts too: an API group the server does not serve (discovery of
/// `monitoring.coreos.com/v1` without the Prometheus Operator) answers a plain-text
/// `404 page not found`, which kube turns into a Status without the NotFound reason.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found() || status.code == 404)
}

/// Whether an API error is an optimistic-concurrency conflict (409).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.to_string(),
            ..Default::default()
        }))
    }

    #[test]
    fn an_unserved_api_group_is_not_found() {
        assert!(is_not_found(&status(404, "Failed to parse error data")));
        assert!(is_not_found(&status(404, "NotFound")));
        assert!(!is_not_found(&status(403, "Forbidden")));
        assert!(!is_not_found(&status(500, "InternalError")));
    }
}
