//! Randomness for key generation, HPKE encapsulation, fresh epoch secrets and message reuse
//! guards.
//!
//! [`Csprng::from_os`] reads the operating system's random source (`getrandom`) for **every**
//! request: no secret is ever computed from a seed that stays in memory, so a memory capture does
//! not let anyone recompute past epoch secrets or HPKE ephemerals, and a forked process does not
//! repeat its parent's output.
//!
//! `Csprng::from_seed` (SHA-256 in counter mode over a fixed seed) exists only with the
//! `test-util` feature, for reproducible test vectors and benchmarks; it must never produce real
//! keys.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::RandomnessError;

/// A cryptographically secure random generator owned by the caller.
///
/// ```
/// use switchboard_protocol::Csprng;
/// let mut rng = Csprng::from_os()?;
/// let a = rng.array::<16>();
/// let b = rng.array::<16>();
/// assert_ne!(a, b);
/// # Ok::<(), switchboard_protocol::RandomnessError>(())
/// ```
pub struct Csprng {
    source: Source,
    /// Test vectors only: every `fill` request in order, when recording.
    #[cfg(any(test, feature = "test-util"))]
    draws: Option<Vec<Vec<u8>>>,
}

enum Source {
    /// Every request is read from the operating system. `fallback` is used only if the
    /// operating system fails after [`Csprng::from_os`] succeeded (which Linux, macOS and
    /// Windows do not do once their pool is initialised): a key-erasing generator seeded from
    /// the operating system when the `Csprng` was made, so that `fill` never panics.
    Os { fallback: Ratchet },
    /// A fixed seed: test vectors and benchmarks only.
    #[cfg(any(test, feature = "test-util"))]
    Seeded(Seeded),
    /// Given bytes, served in order (zeros once they run out): test vectors only.
    #[cfg(any(test, feature = "test-util"))]
    Replay { bytes: Vec<u8>, at: usize },
}

impl std::fmt::Debug for Csprng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            Source::Os { .. } => f.write_str("Csprng { source: os }"),
            #[cfg(any(test, feature = "test-util"))]
            Source::Seeded(_) => f.write_str("Csprng { source: fixed seed (tests only) }"),
            #[cfg(any(test, feature = "test-util"))]
            Source::Replay { .. } => f.write_str("Csprng { source: given bytes (tests only) }"),
        }
    }
}

fn os_fill(dest: &mut [u8]) -> Result<(), RandomnessError> {
    getrandom::fill(dest).map_err(|e| RandomnessError {
        detail: e.to_string(),
    })
}

impl Csprng {
    /// A generator that reads the operating system's random source for every request.
    ///
    /// # Errors
    /// [`RandomnessError`] if the operating system cannot provide randomness.
    pub fn from_os() -> Result<Self, RandomnessError> {
        let mut key = [0u8; 32];
        os_fill(&mut key)?;
        let fallback = Ratchet { key };
        key.zeroize();
        Ok(Self {
            source: Source::Os { fallback },
            #[cfg(any(test, feature = "test-util"))]
            draws: None,
        })
    }

    /// A generator with a fixed seed: the same seed gives the same output. For test vectors and
    /// benchmarks only (the `test-util` feature); real keys come from [`Csprng::from_os`].
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            source: Source::Seeded(Seeded {
                seed,
                counter: 0,
                block: [0u8; 32],
                used: 32,
            }),
            draws: None,
        }
    }

    /// Like [`Csprng::from_seed`], and records every request (its bytes, in order) so that test
    /// vectors can give each random value explicitly; [`Csprng::take_draws`] returns them. For
    /// test vectors only (the `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn recording(seed: [u8; 32]) -> Self {
        let mut rng = Self::from_seed(seed);
        rng.draws = Some(Vec::new());
        rng
    }

    /// A generator that returns `bytes` in order, then zeros: to reproduce a value from the
    /// random values a test vector lists (`rng_draws`, concatenated). For test vectors only (the
    /// `test-util` feature); [`Csprng::unused`] says how many given bytes were not drawn.
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn replaying(bytes: Vec<u8>) -> Self {
        Self {
            source: Source::Replay { bytes, at: 0 },
            draws: None,
        }
    }

    /// How many of the bytes given to [`Csprng::replaying`] were not drawn yet (0 for other
    /// generators). For test vectors only.
    #[cfg(any(test, feature = "test-util"))]
    #[must_use]
    pub fn unused(&self) -> usize {
        match &self.source {
            Source::Replay { bytes, at } => bytes.len().saturating_sub(*at),
            _ => 0,
        }
    }

    /// The requests recorded since the last call (empty unless made by [`Csprng::recording`]),
    /// each the bytes one `fill` returned, in order. For test vectors only.
    #[cfg(any(test, feature = "test-util"))]
    pub fn take_draws(&mut self) -> Vec<Vec<u8>> {
        self.draws.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&mut self, dest: &mut [u8]) {
        match &mut self.source {
            Source::Os { fallback } => {
                if os_fill(dest).is_err() {
                    fallback.fill(dest);
                }
            }
            #[cfg(any(test, feature = "test-util"))]
            Source::Seeded(seeded) => seeded.fill(dest),
            #[cfg(any(test, feature = "test-util"))]
            Source::Replay { bytes, at } => {
                for d in dest.iter_mut() {
                    *d = bytes.get(*at).copied().unwrap_or(0);
                    *at = at.saturating_add(1);
                }
            }
        }
        #[cfg(any(test, feature = "test-util"))]
        if let Some(draws) = &mut self.draws {
            draws.push(dest.to_vec());
        }
    }

    /// Returns `N` random bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }
}

