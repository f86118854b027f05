//! `FlagTracker`: listeners for flag configuration changes and for changes of one flag's value
//! for one context.

use std::sync::{Arc, Mutex};

use flags_core::Context;
use serde_json::Value;

use crate::client::Inner;
use crate::data::Changed;
use crate::listen::{Listener, ListenerId, Listeners};

/// A flag's configuration changed: the flag itself, or a prerequisite or segment it depends
/// on, directly or through other flags. Its value for a given context may or may not differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChangeEvent {
    /// The flag's key.
    pub key: String,
}

/// A flag's value for one context changed.
#[derive(Debug, Clone, PartialEq)]
pub struct FlagValueChangeEvent {
    /// The flag's key.
    pub key: String,
    /// The value before (the listener's default if the flag did not exist or failed).
    pub old_value: Value,
    /// The value now (the default if the flag was deleted or fails).
    pub new_value: Value,
}

/// Registers change listeners on a client. Cheap to clone.
#[derive(Clone)]
pub struct FlagTracker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for FlagTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagTracker").finish_non_exhaustive()
    }
}

pub(crate) struct Tracker {
    flags: Listeners<FlagChangeEvent>,
    values: Mutex<Vec<ValueListener>>,
    capacity: usize,
}

struct ValueListener {
    key: String,
    context: Context,
    default: Value,
    last: Value,
    events: Listeners<FlagValueChangeEvent>,
    id: ListenerId,
}

impl Tracker {
    pub(crate) fn new(capacity: usize) -> Tracker {
        Tracker {
            flags: Listeners::new(capacity),
            values: Mutex::new(Vec::new()),
            capacity,
        }
    }

    /// Tells listeners what an update changed, in key order. Runs on the updating task, under
    /// the order updates are applied in. The first data changes no flag's configuration (there
    /// was none), so it sends no flag change events; value listeners still hear of values that
    /// differ from their defaults.
    pub(crate) fn notify(&self, inner: &Inner, changed: &Changed) {
        if !changed.first {
            for key in &changed.affected {
                self.flags.send(&FlagChangeEvent { key: key.clone() });
            }
        }
        let mut values = self.lock();
        for listener in values.iter_mut() {
            if !changed.affected.contains(&listener.key) {
                continue;
            }
            let now = inner.value_in(
                &changed.new,
                &listener.key,
                &listener.context,
                &listener.default,
            );
            if now != listener.last {
                let old = std::mem::replace(&mut listener.last, now.clone());
                listener.events.send(&FlagValueChangeEvent {
                    key: listener.key.clone(),
                    old_value: old,
                    new_value: now,
                });
            }
        }
    }

    pub(crate) fn close(&self) {
        self.flags.close();
        for listener in self.lock().drain(..) {
            listener.events.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ValueListener>> {
        self.values
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FlagTracker {
    /// A listener told of every flag whose configuration changes from now on, including flags
    /// affected through a changed prerequisite or segment, transitively.
    pub fn add_flag_change_listener(&self) -> Listener<FlagChangeEvent> {
        self.inner.tracker.flags.add()
    }

    /// Removes a flag change listener; returns whether it was registered.
    pub fn remove_flag_change_listener(&self, id: ListenerId) -> bool {
        self.inner.tracker.flags.remove(id)
    }

    /// A listener told when the value of flag `key` for `context` changes. The value is
    /// evaluated now (`default` if the flag is missing or fails) and again whenever the flag's
    /// configuration changes; an event is sent only when the value differs.
    pub fn add_flag_value_change_listener(
        &self,
        key: &str,
        context: Context,
        default: Value,
    ) -> Listener<FlagValueChangeEvent> {
        let tracker = &self.inner.tracker;
        // Registered under the lock that updates notify under, so no update falls between the
        // first evaluation and the registration.
        let mut values = tracker.lock();
        let last = match self.inner.data.snapshot() {
            Some(snapshot) => self.inner.value_in(&snapshot, key, &context, &default),
            None => default.clone(),
        };
        let events = Listeners::new(tracker.capacity);
        let listener = events.add();
        // Checked under the lock `close` drains the list under, after it closed `flags`: a
        // listener added after the close would otherwise wait for good.
        if tracker.flags.is_closed() {
            events.close();
            return listener;
        }
        values.push(ValueListener {
            key: key.to_owned(),
            context,
            default,
            last,
            id: listener.id(),
            events,
        });
        listener
    }

    /// Removes a value change listener; returns whether it was registered.
    pub fn remove_flag_value_change_listener(&self, id: ListenerId) -> bool {
        let mut values = self.inner.tracker.lock();
        let before = values.len();
        values.retain(|l| l.id != id);
        values.len() != before
    }
}
