//! Every refusal of the relay is a JSON error with a stable code:
//! `{"error": {"code": "replayed_request", "message": "..."}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An HTTP error of the relay API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Authentication headers are missing or malformed.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request signature does not verify.
    #[error("the request signature does not verify for device {0}")]
    BadSignature(String),
    /// The request's timestamp is too far from the relay's clock.
    #[error(
        "the request timestamp is more than 5 minutes from the relay's clock; check the device clock"
    )]
    StaleRequest,
    /// The request's nonce was used before.
    #[error("this request was already received once (replayed nonce)")]
    ReplayedRequest,
    /// The requesting device is not registered.
    #[error("device {0} is not registered; register it with POST /v1/devices first")]
    UnknownDevice(String),
    /// The body is not a valid value of the expected type.
    #[error("{0}")]
    Malformed(String),
    /// The body declares a protocol version this relay does not speak.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// The body is larger than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// The resource exists with other content.
    #[error("{0}")]
    Conflict(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The requester may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The device sends faster than its limit.
    #[error("rate limit exceeded; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after: u64,
    },
    /// The device kept exceeding its limit and is banned for a while.
    #[error(
        "device temporarily banned for repeatedly exceeding its rate limit; retry in {retry_after} s"
    )]
    Banned {
        /// Seconds until the ban ends.
        retry_after: u64,
    },
    /// The store failed; retry later.
    #[error("storage unavailable, retry later")]
    Unavailable,
    /// A bug in the relay.
    #[error("internal error; please report this")]
    Internal,
}

impl ApiError {
    /// The stable machine-readable code.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "unauthenticated",
            Self::BadSignature(_) => "bad_signature",
            Self::StaleRequest => "stale_request",
            Self::ReplayedRequest => "replayed_request",
            Self::UnknownDevice(_) => "unknown_device",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::TooLarge(_) => "too_large",
            Self::Conflict(_) => "conflict",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(_) => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Banned { .. } => "banned",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_)
            | Self::BadSignature(_)
            | Self::StaleRequest
            | Self::ReplayedRequest
            | Self::UnknownDevice(_) => StatusCode::UNAUTHORIZED,
            Self::Malformed(_) | Self::UnsupportedVersion(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) | Self::Banned { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Database(_) | StoreError::Migration(_) | StoreError::CommitFailed(_) => {
                tracing::error!(error = %e, "store failure");
                Self::Unavailable
            }
            StoreError::UnsupportedUrl(_) | StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "store bug or corruption");
                Self::Internal
            }
        }
    }
}

impl From<switchboard_protocol::WireError> for ApiError {
    fn from(e: switchboard_protocol::WireError) -> Self {
        match e {
            switchboard_protocol::WireError::UnsupportedVersion { .. } => {
                Self::UnsupportedVersion(e.to_string())
            }
            switchboard_protocol::WireError::Malformed { .. } => Self::Malformed(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::RateLimited { retry_after } | Self::Banned { retry_after } = self
            && let Ok(value) = retry_after.to_string().parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}
