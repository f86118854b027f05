//! Shared copies of what an evaluation event holds, kept per thread so that recording an
//! evaluation does not allocate in the common case.
//!
//! An event must own its context and flag key, since it outlives the call. A service evaluates
//! many flags for one context in a row, on one thread, and the same few flag keys again and
//! again; so each thread keeps the last context it recorded and the flag keys it recorded
//! lately, each behind an `Arc` of its own. A hit costs a comparison and a reference count on a
//! cache line no other thread writes; a miss copies once. The copies are per thread on purpose:
//! one `Arc` shared by every thread would make all of them write the same counter.

use std::cell::RefCell;
use std::sync::Arc;

use flags_core::Context;

/// Flag keys remembered per thread; a key maps to one slot by its hash.
const KEY_SLOTS: usize = 64;

struct Recent {
    context: Option<Arc<Context>>,
    keys: [Option<Arc<str>>; KEY_SLOTS],
}

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            context: None,
            keys: [const { None }; KEY_SLOTS],
        })
    };
}

/// A shared copy of `context`: this thread's last one when equal, else a new one.
pub(crate) fn context(context: &Context) -> Arc<Context> {
    RECENT
        .try_with(|recent| {
            let mut recent = recent.borrow_mut();
            match &recent.context {
                Some(last) if **last == *context => Arc::clone(last),
                _ => {
                    let copy = Arc::new(context.clone());
                    recent.context = Some(Arc::clone(&copy));
                    copy
                }
            }
        })
        // The thread is being torn down: no cache, just a copy.
        .unwrap_or_else(|_| Arc::new(context.clone()))
}

/// A shared copy of flag key `key`.
pub(crate) fn key(key: &str) -> Arc<str> {
    RECENT
        .try_with(|recent| {
            let mut recent = recent.borrow_mut();
            let slot = &mut recent.keys[slot(key)];
            match slot {
                Some(known) if **known == *key => Arc::clone(known),
                _ => {
                    let copy: Arc<str> = Arc::from(key);
                    *slot = Some(Arc::clone(&copy));
                    copy
                }
            }
        })
        .unwrap_or_else(|_| Arc::from(key))
}

/// FNV-1a over the key's bytes: flag keys are short, and the slot only spreads them.
fn slot(key: &str) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in key.as_bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash as usize % KEY_SLOTS
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn equal_inputs_share_one_copy_and_others_get_their_own() {
        let alice = Context::user("alice").unwrap();
        let first = context(&alice);
        assert!(Arc::ptr_eq(&first, &context(&alice.clone())));
        let bob = context(&Context::user("bob").unwrap());
        assert_eq!(bob.key(), Some("bob"));
        assert!(
            !Arc::ptr_eq(&first, &context(&alice)),
            "only the last is kept"
        );

        let a = key("flag-a");
        assert!(Arc::ptr_eq(&a, &key(&String::from("flag-a"))));
        assert_eq!(&*key("flag-b"), "flag-b");
        assert_eq!(&*key("flag-a"), "flag-a");
    }
}
