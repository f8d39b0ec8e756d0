//! The customer-facing wording of an order's status.

use crate::OrderStatus;

/// The reply telling the customer an order's status, e.g. "Order 42 is on its way; expected
/// tomorrow." Known statuses ("processing", "shipped", "in transit", "out for delivery",
/// "delivered", "cancelled", ..., case, `_` and `-` ignored) are put in words; others are quoted
/// as the API gave them. The expected arrival is added unless the order is delivered or
/// cancelled.
///
/// ```
/// use switchboard_bot_order_status::{OrderStatus, reply_for};
///
/// let status = OrderStatus::new("42", "shipped", Some("tomorrow".to_owned()));
/// assert_eq!(reply_for(&status), "Order 42 is on its way; expected tomorrow.");
/// ```
#[must_use]
pub fn reply_for(order: &OrderStatus) -> String {
    let key: String = order
        .status
        .trim()
        .chars()
        .map(|c| match c {
            '_' | '-' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let (phrase, final_state) = match key.as_str() {
        "new" | "received" | "pending" | "confirmed" | "paid" => {
            ("has been received and is being prepared".to_owned(), false)
        }
        "processing" | "preparing" | "packed" => ("is being prepared".to_owned(), false),
        "shipped" | "dispatched" | "in transit" | "on its way" => {
            ("is on its way".to_owned(), false)
        }
        "out for delivery" => ("is out for delivery".to_owned(), false),
        "delivered" => ("has been delivered".to_owned(), true),
        "cancelled" | "canceled" => ("was cancelled".to_owned(), true),
        "returned" | "refunded" => (format!("was {key}"), true),
        _ => (format!("has the status \"{}\"", order.status.trim()), false),
    };
    match order.eta.as_deref().map(str::trim) {
        Some(eta) if !final_state && !eta.is_empty() => {
            format!("Order {} {phrase}; expected {eta}.", order.id)
        }
        _ => format!("Order {} {phrase}.", order.id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: &str, eta: Option<&str>) -> String {
        reply_for(&OrderStatus::new("42", status, eta.map(str::to_owned)))
    }

    #[test]
    fn known_statuses_are_put_in_words_with_the_eta() {
        assert_eq!(
            reply("shipped", Some("2026-11-25")),
            "Order 42 is on its way; expected 2026-11-25."
        );
        assert_eq!(
            reply("IN_TRANSIT", Some("tomorrow")),
            "Order 42 is on its way; expected tomorrow."
        );
        assert_eq!(reply("processing", None), "Order 42 is being prepared.");
        assert_eq!(
            reply("out-for-delivery", Some("today")),
            "Order 42 is out for delivery; expected today."
        );
    }

    #[test]
    fn final_states_have_no_eta() {
        assert_eq!(
            reply("Delivered", Some("yesterday")),
            "Order 42 has been delivered."
        );
        assert_eq!(reply("canceled", Some("never")), "Order 42 was cancelled.");
        assert_eq!(reply("refunded", None), "Order 42 was refunded.");
    }

    #[test]
    fn unknown_statuses_are_quoted() {
        assert_eq!(
            reply("held at customs", Some(" ")),
            "Order 42 has the status \"held at customs\"."
        );
    }
}
