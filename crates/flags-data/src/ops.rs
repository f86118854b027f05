//! The operations layer's state: which flags are killed and which contexts are pinned to a
//! variation, above every flag's own rules.

use std::sync::atomic::{AtomicU64, Ordering};

use flags_core::{
    Context, EvalDetail, Flag, InMemoryKillSet, InMemoryOverrides, KillSet, OverrideLookup, Reason,
};

use crate::served::{Override, serve_flag};

/// The operations layer's in-memory state: killed flags and per-entity overrides. Empty in file
/// mode; root mode fills it from the store.
///
/// It takes effect through the flags it serves ([`Ops::serve`]): changing it changes no answer
/// until the flags concerned are served again, and then every client sees the change alike. It
/// also labels answers (`"killed": true`, `"override": true`; see [`Snapshot::evaluate`]), which
/// never changes their value, variation or reason kind. Every change bumps [`Ops::generation`].
///
/// [`Snapshot::evaluate`]: crate::Snapshot::evaluate
#[derive(Debug, Default)]
pub struct Ops {
    kill_set: InMemoryKillSet,
    overrides: InMemoryOverrides,
    generation: AtomicU64,
}

impl Ops {
    /// Kills a flag (served from then on with `on: false`, so it serves its off variation);
    /// returns whether it was newly killed.
    pub fn kill(&self, flag_key: &str) -> bool {
        let changed = self.kill_set.insert(flag_key);
        self.bump(changed);
        changed
    }

    /// Revives a killed flag; returns whether it was killed.
    pub fn revive(&self, flag_key: &str) -> bool {
        let changed = self.kill_set.remove(flag_key);
        self.bump(changed);
        changed
    }

    /// Pins a context to a variation of a flag (served from then on as a target placed first);
    /// returns the previous pin.
    pub fn set_override(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
        variation: usize,
    ) -> Option<usize> {
        let previous = self
            .overrides
            .insert(flag_key, context_kind, context_key, variation);
        self.bump(previous != Some(variation));
        previous
    }

    /// Removes one override; returns its variation.
    pub fn remove_override(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
    ) -> Option<usize> {
        let previous = self.overrides.remove(flag_key, context_kind, context_key);
        self.bump(previous.is_some());
        previous
    }

    /// Removes every override of a flag (it was deleted).
    pub fn clear_flag(&self, flag_key: &str) {
        self.overrides.clear_flag(flag_key);
        self.bump(true);
    }

    /// The flag as served under this operations layer: `on: false` while killed, and its
    /// overrides as its first individual targets ([`serve_flag`]). `flag` must be the stored
    /// flag, not one this has served.
    pub fn serve(&self, flag: Flag) -> Flag {
        let killed = self.kill_set.is_killed(&flag.key);
        let overrides: Vec<Override> = self
            .overrides
            .of_flag(&flag.key)
            .into_iter()
            .map(|(context_kind, context_key, variation)| Override {
                context_kind,
                context_key,
                variation,
            })
            .collect();
        serve_flag(flag, killed, &overrides)
    }

    /// Whether the flag has any override.
    pub fn has_overrides(&self, flag_key: &str) -> bool {
        !self.overrides.of_flag(flag_key).is_empty()
    }

    /// The killed flags, sorted.
    pub fn killed(&self) -> Vec<String> {
        self.kill_set.keys()
    }

    /// Increases with every change of the kill set or the overrides.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Labels an answer of flag `flag_key` that this layer decided: an `OFF` of a killed flag
    /// as `killed`, and a `TARGET_MATCH` that gave the context the variation one of its kinds
    /// is pinned to as an `override`. Only the labels change; the answer itself is the served
    /// flag's. Does not allocate.
    #[inline]
    pub(crate) fn label(&self, flag_key: &str, context: &Context, detail: &mut EvalDetail<'_>) {
        if !matches!(
            detail.reason,
            Reason::Off { .. } | Reason::TargetMatch { .. }
        ) || self.generation() == 0
        {
            return;
        }
        let variation = detail.variation_index;
        match &mut detail.reason {
            Reason::Off { killed } => *killed = self.kill_set.is_killed(flag_key),
            Reason::TargetMatch { is_override } => {
                *is_override = variation.is_some_and(|v| {
                    context.contexts().iter().any(|single| {
                        self.overrides
                            .variation_for(flag_key, single.kind(), single.key())
                            == Some(v)
                    })
                });
            }
            _ => {}
        }
    }

    fn bump(&self, changed: bool) {
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl KillSet for Ops {
    fn is_killed(&self, flag_key: &str) -> bool {
        self.kill_set.is_killed(flag_key)
    }
}

impl OverrideLookup for Ops {
    fn variation_for(
        &self,
        flag_key: &str,
        context_kind: &str,
        context_key: &str,
    ) -> Option<usize> {
        self.overrides
            .variation_for(flag_key, context_kind, context_key)
    }
}
