//! The gate: the controller's decision, published in one atomic word.
//!
//! Layout: bits 0–1 the state, bits 2–17 the half-open probe slots left,
//! bits 18–63 the epoch (bumped on every transition). A closed gate costs
//! the request path one atomic load; a half-open one a compare-and-swap to
//! take a probe slot, so probe admission needs no lock and no message.

use std::sync::atomic::{AtomicU64, Ordering};

use super::CircuitState;

const STATE_BITS: u32 = 2;
const PROBE_BITS: u32 = 16;
const PROBE_SHIFT: u32 = STATE_BITS;
const EPOCH_SHIFT: u32 = STATE_BITS + PROBE_BITS;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;
const PROBE_MASK: u64 = (1 << PROBE_BITS) - 1;

/// A decoded gate word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct GateWord {
    pub(super) state: CircuitState,
    pub(super) probes: u32,
    pub(super) epoch: u64,
}

impl GateWord {
    fn encode(self) -> u64 {
        (self.epoch << EPOCH_SHIFT) | ((u64::from(self.probes) & PROBE_MASK) << PROBE_SHIFT) | (self.state as u64)
    }

    fn decode(word: u64) -> Self {
        Self {
            state: CircuitState::from_u8((word & STATE_MASK) as u8),
            probes: ((word >> PROBE_SHIFT) & PROBE_MASK) as u32,
            epoch: word >> EPOCH_SHIFT,
        }
    }
}

/// What a request gets from the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// Pass, as an ordinary request of `epoch`.
    Pass { epoch: u64 },
    /// Pass, as a half-open probe of `epoch`.
    Probe { epoch: u64 },
    /// Refused while in `state`.
    Refused { state: CircuitState },
}

/// The shared gate word. Only the controller publishes new words; requests
/// only take probe slots.
#[derive(Debug)]
pub(super) struct Gate {
    word: AtomicU64,
}

impl Gate {
    pub(super) fn new() -> Self {
        let closed = GateWord {
            state: CircuitState::Closed,
            probes: 0,
            epoch: 0,
        };
        Self {
            word: AtomicU64::new(closed.encode()),
        }
    }

    pub(super) fn load(&self) -> GateWord {
        GateWord::decode(self.word.load(Ordering::Acquire))
    }

    pub(super) fn publish(&self, word: GateWord) {
        self.word.store(word.encode(), Ordering::Release);
    }

    /// Decides one request.
    pub(super) fn admit(&self) -> Admission {
        let mut current = self.word.load(Ordering::Acquire);
        loop {
            let word = GateWord::decode(current);
            match word.state {
                CircuitState::Closed => return Admission::Pass { epoch: word.epoch },
                CircuitState::Open => return Admission::Refused { state: word.state },
                CircuitState::HalfOpen if word.probes == 0 => {
                    return Admission::Refused { state: word.state };
                }
                CircuitState::HalfOpen => {}
            }
            let taken = GateWord {
                probes: word.probes - 1,
                ..word
            };
            match self
                .word
                .compare_exchange_weak(current, taken.encode(), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Admission::Probe { epoch: word.epoch },
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives `n` probe slots back to the half-open period `epoch`, if it is
    /// still current.
    pub(super) fn return_probes(&self, epoch: u64, n: u32) {
        let _ = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            let word = GateWord::decode(current);
            let current_period = word.state == CircuitState::HalfOpen && word.epoch == epoch;
            current_period.then(|| {
                GateWord {
                    probes: word.probes.saturating_add(n).min(PROBE_MASK as u32),
                    ..word
                }
                .encode()
            })
        });
    }
}
