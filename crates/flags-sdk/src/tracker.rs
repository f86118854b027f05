//! Change listeners: the events, and the listeners a client's updates notify (the public face
//! is [`crate::FlagTracker`]).

use std::sync::Mutex;

use flags_core::Context;
use flags_data::Snapshot;
use serde_json::Value;

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
    /// `value_in` evaluates a flag for a context in a snapshot, giving the default on failure.
    pub(crate) fn notify(
        &self,
        changed: &Changed,
        value_in: impl Fn(&Snapshot, &str, &Context, &Value) -> Value,
    ) {
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
            let now = value_in(
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

    pub(crate) fn add_flag_listener(&self) -> Listener<FlagChangeEvent> {
        self.flags.add()
    }

    pub(crate) fn remove_flag_listener(&self, id: ListenerId) -> bool {
        self.flags.remove(id)
    }

    /// Registers a value listener whose first value `now` gives, under the lock that updates
    /// notify under, so that no update falls between the first evaluation and the
    /// registration.
    pub(crate) fn add_value_listener(
        &self,
        key: &str,
        context: Context,
        default: Value,
        now: impl FnOnce(&str, &Context, &Value) -> Value,
    ) -> Listener<FlagValueChangeEvent> {
        let mut values = self.lock();
        let last = now(key, &context, &default);
        let events = Listeners::new(self.capacity);
        let listener = events.add();
        // Checked under the lock `close` drains the list under, after it closed `flags`: a
        // listener added after the close would otherwise wait for good.
        if self.flags.is_closed() {
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

    pub(crate) fn remove_value_listener(&self, id: ListenerId) -> bool {
        let mut values = self.lock();
        let before = values.len();
        values.retain(|l| l.id != id);
        values.len() != before
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
