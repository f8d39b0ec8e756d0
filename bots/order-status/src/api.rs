//! The client of the business's order API: `GET {base}/orders/{id}`.

use std::time::Duration;

use reqwest::{StatusCode, Url, header};
use serde::{Deserialize, Serialize};

use crate::extract::{MAX_ORDER_ID_CHARS, is_valid_order_id};

/// How long [`OrderApi::status`] waits for the whole answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer body [`OrderApi::status`] reads by default, in bytes.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;
/// The longest `status` or `eta` accepted from the API, in characters.
pub const MAX_FIELD_CHARS: usize = 64;

/// An order's status as the API tells it: `{ "id": "42", "status": "shipped", "eta": "..." }`.
/// Other fields of the answer are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OrderStatus {
    /// The order number.
    pub id: String,
    /// Its state, e.g. "processing", "shipped", "delivered", "cancelled" (any text the API
    /// uses; [`crate::reply_for`] words the known ones).
    pub status: String,
    /// When it is expected to arrive, as the API words it (a date, "tomorrow", ...), if known.
    #[serde(default)]
    pub eta: Option<String>,
}

impl OrderStatus {
    /// An order status.
    pub fn new(id: impl Into<String>, status: impl Into<String>, eta: Option<String>) -> Self {
        Self {
            id: id.into(),
            status: status.into(),
            eta,
        }
    }
}

/// Why an order's status could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The order number is not one the API could know (checked before asking).
    #[error(
        "{0:?} is not an order number (1 to {MAX_ORDER_ID_CHARS} letters, digits, '-' or '_', with a digit)"
    )]
    InvalidOrderId(String),
    /// The base URL given to [`OrderApi::new`] cannot be used.
    #[error("the order API URL {url:?} cannot be used: {reason}")]
    BaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API does not know this order (404).
    #[error("order {0} is unknown to the order API")]
    UnknownOrder(String),
    /// The API failed (5xx): trying again later may help.
    #[error("the order API failed with HTTP {status}; try again later")]
    Server {
        /// The HTTP status code.
        status: u16,
    },
    /// The API refused the request with another status (4xx other than 404, 3xx).
    #[error("the order API refused the request with HTTP {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// No whole answer within the timeout.
    #[error("the order API did not answer within {0:?}")]
    Timeout(Duration),
    /// The API could not be reached (connection refused, DNS, ...).
    #[error("cannot reach the order API: {0}")]
    Connect(#[source] reqwest::Error),
    /// The request failed on the way (e.g. the connection was reset).
    #[error("the request to the order API failed: {0}")]
    Http(#[source] reqwest::Error),
    /// The answer is larger than the limit ([`OrderApi::with_max_body`]).
    #[error("the order API's answer is larger than {max} bytes")]
    TooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// The answer is not a valid order status.
    #[error("the order API's answer is not a valid order status: {0}")]
    Malformed(String),
}

impl ApiError {
    /// Whether asking again later may succeed: server errors (5xx), 408 and 429, timeouts,
    /// connection failures and broken transfers.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Server { .. } | Self::Timeout(_) | Self::Connect(_) => true,
            Self::Status { status } => *status == 408 || *status == 429,
            Self::Http(e) => !e.is_builder(),
            Self::InvalidOrderId(_)
            | Self::BaseUrl { .. }
            | Self::UnknownOrder(_)
            | Self::TooLarge { .. }
            | Self::Malformed(_) => false,
        }
    }

    fn from_reqwest(e: reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            Self::Timeout(timeout)
        } else if e.is_connect() {
            Self::Connect(e)
        } else {
            Self::Http(e)
        }
    }
}

/// A client of the business's order API.
///
/// It asks `GET {base_url}/orders/{id}` and expects `200` with a JSON [`OrderStatus`], `404`
/// for an unknown order. Each call is bounded by a timeout (whole answer, body included) and a
/// body size cap.
#[derive(Clone, Debug)]
pub struct OrderApi {
    base: Url,
    http: reqwest::Client,
    timeout: Duration,
    max_body: usize,
}

