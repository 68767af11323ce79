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
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found())
}

/// Whether an API error is an optimistic-concurrency conflict (409).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
