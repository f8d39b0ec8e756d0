//! Every refusal of the relay is a JSON error with a stable code:
//! `{"error": {"code": "replayed_request", "message": "..."}}`. The codes are
//! [`ErrorCode`](switchboard_protocol::api::ErrorCode), shared with the clients.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use switchboard_protocol::api::{ErrorBody, ErrorCode, ErrorDetail};

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
    /// The request names a session this relay does not hold.
    #[error("unknown or expired session: open another (POST /v1/sessions) or sign the request")]
    UnknownSession,
    /// The body is not a valid value of the expected type.
    #[error("{0}")]
    Malformed(String),
    /// The body declares a protocol version this relay does not speak.
    #[error("{0}")]
    UnsupportedVersion(String),
    /// The body is larger than the limit.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// The body did not arrive within the time allowed.
    #[error("the request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// The resource exists with other content.
    #[error("{0}")]
    Conflict(String),
    /// The resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The route exists, but not with this method.
    #[error("{method} is not allowed here; this route takes {allowed}")]
    MethodNotAllowed {
        /// The method used (at most 16 characters of it).
        method: String,
        /// The methods the route takes.
        allowed: String,
    },
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
    /// The relay is at a limit it keeps for everyone (bodies being read, connections); retry
    /// in a moment.
    #[error("the relay is busy ({0}); retry in 1 s")]
    Busy(&'static str),
    /// A bug in the relay.
    #[error("internal error; please report this")]
    Internal,
}

impl ApiError {
    /// The stable machine-readable code.
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::BadSignature(_) => ErrorCode::BadSignature,
            Self::StaleRequest => ErrorCode::StaleRequest,
            Self::ReplayedRequest => ErrorCode::ReplayedRequest,
            Self::UnknownDevice(_) => ErrorCode::UnknownDevice,
            Self::UnknownSession => ErrorCode::UnknownSession,
            Self::Malformed(_) => ErrorCode::Malformed,
            Self::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::BodyTimeout(_) => ErrorCode::RequestTimeout,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Banned { .. } => ErrorCode::Banned,
            Self::Unavailable | Self::Busy(_) => ErrorCode::Unavailable,
            Self::Internal => ErrorCode::Internal,
        }
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    #[must_use]
    pub const fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } | Self::Banned { retry_after } => Some(*retry_after),
            Self::Busy(_) => Some(1),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Replayed => Self::ReplayedRequest,
            StoreError::NotMember(m) => Self::Forbidden(m),
            StoreError::Database(_)
            | StoreError::Migration(_)
            | StoreError::CommitFailed(_)
            | StoreError::ReadFailed(_) => {
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

impl ApiError {
    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
            },
        }
    }

    /// The error body as one line of JSON (`{"error":{"code","message"}}`), for an error sent
    /// inside a response already under way (the inbox stream's `error` event).
    pub(super) fn body_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_else(|_| r#"{"error":{}}"#.to_owned())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(retry_after) = self.retry_after()
            && let Ok(value) = retry_after.to_string().parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        if let Self::MethodNotAllowed { allowed, .. } = &self
            && let Ok(value) = allowed.parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::ALLOW, value);
        }
        response
    }
}
