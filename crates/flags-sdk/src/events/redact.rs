//! Private attributes, redacted from the contexts events carry as LaunchDarkly's SDKs redact
//! them: an attribute named private by the context (`_meta.privateAttributes`) or by the
//! configuration, or every attribute but `kind`, `key` and `anonymous` when all are private, is
//! left out, and its reference is listed in `_meta.redactedAttributes`.

use std::collections::BTreeMap;

use flags_core::{AttrRef, Context, SingleContext};
use serde_json::{Map, Value};

/// Redacts contexts for one processor's configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    all: bool,
    private: Vec<AttrRef>,
}

impl Redactor {
    /// `private` holds attribute references (`email`, `/address/street`); ones that do not parse
    /// are left out, with a warning.
    pub(crate) fn new(all: bool, private: &[String]) -> Redactor {
        let private = private
            .iter()
            .filter_map(|r| match AttrRef::parse(r) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("private attribute {r:?} ignored: {e}");
                    None
                }
            })
            .collect();
        Redactor { all, private }
    }

    /// The context as events carry it in full (`identify`, `index`, `custom`, `debug`).
    pub(crate) fn context_json(&self, context: &Context) -> Value {
        let singles = context.contexts();
        if let [single] = singles {
            return Value::Object(self.single(single, true));
        }
        let mut out = Map::new();
        out.insert("kind".to_owned(), Value::from("multi"));
        for single in singles {
            out.insert(
                single.kind().to_owned(),
                Value::Object(self.single(single, false)),
            );
        }
        Value::Object(out)
    }

    fn single(&self, context: &SingleContext, with_kind: bool) -> Map<String, Value> {
        let Ok(Value::Object(mut out)) = serde_json::to_value(context) else {
            // A context always serializes to an object; an empty one is unreachable.
            return Map::new();
        };
        out.remove("_meta");
        if !with_kind {
            out.remove("kind");
        }
        let mut redacted = Vec::new();
        if self.all {
            let names: Vec<String> = out
                .keys()
                .filter(|name| !matches!(name.as_str(), "kind" | "key" | "anonymous"))
                .cloned()
                .collect();
            for name in names {
                out.remove(&name);
                // The name as a reference: one that starts with `/` is escaped into a path.
                let reference =
                    AttrRef::from_literal(&name).map_or(name, |r| r.as_str().to_owned());
                redacted.push(reference);
            }
        } else {
            for reference in self.private.iter().chain(context.private_attributes()) {
                if remove(&mut out, reference) && !redacted.iter().any(|r| r == reference.as_str())
                {
                    redacted.push(reference.as_str().to_owned());
                }
            }
        }
        if !redacted.is_empty() {
            let meta = BTreeMap::from([("redactedAttributes", redacted)]);
            out.insert("_meta".to_owned(), serde_json::json!(meta));
        }
        out
    }
}

/// Removes the attribute `reference` names, descending only into objects; returns whether
/// there was one. `kind`, `key` and `anonymous` cannot be private.
fn remove(context: &mut Map<String, Value>, reference: &AttrRef) -> bool {
    let Some((last, path)) = reference.components().split_last() else {
        return false;
    };
    if path.is_empty() && matches!(last.as_str(), "kind" | "key" | "anonymous") {
        return false;
    }
    let mut object = context;
    for component in path {
        match object.get_mut(component) {
            Some(Value::Object(inner)) => object = inner,
            _ => return false,
        }
    }
    object.remove(last).is_some()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(all: bool, private: &[&str], context: Value, expected: Value) {
        let private: Vec<String> = private.iter().map(|s| (*s).to_owned()).collect();
        let context = Context::from_json(&context).unwrap();
        let redacted = Redactor::new(all, &private).context_json(&context);
        assert_eq!(redacted, expected);
    }

    #[test]
    fn nothing_private_leaves_the_context_as_it_is() {
        check(
            false,
            &[],
            json!({"kind": "user", "key": "a", "name": "Ann", "email": "a@x"}),
            json!({"kind": "user", "key": "a", "name": "Ann", "email": "a@x"}),
        );
    }

    #[test]
    fn the_context_s_own_private_attributes_are_redacted_and_listed() {
        check(
            false,
            &[],
            json!({"kind": "user", "key": "a", "email": "a@x", "plan": "pro",
                   "_meta": {"privateAttributes": ["email", "missing"]}}),
            json!({"kind": "user", "key": "a", "plan": "pro",
                   "_meta": {"redactedAttributes": ["email"]}}),
        );
    }

    #[test]
    fn configured_references_reach_into_objects_only() {
        check(
            false,
            &["/address/street", "/tags/0", "name", "key", "kind"],
            json!({"kind": "user", "key": "a", "name": "Ann", "tags": ["x"],
                   "address": {"street": "Main", "city": "Oslo"}}),
            json!({"kind": "user", "key": "a", "tags": ["x"], "address": {"city": "Oslo"},
                   "_meta": {"redactedAttributes": ["/address/street", "name"]}}),
        );
    }

    #[test]
    fn all_private_keeps_only_kind_key_and_anonymous() {
        check(
            true,
            &[],
            json!({"kind": "org", "key": "o", "anonymous": true, "name": "Acme", "/odd": 1}),
            json!({"kind": "org", "key": "o", "anonymous": true,
                   "_meta": {"redactedAttributes": ["/~1odd", "name"]}}),
        );
    }

    #[test]
    fn each_kind_of_a_multi_context_is_redacted_by_its_own_list() {
        check(
            false,
            &["plan"],
            json!({"kind": "multi",
                   "user": {"key": "u", "email": "e", "_meta": {"privateAttributes": ["email"]}},
                   "org": {"key": "o", "plan": "pro", "email": "kept"}}),
            json!({"kind": "multi",
                   "user": {"key": "u", "_meta": {"redactedAttributes": ["email"]}},
                   "org": {"key": "o", "email": "kept", "_meta": {"redactedAttributes": ["plan"]}}}),
        );
    }
}
