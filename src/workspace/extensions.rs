//! State that higher layers derive from an open store and keep with it (knowledge's search
//! caches, for one), without the store knowing their types: one value per type, made on first
//! use and dropped with the store, plus the row changes of the store's connection for those
//! that must follow writes.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Told `(table, rowid)` of every row the store's connection inserts, updates or deletes
/// (committed or not), from inside SQLite's update hook: it must not touch the connection.
pub type RowObserver = Arc<dyn Fn(&str, i64) + Send + Sync>;

/// The observers the connection's update hook calls.
pub(super) type Observers = Arc<RwLock<Vec<RowObserver>>>;

/// A store's extension slots. Lock order: the connection, then the slots, then the observers.
#[derive(Default)]
pub(super) struct Extensions {
    slots: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    observers: Observers,
}

impl Extensions {
    pub(super) fn observers(&self) -> Observers {
        self.observers.clone()
    }

    /// The `T` of this store, made by `make` if there is none yet (under the slots' lock, so
    /// it is made once).
    pub(super) fn get<T: Any + Send + Sync>(&self, make: impl FnOnce(&Slots) -> T) -> Arc<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = slots.get(&TypeId::of::<T>()) {
            if let Ok(t) = v.clone().downcast::<T>() {
                return t;
            }
        }
        let t = Arc::new(make(&Slots(self)));
        slots.insert(TypeId::of::<T>(), t.clone());
        t
    }
}

/// Calls every observer with a row change (the update hook's body).
pub(super) fn notify(observers: &Observers, table: &str, rowid: i64) {
    for f in observers.read().unwrap_or_else(|p| p.into_inner()).iter() {
        f(table, rowid);
    }
}

/// What an extension's `make` can do: follow the store's row changes.
pub struct Slots<'a>(pub(super) &'a Extensions);

impl Slots<'_> {
    /// Calls `f` with `(table, rowid)` of every later row change of the store's connection.
    pub fn observe_rows(&self, f: impl Fn(&str, i64) + Send + Sync + 'static) {
        let f: RowObserver = Arc::new(f);
        let mut observers = self.0.observers.write().unwrap_or_else(|p| p.into_inner());
        observers.push(f);
    }
}
