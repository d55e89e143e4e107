//! The sessions of one side by id, across its connections: the
//! upstream's outlive any one connection (that is what makes RESUME
//! possible), the gateway's keep session ids unique per client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::shared::{Shared, lock};

/// Sessions by id, across the connections of one server (or client).
#[derive(Default)]
pub(crate) struct Registry {
    map: Mutex<HashMap<u64, Arc<Shared>>>,
}

impl Registry {
    pub(crate) fn get(&self, id: u64) -> Option<Arc<Shared>> {
        lock(&self.map).get(&id).cloned()
    }

    /// Adds a session unless one with its id exists; returns that one.
    pub(crate) fn insert(&self, shared: Arc<Shared>) -> Result<(), Arc<Shared>> {
        match lock(&self.map).entry(shared.id) {
            std::collections::hash_map::Entry::Occupied(e) => Err(e.get().clone()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(shared);
                Ok(())
            }
        }
    }

    /// Adds a session in place of a parked one with its id (a takeover
    /// on the instance that parked it); returns the parked one, now out of
    /// the map, or the live one that stays.
    pub(crate) fn insert_over_parked(&self, shared: Arc<Shared>) -> Result<Option<Arc<Shared>>, Arc<Shared>> {
        loop {
            // The session lock is never taken under the map's (lock order).
            let existing = lock(&self.map).get(&shared.id).cloned();
            let Some(old) = existing else {
                match self.insert(shared.clone()) {
                    Ok(()) => return Ok(None),
                    Err(_) => continue,
                }
            };
            // Parked with its TAKEOVER unanswered: that answer, arriving
            // late, would be taken for the new one's.
            let replaceable = {
                let st = old.lock();
                st.phase().is_parked() && !st.phase().is_taking_over()
            };
            if !replaceable {
                return Err(old);
            }
            let mut map = lock(&self.map);
            if map.get(&shared.id).is_some_and(|s| Arc::ptr_eq(s, &old)) {
                map.insert(shared.id, shared);
                return Ok(Some(old));
            }
        }
    }

    pub(crate) fn contains(&self, id: u64) -> bool {
        lock(&self.map).contains_key(&id)
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Removes `shared`, unless another session has taken its id since.
    pub(super) fn remove(&self, shared: &Shared) {
        let mut map = lock(&self.map);
        if map
            .get(&shared.id)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), shared))
        {
            map.remove(&shared.id);
        }
    }
}
