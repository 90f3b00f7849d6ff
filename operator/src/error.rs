//! Reconcile failures, each with a short reason used as a metric label and an Event reason.

use wsfleet_config::ConfigError;

/// A spec the operator cannot act on; it waits for the user to change the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// The offending field, as a path from the object root (`spec.tls.duration`).
    pub field: String,
    pub message: String,
}

impl InvalidSpec {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ConfigError> for InvalidSpec {
    /// The gateway names config fields, which mirror the spec's.
    fn from(err: ConfigError) -> Self {
        Self::new(format!("spec.{}", err.field), err.message)
    }
}

/// Why a reconcile failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} {kind} {namespace}/{name}: {source}")]
    Kube {
        verb: &'static str,
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("issuing the certificate for {secret}: {message}")]
    Certificate { secret: String, message: String },
    #[error("serializing {kind}: {source}")]
    Serialize {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the watch of {kind} has not listed them within {seconds}s (can the operator list and watch them?)"
    )]
    CacheNotReady { kind: String, seconds: u64 },
}

impl Error {
    /// Wraps a client error with what was being done to which object.
    pub fn kube(
        verb: &'static str,
        kind: impl Into<String>,
        namespace: &str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> Self {
        let kind = kind.into();
        move |source| Self::Kube {
            verb,
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source: Box::new(source),
        }
    }

    /// Whether the apiserver answered 404: the object, or its resource type, does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Kube { source, .. } if is_not_found(source))
    }

    /// Metric label and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube { verb: "apply", .. } => "ApplyFailed",
            Self::Kube { verb: "create", .. } => "CreateFailed",
            Self::Kube { verb: "delete", .. } => "DeleteFailed",
            Self::Kube { .. } => "ReadFailed",
            Self::Certificate { .. } => "CertificateFailed",
            Self::Serialize { .. } => "SerializeFailed",
            Self::CacheNotReady { .. } => "CacheNotReady",
        }
    }
}

/// Whether the apiserver answered 404. A resource type that is not served (a CRD not
/// installed) gets a bare "404 page not found", not a `Status` with reason NotFound, so the
/// code decides.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.is_not_found() || status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_config_errors_are_named_from_the_object_root() {
        let err = InvalidSpec::from(ConfigError {
            field: "limits.maxMessageBytes".to_owned(),
            message: "too big".to_owned(),
        });
        assert_eq!(err.to_string(), "spec.limits.maxMessageBytes: too big");
    }

    #[test]
    fn a_resource_type_not_served_reads_as_not_found() {
        // What kube makes of the apiserver's bare "404 page not found" for an absent CRD.
        let unserved =
            kube::core::Status::failure("404 page not found", "Failed to parse error data")
                .with_code(404);
        assert!(is_not_found(&kube::Error::Api(unserved.boxed())));
        let missing = kube::core::Status::failure("chat not found", "NotFound").with_code(404);
        assert!(is_not_found(&kube::Error::Api(missing.boxed())));
        let forbidden = kube::core::Status::failure("no", "Forbidden").with_code(403);
        assert!(!is_not_found(&kube::Error::Api(forbidden.boxed())));
    }

    #[test]
    fn reasons_name_the_failed_step() {
        let api_error =
            || kube::Error::Api(kube::core::Status::failure("boom", "InternalError").boxed());
        let apply = Error::kube("apply", "Deployment", "ns", "chat-gateway")(api_error());
        assert_eq!(apply.reason(), "ApplyFailed");
        assert!(
            apply
                .to_string()
                .starts_with("apply Deployment ns/chat-gateway: ")
        );
        assert_eq!(
            Error::kube("get", "Secret", "ns", "s")(api_error()).reason(),
            "ReadFailed"
        );
        assert_eq!(
            Error::kube("create", "Secret", "ns", "s")(api_error()).reason(),
            "CreateFailed"
        );
    }
}
