//! What the operations layer does to a served flag, written once for every client.
//!
//! flagd's own evaluation and every SDK evaluate the same served flag, so they cannot disagree
//! about a kill or an override: each is carried in flag data that LaunchDarkly's SDKs already
//! understand. A kill is served as `on: false`. Overrides are served as individual targets placed
//! before the flag's own, so they take effect exactly where targets do in LaunchDarkly's order:
//! after `on` and the prerequisites, before the flag's own targets and its rules.
//!
//! LaunchDarkly keeps the keys of `user` contexts in `targets`, one list per variation, and a
//! `contextTargets` entry of kind `user` without values stands for that list. Other kinds hold
//! their keys in the `contextTargets` entry itself. The SDKs differ on anything else (a `user`
//! entry with values, or several `targets` lists of one variation: Go, Python and Node read the
//! first list, the Rust evaluator reads them all), so a flag with overrides is served in the one
//! form they all read alike, and the precedence that follows from it is:
//!
//! 1. Overrides of kinds other than `user`, by kind, then by variation.
//! 2. Overrides of kind `user`, by variation. The `user` list of such a variation also holds the
//!    flag's own `user` targets of that variation, so those move forward with it.
//! 3. The flag's own targets, in their order, less every pinned context.
//!
//! So a context with an override gets it, whatever else targets it: an override of one kind of a
//! multi-kind context is found before any of the flag's own targets. The one difference from
//! "overrides first, then the flag's own targets unchanged" is that the flag's own `user` targets
//! of one variation are checked together: in step 2 when the variation has `user` overrides,
//! else where the first of them was. A multi-kind context whose `user` key they name, and whose
//! other kind a list of the flag's in between names, now gets the `user` target. Single-kind
//! contexts, and flags whose own targets are all of kind `user`, see no difference. A flag is
//! served as stored while it has no overrides.

use std::collections::{BTreeMap, HashSet};

use flags_core::context::DEFAULT_KIND;
use flags_core::{Flag, Target};

/// One context pinned to a variation of a flag by the operations layer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Override {
    /// The context kind (`user`, `org`); empty means `user`.
    pub context_kind: String,
    /// The context key.
    pub context_key: String,
    /// The variation index served to the context.
    pub variation: usize,
}

/// The flag as served under the operations layer: `on: false` when `killed`, and `overrides`
/// as its first individual targets (see the module documentation for the exact order). A flag
/// without overrides keeps its targets as they are. The result depends only on the flag and the
/// set of overrides, not on their order, so every replica serves the same document.
///
/// `flag.on` and the targets must be the stored ones: a flag already served with overrides
/// cannot be served again through this.
pub fn serve_flag(mut flag: Flag, killed: bool, overrides: &[Override]) -> Flag {
    if killed {
        flag.on = false;
    }
    if !overrides.is_empty() {
        let lists = with_overrides(&flag, overrides);
        let (targets, context_targets) = render(lists);
        flag.targets = targets;
        flag.context_targets = context_targets;
    }
    flag
}

/// One list of individual targets: a context kind (spelled out), keys, and their variation.
struct List<'a> {
    kind: &'a str,
    keys: Vec<&'a str>,
    variation: usize,
}

/// The target lists of `flag` with `overrides` first, in the order the module documentation
/// gives, each context in the first list that names it only.
fn with_overrides<'a>(flag: &'a Flag, overrides: &'a [Override]) -> Vec<List<'a>> {
    let mut sorted: Vec<&Override> = overrides.iter().collect();
    sorted.sort_unstable();
    // Pinned keys by (is `user`, kind, variation): other kinds sort before `user`.
    let mut pinned: BTreeMap<(bool, &str, usize), Vec<&str>> = BTreeMap::new();
    let mut taken: HashSet<(&str, &str)> = HashSet::new();
    for o in sorted {
        let kind = kind_or_user(&o.context_kind);
        if taken.insert((kind, &o.context_key)) {
            pinned
                .entry((kind == DEFAULT_KIND, kind, o.variation))
                .or_default()
                .push(&o.context_key);
        }
    }
    // The flag's own lists, less pinned contexts and keys an earlier list of the kind names
    // (which could never match), with one `user` list per variation.
    let mut own: Vec<List<'a>> = Vec::new();
    for (kind, values, variation) in flag.target_lists() {
        let keys = values
            .iter()
            .map(String::as_str)
            .filter(|key| taken.insert((kind, key)));
        let same_user_list = own
            .iter_mut()
            .find(|l| kind == DEFAULT_KIND && l.kind == DEFAULT_KIND && l.variation == variation);
        match same_user_list {
            Some(list) => list.keys.extend(keys),
            None => own.push(List {
                kind,
                keys: keys.collect(),
                variation,
            }),
        }
    }
    let mut lists = Vec::with_capacity(pinned.len() + own.len());
    for ((user, kind, variation), mut keys) in pinned {
        if user
            && let Some(at) = own
                .iter()
                .position(|l| l.kind == DEFAULT_KIND && l.variation == variation)
        {
            keys.extend(own.remove(at).keys);
        }
        lists.push(List {
            kind,
            keys,
            variation,
        });
    }
    lists.extend(own);
    lists.retain(|l| !l.keys.is_empty());
    lists
}

/// `targets` and `contextTargets` holding `lists` in order, in the form every SDK reads alike:
/// `user` keys in `targets`, one list per variation, each placed by a `contextTargets` entry of
/// kind `user` without values.
fn render(lists: Vec<List<'_>>) -> (Vec<Target>, Vec<Target>) {
    let mut targets = Vec::new();
    let mut context_targets = Vec::with_capacity(lists.len());
    for List {
        kind,
        keys,
        variation,
    } in lists
    {
        let values = keys.into_iter().map(str::to_owned).collect();
        if kind == DEFAULT_KIND {
            targets.push(Target {
                context_kind: String::new(),
                values,
                variation,
            });
            context_targets.push(Target {
                context_kind: DEFAULT_KIND.to_owned(),
                values: Vec::new(),
                variation,
            });
        } else {
            context_targets.push(Target {
                context_kind: kind.to_owned(),
                values,
                variation,
            });
        }
    }
    (targets, context_targets)
}

fn kind_or_user(kind: &str) -> &str {
    if kind.is_empty() { DEFAULT_KIND } else { kind }
}
