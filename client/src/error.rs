//! The client's error type.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster answered with an error status (after retries where the
    /// status allowed them).
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(tonic::Status),
    #[error("no endpoints given")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    /// TLS material that cannot be read or used.
    #[error("TLS: {path}: {reason}")]
    Tls { path: String, reason: String },
    /// The total deadline passed before a definite answer.
    #[error("no definite answer within {deadline:?}; last error: {last}")]
    Deadline { deadline: Duration, last: String },
}

/// The canonical upper-case name of a gRPC code, as in the gRPC spec.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Error {
    /// The gRPC code this error corresponds to.
    pub fn code(&self) -> tonic::Code {
        match self {
            Error::Status(s) => s.code(),
            Error::NoEndpoints | Error::BadEndpoint { .. } | Error::Tls { .. } => tonic::Code::InvalidArgument,
            Error::Deadline { .. } => tonic::Code::DeadlineExceeded,
        }
    }

    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Status(s) => Some(s),
            _ => None,
        }
    }
}
