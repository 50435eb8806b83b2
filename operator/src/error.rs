//! The operator library's error type: what a reconcile or an admin API call can fail with,
//! each with a short `kind` for metrics and Events.

use crate::admin_client::AdminError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Admin(#[from] AdminError),
    #[error("admin credentials: {0}")]
    Credentials(String),
    #[error("the BrokerCluster has no {0}")]
    MissingField(&'static str),
    #[error("serializing {what}: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
    #[error("leader election: {0}")]
    Leader(#[from] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader Lease; stopping so that a single replica writes")]
    LostLeadership,
    #[error("HTTP endpoints: {0}")]
    Server(#[from] std::io::Error),
    /// A broker refused an object (its message), or some brokers could not be reached; the
    /// status says which.
    #[error("{0}")]
    Brokers(String),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Admin(_) => "admin_api",
            Error::Credentials(_) => "credentials",
            Error::MissingField(_) => "invalid_object",
            Error::Serialize { .. } => "serialize",
            Error::Leader(_) | Error::LostLeadership => "leader_election",
            Error::Server(_) => "server",
            Error::Brokers(_) => "admin_api",
            Error::Finalizer(e) => match &**e {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.kind()
                }
                _ => "finalizer",
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
