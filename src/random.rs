//! Random numbers from the system's source (through ring, which the TLS stack brings anyway):
//! for jitter between retries and for delimiters no input can guess.

use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};

/// A random `u64`. Should the system's source ever fail, the clock's nanoseconds stand in:
/// that costs a delimiter its unpredictability, never a result.
pub fn u64() -> u64 {
    let mut bytes = [0; 8];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64),
    }
}
