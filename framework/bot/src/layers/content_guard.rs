//! [`ContentGuardLayer`]: refuses outgoing text that is too long or contains a forbidden
//! pattern, before it is sealed.
//!
//! Patterns are plain substrings compared case-insensitively (no regular expressions). Only
//! text the customer reads is checked (`Content::Text` and `Content::Reply`); receipts, typing
//! and handoff requests pass unchanged. A refusal is
//! `BotError::Refused { layer: "content_guard", .. }`, and the inner service is not called.

use std::task::{Context, Poll};

use switchboard_protocol::Content;
use tower::{Layer, Service};

use super::{BoxResponseFuture, OutgoingContent};
use crate::BotError;

/// The future of [`ContentGuard`].
pub type ResponseFuture<T> = BoxResponseFuture<T, BotError>;

/// The layer name in [`BotError::Refused`].
pub const LAYER_NAME: &str = "content_guard";

/// Applies a [`ContentGuard`] to an outbound service (see the [module docs](self)).
#[derive(Clone, Debug, Default)]
pub struct ContentGuardLayer {
    max_chars: Option<usize>,
    /// Lowercased, never empty.
    forbidden: Vec<String>,
}

impl ContentGuardLayer {
    /// A guard that lets everything pass until limits are added.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses text longer than `n` characters (Unicode scalar values).
    #[must_use]
    pub fn max_chars(mut self, n: usize) -> Self {
        self.max_chars = Some(n);
        self
    }

    /// Refuses text containing `pattern`, ignoring case. An empty pattern is ignored.
    #[must_use]
    pub fn forbid(mut self, pattern: impl AsRef<str>) -> Self {
        let pattern = pattern.as_ref().to_lowercase();
        if !pattern.is_empty() {
            self.forbidden.push(pattern);
        }
        self
    }

    /// Refuses text containing any of `patterns`, ignoring case.
    #[must_use]
    pub fn forbid_all<I>(self, patterns: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        patterns.into_iter().fold(self, Self::forbid)
    }

    /// Why `content` is refused, if it is.
    fn check(&self, content: &Content) -> Result<(), String> {
        let text = match content {
            Content::Text { text } | Content::Reply { text } => text,
            _ => return Ok(()),
        };
        if let Some(max) = self.max_chars {
            let chars = text.chars().count();
            if chars > max {
                return Err(format!(
                    "text of {chars} characters exceeds the limit of {max}"
                ));
            }
        }
        if !self.forbidden.is_empty() {
            let lower = text.to_lowercase();
            if let Some(pattern) = self.forbidden.iter().find(|p| lower.contains(p.as_str())) {
                return Err(format!("text contains the forbidden pattern {pattern:?}"));
            }
        }
        Ok(())
    }
}

impl<S> Layer<S> for ContentGuardLayer {
    type Service = ContentGuard<S>;

    fn layer(&self, inner: S) -> ContentGuard<S> {
        ContentGuard {
            inner,
            config: self.clone(),
        }
    }
}

/// Refuses outgoing text over the limits of its [`ContentGuardLayer`].
#[derive(Clone, Debug)]
pub struct ContentGuard<S> {
    inner: S,
    config: ContentGuardLayer,
}

impl<S> ContentGuard<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for ContentGuard<S>
where
    R: OutgoingContent,
    S: Service<R>,
    S::Error: Into<BotError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BotError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BotError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        if let Err(reason) = self.config.check(req.content()) {
            tracing::info!(thread = %req.thread(), %reason, "content guard refused a message");
            return Box::pin(std::future::ready(Err(BotError::Refused {
                layer: LAYER_NAME,
                reason,
            })));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use switchboard_protocol::{HandoffTarget, MessageId, ReceiptKind};
    use tower::ServiceExt;

    use super::*;
    use crate::layers::testing::{Mock, Req};

    fn guard() -> ContentGuardLayer {
        ContentGuardLayer::new()
            .max_chars(10)
            .forbid("Password")
            .forbid_all(["iban", ""])
    }

    async fn check(content: Content) -> (Result<Req, BotError>, usize) {
        let mock = Mock::echo();
        let result = guard()
            .layer(mock.clone())
            .oneshot(Req::outgoing(1, content))
            .await;
        (result, mock.calls())
    }

    fn assert_refused(result: &Result<Req, BotError>, because: &str) {
        match result {
            Err(BotError::Refused { layer, reason }) => {
                assert_eq!(*layer, "content_guard");
                assert!(reason.contains(because), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn content_guard_refuses_text_over_the_limit() {
        let (result, calls) = check(Content::text("eleven char")).await;
        assert_refused(&result, "11 characters");
        assert_eq!(
            calls, 0,
            "a refused message never reaches the inner service"
        );
        // Characters, not bytes: ten 2-byte characters pass.
        let (result, calls) = check(Content::text("éééééééééé")).await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn content_guard_refuses_forbidden_patterns_ignoring_case() {
        let (result, _) = check(Content::text("PASSWORD?")).await;
        assert_refused(&result, "password");
        let (result, _) = check(Content::Reply {
            text: "your IBan".to_owned(),
        })
        .await;
        assert_refused(&result, "iban");
    }

    #[tokio::test]
    async fn content_guard_passes_good_text_unchanged() {
        let (result, calls) = check(Content::text("Order 42")).await;
        assert_eq!(result.unwrap().content, Content::text("Order 42"));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn content_guard_passes_content_without_customer_text() {
        let receipts = Content::Receipt {
            kind: ReceiptKind::Read,
            messages: vec![MessageId::from_bytes([1; 16])],
        };
        let handoff = Content::HandoffRequest {
            target: HandoffTarget::AnyHuman,
            note: "customer asks for a password reset, a long note".to_owned(),
        };
        for content in [receipts, Content::Typing { active: true }, handoff] {
            let (result, calls) = check(content.clone()).await;
            assert_eq!(result.unwrap().content, content);
            assert_eq!(calls, 1);
        }
    }

    #[tokio::test]
    async fn content_guard_without_limits_passes_everything() {
        let mock = Mock::echo();
        let long = "password ".repeat(1000);
        let result = ContentGuardLayer::new()
            .layer(mock.clone())
            .oneshot(Req::outgoing(1, Content::text(long)))
            .await;
        assert!(result.is_ok());
    }
}
