//! Randomness for key generation, HPKE encapsulation and fresh epoch secrets.
//!
//! [`Csprng`] is a small deterministic random bit generator (SHA-256 in counter mode over a
//! 32-byte seed). [`Csprng::from_os`] seeds it from the operating system, reporting failure as an
//! error instead of panicking; [`Csprng::from_seed`] exists for reproducible test vectors and
//! benchmarks and must not be used for real keys.

use sha2::{Digest as _, Sha256};
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
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Csprng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl std::fmt::Debug for Csprng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csprng { .. }")
    }
}

impl Csprng {
    /// Seeds a generator from the operating system's random source.
    ///
    /// # Errors
    /// [`RandomnessError`] if the operating system cannot provide randomness.
    pub fn from_os() -> Result<Self, RandomnessError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| RandomnessError {
            detail: e.to_string(),
        })?;
        let rng = Self::from_seed(seed);
        seed.zeroize();
        Ok(rng)
    }

    /// A generator with a fixed seed: the same seed gives the same output. For test vectors and
    /// benchmarks only; real keys come from [`Csprng::from_os`].
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed,
            counter: 0,
            block: [0u8; 32],
            used: 32,
        }
    }

    /// Fills `dest` with random bytes.
    pub fn fill(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                self.refill();
            }
            // `used < 32` here, so the index is in bounds; `get` keeps clippy's lint honest.
            *byte = self.block.get(self.used).copied().unwrap_or_default();
            self.used += 1;
        }
    }

    /// Returns `N` random bytes.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }

    fn refill(&mut self) {
        let mut h = Sha256::new();
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
    use super::Csprng;

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
    fn stream_does_not_repeat_across_blocks() {
        let mut a = Csprng::from_seed([1; 32]);
        let first = a.array::<32>();
        let second = a.array::<32>();
        assert_ne!(first, second);
    }
}
