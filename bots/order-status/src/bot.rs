//! The order-status bot as a [`Bot`]: it answers the question that routed the thread and each
//! later one from the order API, asks for the order number when a question about an order has
//! none, and hands anything else to a team of humans.

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

use crate::{ApiError, OrderApi, order_id, reply_for};

/// What the bot asks when a message about an order has no order number.
pub const ASK_FOR_NUMBER: &str =
    "Could you tell me your order number? For example: \"where is order 42?\"";

/// What the bot says before it hands a thread on.
pub const HANDING_OFF: &str = "Let me get a colleague who can help with that.";

/// The team the bot hands off to unless told otherwise.
pub const DEFAULT_HANDOFF_TEAM: &str = "billing";

/// Answers order-status questions from the order API; hands anything else to a team.
#[derive(Debug)]
pub struct OrderBot {
    api: OrderApi,
    handoff_team: String,
}

/// What the bot keeps per thread: the order last asked about (named in handoff notes).
#[derive(Debug, Default, Serialize, Deserialize)]
struct OrderThread {
    last_order: Option<String>,
}

impl OrderBot {
    /// A bot asking `api`, handing off to [`DEFAULT_HANDOFF_TEAM`].
    #[must_use]
    pub fn new(api: OrderApi) -> Self {
        Self {
            api,
            handoff_team: DEFAULT_HANDOFF_TEAM.to_owned(),
        }
    }

    /// Hands off to `team` instead.
    #[must_use]
    pub fn handoff_team(mut self, team: impl Into<String>) -> Self {
        self.handoff_team = team.into();
        self
    }

    async fn answer(&self, cx: &mut Ctx, text: &str) -> Result<(), BotError> {
        if !cx.has_floor() || text.trim().is_empty() {
            return Ok(());
        }
        let mut thread: OrderThread = cx.state()?;
        let Some(id) = order_id(text) else {
            if mentions_an_order(text) {
                cx.reply(Content::text(ASK_FOR_NUMBER)).await?;
                return Ok(());
            }
            let about = thread
                .last_order
                .as_deref()
                .map(|id| format!(" (order {id})"))
                .unwrap_or_default();
            let note = format!("not an order-status question{about}: {text:.200}");
            return self.hand_off(cx, note).await;
        };
        thread.last_order = Some(id.clone());
        cx.set_state(&thread)?;
        match self.api.status(&id).await {
            Ok(status) => cx.reply(Content::text(reply_for(&status))).await.map(drop),
            Err(ApiError::UnknownOrder(_)) => cx
                .reply(Content::text(format!(
                    "I cannot find order {id}. Could you check the number?"
                )))
                .await
                .map(drop),
            Err(e) => match api_failure(e) {
                Failure::Retry(e) => Err(e),
                Failure::HandOff(reason) => {
                    let note = format!("order API error for order {id}: {reason:.200}");
                    self.hand_off(cx, note).await
                }
            },
        }
    }

    async fn hand_off(&self, cx: &mut Ctx, note: String) -> Result<(), BotError> {
        cx.reply(Content::text(HANDING_OFF)).await?;
        cx.handoff(Handoff::to_team(&self.handoff_team).note(note))
            .await
    }
}

/// What to do about a failed API call.
#[derive(Debug)]
enum Failure {
    /// Fail the event transiently: the runtime tries it again later (nothing was posted).
    Retry(BotError),
    /// A final failure: hand the thread to a human, with this reason.
    HandOff(String),
}

fn api_failure(e: ApiError) -> Failure {
    if e.is_transient() {
        Failure::Retry(BotError::transient(e))
    } else {
        Failure::HandOff(e.to_string())
    }
}

/// Whether `text` is about an order ("order", "orders", "ordered" as a word).
fn mentions_an_order(text: &str) -> bool {
    text.split(|c: char| !c.is_alphanumeric())
        .any(|word| word.to_lowercase().starts_with("order"))
}

#[async_trait]
impl Bot for OrderBot {
    /// Answers the question that routed the thread (the customer's first message).
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        match history.iter().find(|m| m.is_from_customer()) {
            Some(question) => self.answer(cx, question.text()).await,
            None => Ok(()),
        }
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() {
            self.answer(cx, msg.text()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    use std::time::Duration;

    use super::*;

    #[test]
    fn transient_api_failures_retry_the_event_final_ones_hand_off() {
        for e in [
            ApiError::Server { status: 503 },
            ApiError::Timeout(Duration::from_secs(5)),
            ApiError::Status { status: 429 },
        ] {
            match api_failure(e) {
                Failure::Retry(e) => assert!(e.is_transient(), "{e}"),
                Failure::HandOff(reason) => panic!("handed off: {reason}"),
            }
        }
        for e in [
            ApiError::Malformed("no status".to_owned()),
            ApiError::TooLarge { max: 10 },
            ApiError::Status { status: 403 },
        ] {
            match api_failure(e) {
                Failure::HandOff(reason) => assert!(reason.contains("order API")),
                Failure::Retry(e) => panic!("retried: {e}"),
            }
        }
    }

    #[test]
    fn questions_about_an_order_are_told_from_others() {
        assert!(mentions_an_order("Where is my order?"));
        assert!(mentions_an_order("I ORDERED shoes"));
        assert!(!mentions_an_order("I would rather get a refund."));
        assert!(!mentions_an_order("disorder"));
    }
}
