//! Shared helpers for the end-to-end scenarios in `scenarios/`.
//!
//! [`Wire`] stands in for the network: every value a device sends is encoded to JSON and decoded
//! by the receiver, as it will be when the relay carries it.

use switchboard_protocol::{WireError, WireType, decode, encode};

/// Counts what crossed the "wire" between devices.
#[derive(Debug, Default)]
pub struct Wire {
    /// Values sent.
    pub values: usize,
    /// Bytes sent.
    pub bytes: usize,
}

impl Wire {
    /// Sends `value` across: encode, count, decode.
    ///
    /// # Errors
    /// Any [`WireError`] from encoding or decoding.
    pub fn carry<T: WireType>(&mut self, value: &T) -> Result<T, WireError> {
        let bytes = encode(value)?;
        self.values += 1;
        self.bytes += bytes.len();
        decode(&bytes)
    }
}