/// A "fast key erasure" generator: each output is derived from the current key, which is then
/// replaced by a one-way function of itself, so a later capture of the key does not reveal
/// earlier outputs.
#[derive(Zeroize, ZeroizeOnDrop)]
struct Ratchet {
    key: [u8; 32],
}

impl Ratchet {
    fn block(&self, label: &[u8], counter: u64) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(label);
        h.update(self.key);
        h.update(counter.to_be_bytes());
        h.finalize().into()
    }

    fn fill(&mut self, dest: &mut [u8]) {
        for (counter, chunk) in (0u64..).zip(dest.chunks_mut(32)) {
            let mut block = self.block(b"switchboard/1 rng output", counter);
            for (d, b) in chunk.iter_mut().zip(block.iter()) {
                *d = *b;
            }
            block.zeroize();
        }
        let next = self.block(b"switchboard/1 rng next key", 0);
        self.key = next;
    }
}

/// SHA-256 in counter mode over a fixed seed (test vectors only).
#[cfg(any(test, feature = "test-util"))]
#[derive(Zeroize, ZeroizeOnDrop)]
struct Seeded {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

#[cfg(any(test, feature = "test-util"))]
impl Seeded {
    fn fill(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                self.refill();
            }
            // `used < 32` here, so the index is in bounds; `get` keeps clippy's lint honest.
            *byte = self.block.get(self.used).copied().unwrap_or_default();
            self.used += 1;
        }
    }

    fn refill(&mut self) {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"switchboard/1 csprng");
        h.update(self.seed);
        h.update(self.counter.to_be_bytes());
        self.block.copy_from_slice(&h.finalize());
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl rand_core::TryRng for Csprng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(u32::from_le_bytes(self.array()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(u64::from_le_bytes(self.array()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for Csprng {}

#[cfg(test)]
mod tests {
    use super::{Csprng, Ratchet, Source};

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let mut a = Csprng::from_seed([7; 32]);
        let mut b = Csprng::from_seed([7; 32]);
        let mut c = Csprng::from_seed([8; 32]);
        let (x, y, z) = (a.array::<100>(), b.array::<100>(), c.array::<100>());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn a_replaying_generator_returns_the_given_bytes_then_zeros() {
        let mut rng = Csprng::replaying(vec![1, 2, 3]);
        assert_eq!(rng.unused(), 3);
        assert_eq!(rng.array::<2>(), [1, 2]);
        assert_eq!(rng.array::<3>(), [3, 0, 0]);
        assert_eq!(rng.unused(), 0);
    }

    #[test]
    fn a_recording_generator_returns_each_request_in_order_and_the_same_stream() {
        let mut plain = Csprng::from_seed([9; 32]);
        let mut rec = Csprng::recording([9; 32]);
        let (a, b) = (rec.array::<16>(), rec.array::<40>());
        let both = plain.array::<56>();
        assert_eq!(rec.take_draws(), vec![a.to_vec(), b.to_vec()]);
        assert_eq!(&both[..16], &a);
        assert_eq!(&both[16..], &b);
        assert!(rec.take_draws().is_empty(), "taken draws are cleared");
    }

    #[test]
    fn stream_does_not_repeat_across_blocks() {
        let mut a = Csprng::from_seed([1; 32]);
        let first = a.array::<32>();
        let second = a.array::<32>();
        assert_ne!(first, second);
    }

    /// The attack of issue 8 item 7: with the old generator, whoever captured the process's
    /// memory (the generator's seed and counter) recomputed every later secret, and a forked
    /// process (a copy of the generator) produced the same secrets as its parent. A generator
    /// from the OS keeps no state that determines its output.
    #[test]
    fn a_copy_of_an_os_generator_does_not_predict_its_output() {
        let mut rng = Csprng::from_os().unwrap();
        // What a memory capture (or a fork) gets: the generator's whole state.
        let mut copy = match &rng.source {
            Source::Os { fallback } => Csprng {
                source: Source::Os {
                    fallback: Ratchet { key: fallback.key },
                },
                draws: None,
            },
            Source::Seeded(_) | Source::Replay { .. } => panic!("from_os must not be seeded"),
        };
        let secret = rng.array::<32>();
        let predicted = copy.array::<32>();
        assert_ne!(
            secret, predicted,
            "the copied state reproduced the next secret"
        );
    }

    #[test]
    fn the_fallback_erases_its_key_after_every_output() {
        let mut ratchet = Ratchet { key: [3; 32] };
        let before = ratchet.key;
        let mut out = [0u8; 40];
        ratchet.fill(&mut out);
        assert_ne!(ratchet.key, before);
        let mut again = Ratchet { key: before };
        let mut out2 = [0u8; 40];
        again.fill(&mut out2);
        assert_eq!(out, out2, "deterministic in its key");
        assert_ne!(out[..32], out[8..40], "blocks differ");
    }
}
