//! The protocol's cost floor: what one answered message costs in cryptography alone, measured in
//! process on real thread states (no relay, no storage, no network). A benchmark of the whole
//! system (`switchboard bench echo`) divides its own latency by this floor.
//!
//! One answered message is four operations: the customer seals a message, the bot opens it,
//! the bot seals its answer, the customer opens that (each seal signs, each open verifies).
//! The bot's side is played by the entity's admin device, which holds the floor from the thread
//! open on: an agent's seal and open cost the same operations.

use std::time::{Duration, Instant};

use switchboard_client::now;
use switchboard_protocol::{
    CipherSuite, Content, Csprng, DeviceId, DeviceKeys, EntityId, Error, SeenWraps, ThreadState,
};

/// The floor [`crypto_floor`] measured: medians over its iterations, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct FloorReport {
    /// How many answered messages were measured.
    pub iterations: u32,
    /// Median cost of one answered message (the four operations of one iteration together).
    pub answered_us: f64,
    /// Median cost of the customer sealing its message.
    pub customer_seal_us: f64,
    /// Median cost of the bot opening it.
    pub bot_open_us: f64,
    /// Median cost of the bot sealing its answer.
    pub bot_seal_us: f64,
    /// Median cost of the customer opening the answer.
    pub customer_open_us: f64,
}

impl FloorReport {
    /// How many times the floor `measured_us` (a measured cost per answered message) is.
    #[must_use]
    pub fn ratio(&self, measured_us: f64) -> f64 {
        if self.answered_us > 0.0 {
            measured_us / self.answered_us
        } else {
            f64::INFINITY
        }
    }
}

impl std::fmt::Display for FloorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crypto floor: {:.1} µs per answered message (median of {}; seal {:.1} + open {:.1} + \
             seal {:.1} + open {:.1} µs)",
            self.answered_us,
            self.iterations,
            self.customer_seal_us,
            self.bot_open_us,
            self.bot_seal_us,
            self.customer_open_us
        )
    }
}

/// The text each side seals: about the size of a short chat message.
const TEXT: &str = "Hello, where is my order 42? It was due on Tuesday.";

/// Measures the floor over `iterations` answered messages (at least one) on one thread between
/// a fresh customer and admin, with the default cipher suite.
///
/// # Errors
/// A protocol error (no randomness from the operating system, or a bug: every operation is one
/// a correct device performs).
pub fn crypto_floor(iterations: u32) -> Result<FloorReport, Error> {
    let iterations = iterations.max(1);
    let mut rng = Csprng::from_os()?;
    let suite = CipherSuite::default();
    let customer = DeviceKeys::generate(DeviceId::random(&mut rng), suite, &mut rng);
    let bot = DeviceKeys::generate(DeviceId::random(&mut rng), suite, &mut rng);
    let entity = EntityId::new("floor")?;
    let at = now();
    let (mut customer_state, open) =
        ThreadState::open(&customer, entity.clone(), &bot.bundle(at), at, &mut rng)?;
    let mut bot_state = ThreadState::accept(&bot, &entity, &open, at, &mut SeenWraps::new())?;
    let content = Content::text(TEXT);

    let capacity = usize::try_from(iterations).unwrap_or(0);
    let mut ops: [Vec<Duration>; 4] = std::array::from_fn(|_| Vec::with_capacity(capacity));
    let mut answered = Vec::with_capacity(capacity);
    for _ in 0..iterations {
        let at = now();
        let start = Instant::now();
        let question = customer_state.seal_with(&customer, &content, None, &mut rng)?;
        let sealed = start.elapsed();
        bot_state.open_message(&question, at)?;
        let opened = start.elapsed();
        let answer = bot_state.seal_with(&bot, &content, None, &mut rng)?;
        let answered_at = start.elapsed();
        customer_state.open_message(&answer, at)?;
        let total = start.elapsed();
        let [a, b, c, d] = &mut ops;
        a.push(sealed);
        b.push(opened.saturating_sub(sealed));
        c.push(answered_at.saturating_sub(opened));
        d.push(total.saturating_sub(answered_at));
        answered.push(total);
    }
    let [a, b, c, d] = ops;
    Ok(FloorReport {
        iterations,
        answered_us: median_us(answered),
        customer_seal_us: median_us(a),
        bot_open_us: median_us(b),
        bot_seal_us: median_us(c),
        customer_open_us: median_us(d),
    })
}

/// The median of `samples`, in microseconds (0 for none).
fn median_us(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples
        .get(samples.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn measures_every_operation_of_an_answered_message() {
        let report = crypto_floor(5).unwrap();
        assert_eq!(report.iterations, 5);
        for op in [
            report.customer_seal_us,
            report.bot_open_us,
            report.bot_seal_us,
            report.customer_open_us,
        ] {
            assert!(op > 0.0, "{report}");
            assert!(op <= report.answered_us, "{report}");
        }
        assert!(report.answered_us > 0.0);
        assert!((report.ratio(report.answered_us * 3.0) - 3.0).abs() < 1e-9);
        assert!(report.to_string().contains("per answered message"));
        // Zero iterations measure one.
        assert_eq!(crypto_floor(0).unwrap().iterations, 1);
    }
}