impl OrderApi {
    /// A client of the API at `base_url` (http or https; a path prefix is kept, e.g.
    /// `https://shop.example/api` asks `https://shop.example/api/orders/42`), using `http`
    /// (its proxies, TLS roots and pool). Defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_BODY`].
    pub fn new(base_url: &str, http: reqwest::Client) -> Result<Self, ApiError> {
        let bad = |reason: &str| ApiError::BaseUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(bad("it must name a host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("it must not have a query or a fragment"));
        }
        Ok(Self {
            base,
            http,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Sets how long a call waits for the whole answer.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest answer body read, in bytes.
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The base URL.
    #[must_use]
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The status of order `order`: `GET {base}/orders/{order}`.
    ///
    /// Errors: [`ApiError::InvalidOrderId`] before asking; [`ApiError::UnknownOrder`] on 404;
    /// [`ApiError::Server`] on 5xx (transient); [`ApiError::Timeout`]; [`ApiError::TooLarge`];
    /// [`ApiError::Malformed`] if the answer is not an order status for this order.
    pub async fn status(&self, order: &str) -> Result<OrderStatus, ApiError> {
        if !is_valid_order_id(order) {
            return Err(ApiError::InvalidOrderId(order.to_owned()));
        }
        let url = self.url(order)?;
        tokio::time::timeout(self.timeout, self.fetch(url, order))
            .await
            .map_err(|_elapsed| ApiError::Timeout(self.timeout))?
    }

    fn url(&self, order: &str) -> Result<Url, ApiError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ApiError::BaseUrl {
                url: self.base.to_string(),
                reason: "it cannot have a path".to_owned(),
            })?
            .pop_if_empty()
            .push("orders")
            .push(order);
        Ok(url)
    }

    async fn fetch(&self, url: Url, order: &str) -> Result<OrderStatus, ApiError> {
        let err = |e| ApiError::from_reqwest(e, self.timeout);
        let mut response = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(err)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(ApiError::UnknownOrder(order.to_owned()));
        }
        if status.is_server_error() {
            return Err(ApiError::Server {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                status: status.as_u16(),
            });
        }
        let too_large = ApiError::TooLarge { max: self.max_body };
        if response
            .content_length()
            .is_some_and(|len| usize::try_from(len).map_or(true, |len| len > self.max_body))
        {
            return Err(too_large);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(err)? {
            if body.len().saturating_add(chunk.len()) > self.max_body {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body, order)
    }
}

/// Parses and checks an answer body for `order`.
fn parse(body: &[u8], order: &str) -> Result<OrderStatus, ApiError> {
    let status: OrderStatus =
        serde_json::from_slice(body).map_err(|e| ApiError::Malformed(e.to_string()))?;
    if status.id != order {
        return Err(ApiError::Malformed(format!(
            "asked for order {order}, the answer is about order {:?}",
            status.id
        )));
    }
    let fields = [
        ("status", Some(&status.status)),
        ("eta", status.eta.as_ref()),
    ];
    for (name, value) in fields {
        if let Some(value) = value
            && (value.trim().is_empty()
                || value.chars().count() > MAX_FIELD_CHARS
                || value.chars().any(char::is_control))
        {
            return Err(ApiError::Malformed(format!(
                "{name} must be 1 to {MAX_FIELD_CHARS} characters without control characters"
            )));
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> Result<OrderApi, ApiError> {
        OrderApi::new(base, reqwest::Client::new())
    }

    #[test]
    fn urls_keep_the_base_path_and_escape_nothing_unexpected() {
        let a = api("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            a.url("42").unwrap().as_str(),
            "http://127.0.0.1:8080/orders/42"
        );
        let a = api("https://shop.example/api/v2/").unwrap();
        assert_eq!(
            a.url("A-1234").unwrap().as_str(),
            "https://shop.example/api/v2/orders/A-1234"
        );
    }

    #[test]
    fn unusable_base_urls_are_refused() {
        for base in [
            "not a url",
            "mailto:orders@shop.example",
            "ftp://shop.example",
            "http://shop.example/api?key=1",
        ] {
            assert!(matches!(api(base), Err(ApiError::BaseUrl { .. })), "{base}");
        }
    }

    #[test]
    fn answers_are_checked() {
        let ok = parse(
            br#"{"id":"42","status":"shipped","eta":"tomorrow","x":1}"#,
            "42",
        );
        assert_eq!(
            ok.unwrap(),
            OrderStatus::new("42", "shipped", Some("tomorrow".into()))
        );
        let no_eta = parse(br#"{"id":"42","status":"delivered"}"#, "42").unwrap();
        assert_eq!(no_eta.eta, None);
        for body in [
            &br#"{"id":"43","status":"shipped"}"#[..],
            br#"{"id":"42","status":""}"#,
            br#"{"id":"42","status":"a\u0007b"}"#,
            br#"{"id":"42"}"#,
            b"[]",
            b"",
        ] {
            assert!(
                matches!(parse(body, "42"), Err(ApiError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let long = format!(r#"{{"id":"42","status":"{}"}}"#, "x".repeat(65));
        assert!(matches!(
            parse(long.as_bytes(), "42"),
            Err(ApiError::Malformed(_))
        ));
    }

    #[test]
    fn transient_errors_are_told_apart() {
        assert!(ApiError::Server { status: 503 }.is_transient());
        assert!(ApiError::Timeout(DEFAULT_TIMEOUT).is_transient());
        assert!(ApiError::Status { status: 429 }.is_transient());
        assert!(!ApiError::Status { status: 403 }.is_transient());
        assert!(!ApiError::UnknownOrder("42".into()).is_transient());
        assert!(!ApiError::Malformed(String::new()).is_transient());
        assert!(!ApiError::TooLarge { max: 1 }.is_transient());
    }
}
