//! Rate-limited counts per agent key, for naming the key in a
//! recommendation. Bounded: two 10-minute generations of at most 32 keys.

use std::sync::Arc;

/// Rate-limited counts per agent key over two 10-minute generations, at
/// most 32 keys each (the rest are counted as "other").
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyTally {
    current: Vec<(Arc<str>, u64)>,
    previous: Vec<(Arc<str>, u64)>,
    generation: u32,
}

const TALLY_KEYS: usize = 32;

impl KeyTally {
    pub(crate) fn add(&mut self, now: u32, keys: &[(Arc<str>, u32)]) {
        if now / 600 != self.generation {
            self.generation = now / 600;
            self.previous = std::mem::take(&mut self.current);
        }
        for (k, n) in keys {
            let n = u64::from(*n);
            match self.current.iter().position(|(c, _)| c == k) {
                Some(i) => self.current[i].1 += n,
                None if self.current.len() < TALLY_KEYS => self.current.push((k.clone(), n)),
                None => {}
            }
        }
    }

    /// The key with most rate-limited requests, its count and the count of
    /// all reported keys.
    pub(crate) fn top(&self) -> Option<(Arc<str>, u64, u64)> {
        let mut all: Vec<(Arc<str>, u64)> = self.previous.clone();
        for (k, n) in &self.current {
            match all.iter_mut().find(|(c, _)| c == k) {
                Some((_, c)) => *c += n,
                None => all.push((k.clone(), *n)),
            }
        }
        let total = all.iter().map(|(_, n)| n).sum();
        all.into_iter().max_by_key(|(_, n)| *n).map(|(k, n)| (k, n, total))
    }
}
