//! The fields of LaunchDarkly's flag and segment documents, for naming the ones a document has
//! that the model does not: a misspelt `variatons` is otherwise dropped without a word when
//! the document is read, and the flag then seems to have no variations.
//!
//! Fields whose name starts with `_` are metadata (`_meta`, `_declared`) and never reported;
//! `name`, `description` and `tags` are accepted on flags and segments as the notes people
//! keep there.

use serde_json::Value;

use crate::check::{Check, Finding};

/// One kind of object in a document: its fields, and the kind of object each holds.
struct Shape {
    fields: &'static [(&'static str, Holds)],
}

/// What a field holds.
#[derive(Clone, Copy)]
enum Holds {
    /// A value whose inside is not checked (variations, clause values, numbers, text).
    Value,
    /// An object of this shape.
    Object(&'static Shape),
    /// An array of objects of this shape.
    List(&'static Shape),
}

use Holds::{List, Object, Value as Any};

const NOTES: [(&str, Holds); 3] = [("name", Any), ("description", Any), ("tags", Any)];

static CLAUSE: Shape = Shape {
    fields: &[
        ("contextKind", Any),
        ("attribute", Any),
        ("op", Any),
        ("values", Any),
        ("negate", Any),
    ],
};

static WEIGHTED_VARIATION: Shape = Shape {
    fields: &[("variation", Any), ("weight", Any), ("untracked", Any)],
};

static ROLLOUT: Shape = Shape {
    fields: &[
        ("kind", Any),
        ("contextKind", Any),
        ("variations", List(&WEIGHTED_VARIATION)),
        ("bucketBy", Any),
        ("seed", Any),
    ],
};

static VARIATION_OR_ROLLOUT: Shape = Shape {
    fields: &[("variation", Any), ("rollout", Object(&ROLLOUT))],
};

static FLAG_RULE: Shape = Shape {
    fields: &[
        ("id", Any),
        ("variation", Any),
        ("rollout", Object(&ROLLOUT)),
        ("clauses", List(&CLAUSE)),
        ("trackEvents", Any),
        // LaunchDarkly's REST API writes these on rules; its SDKs ignore them.
        ("ref", Any),
        ("description", Any),
    ],
};

static TARGET: Shape = Shape {
    fields: &[("contextKind", Any), ("values", Any), ("variation", Any)],
};

static PREREQUISITE: Shape = Shape {
    fields: &[("key", Any), ("variation", Any)],
};

static CLIENT_SIDE_AVAILABILITY: Shape = Shape {
    fields: &[("usingMobileKey", Any), ("usingEnvironmentId", Any)],
};

static MIGRATION: Shape = Shape {
    fields: &[("checkRatio", Any)],
};

static FLAG: Shape = Shape {
    fields: &[
        ("key", Any),
        ("version", Any),
        ("on", Any),
        ("prerequisites", List(&PREREQUISITE)),
        ("salt", Any),
        ("targets", List(&TARGET)),
        ("contextTargets", List(&TARGET)),
        ("rules", List(&FLAG_RULE)),
        ("fallthrough", Object(&VARIATION_OR_ROLLOUT)),
        ("offVariation", Any),
        ("variations", Any),
        ("clientSideAvailability", Object(&CLIENT_SIDE_AVAILABILITY)),
        // The older form of `clientSideAvailability.usingEnvironmentId`.
        ("clientSide", Any),
        ("trackEvents", Any),
        ("trackEventsFallthrough", Any),
        ("debugEventsUntilDate", Any),
        ("deleted", Any),
        ("excludeFromSummaries", Any),
        ("samplingRatio", Any),
        ("migration", Object(&MIGRATION)),
        NOTES[0],
        NOTES[1],
        NOTES[2],
    ],
};

static SEGMENT_TARGET: Shape = Shape {
    fields: &[("contextKind", Any), ("values", Any)],
};

static SEGMENT_RULE: Shape = Shape {
    fields: &[
        ("id", Any),
        ("clauses", List(&CLAUSE)),
        ("weight", Any),
        ("bucketBy", Any),
        ("rolloutContextKind", Any),
        ("description", Any),
    ],
};

static SEGMENT: Shape = Shape {
    fields: &[
        ("key", Any),
        ("version", Any),
        ("included", Any),
        ("excluded", Any),
        ("includedContexts", List(&SEGMENT_TARGET)),
        ("excludedContexts", List(&SEGMENT_TARGET)),
        ("salt", Any),
        ("rules", List(&SEGMENT_RULE)),
        ("unbounded", Any),
        ("unboundedContextKind", Any),
        ("generation", Any),
        ("deleted", Any),
        NOTES[0],
        NOTES[1],
        NOTES[2],
    ],
};

/// The fields of a flag document that LaunchDarkly's flag model does not have, each at its
/// path (`rules[0].clauses[1].atribute`), with the known field it is closest to when one is
/// close enough to be the one meant.
pub fn unknown_flag_fields(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(&FLAG, doc, "", &mut out);
    out
}

/// As [`unknown_flag_fields`], for a segment document.
pub fn unknown_segment_fields(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    walk(&SEGMENT, doc, "", &mut out);
    out
}

fn walk(shape: &Shape, value: &Value, path: &str, out: &mut Vec<Finding>) {
    let Value::Object(map) = value else {
        // Not an object: the model's own checks say what is wrong with it.
        return;
    };
    for (field, inner) in map {
        let here = if path.is_empty() {
            field.clone()
        } else {
            format!("{path}.{field}")
        };
        match shape.fields.iter().find(|(name, _)| name == field) {
            Some((_, Object(inner_shape))) => walk(inner_shape, inner, &here, out),
            Some((_, List(inner_shape))) => {
                if let Value::Array(items) = inner {
                    for (i, item) in items.iter().enumerate() {
                        walk(inner_shape, item, &format!("{here}[{i}]"), out);
                    }
                }
            }
            Some((_, Any)) => {}
            None if field.starts_with('_') => {}
            None => {
                let message = match closest(shape, field) {
                    Some(known) => {
                        format!("unknown field {field:?}, ignored (did you mean {known:?}?)")
                    }
                    None => format!("unknown field {field:?}, ignored"),
                };
                out.push(Finding {
                    check: Check::UnknownField,
                    path: here,
                    message,
                });
            }
        }
    }
}

/// The known field of `shape` that `field` is most likely a misspelling of: the same but for
/// case, or within two edits.
fn closest(shape: &Shape, field: &str) -> Option<&'static str> {
    shape
        .fields
        .iter()
        .map(|(name, _)| *name)
        .map(|name| {
            let distance = if name.eq_ignore_ascii_case(field) {
                0
            } else {
                edits(name, field)
            };
            (distance, name)
        })
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, name)| name)
}

/// Levenshtein distance between `a` and `b`, by character.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn found(findings: &[Finding]) -> Vec<(String, String)> {
        findings
            .iter()
            .map(|f| (f.path.clone(), f.message.clone()))
            .collect()
    }

    #[test]
    fn misspelt_fields_are_named_with_the_field_meant() {
        let doc = json!({
            "key": "f", "on": true, "variatons": [1, 2],
            "fallthrough": {"variaton": 0},
            "rules": [{"id": "r", "clauses": [{"atribute": "email", "op": "in", "values": []}]}],
            "colour": "red", "_meta": {"anything": 1}, "description": "notes are fine",
        });
        assert_eq!(
            found(&unknown_flag_fields(&doc)),
            [
                (
                    "colour".to_owned(),
                    r#"unknown field "colour", ignored"#.to_owned()
                ),
                (
                    "fallthrough.variaton".to_owned(),
                    r#"unknown field "variaton", ignored (did you mean "variation"?)"#.to_owned()
                ),
                (
                    "rules[0].clauses[0].atribute".to_owned(),
                    r#"unknown field "atribute", ignored (did you mean "attribute"?)"#.to_owned()
                ),
                (
                    "variatons".to_owned(),
                    r#"unknown field "variatons", ignored (did you mean "variations"?)"#.to_owned()
                ),
            ]
        );
    }

    #[test]
    fn complete_documents_have_no_unknown_fields() {
        let flag = json!({
            "key": "f", "version": 3, "on": true, "salt": "s", "variations": [true, false],
            "offVariation": 1, "fallthrough": {"rollout": {"kind": "experiment", "contextKind": "user",
                "variations": [{"variation": 0, "weight": 50000, "untracked": false},
                               {"variation": 1, "weight": 50000}], "bucketBy": "key", "seed": 1}},
            "targets": [{"values": ["a"], "variation": 0}],
            "contextTargets": [{"contextKind": "org", "values": [], "variation": 0}],
            "prerequisites": [{"key": "p", "variation": 0}],
            "rules": [{"id": "r", "variation": 0, "trackEvents": true, "clauses": [
                {"contextKind": "user", "attribute": "email", "op": "endsWith", "values": ["x"], "negate": false}]}],
            "clientSideAvailability": {"usingMobileKey": true, "usingEnvironmentId": false},
            "trackEvents": false, "trackEventsFallthrough": false, "debugEventsUntilDate": 1,
            "deleted": false, "excludeFromSummaries": false, "samplingRatio": 1,
            "migration": {"checkRatio": 1},
        });
        assert_eq!(found(&unknown_flag_fields(&flag)), []);
        let segment = json!({
            "key": "s", "version": 1, "included": ["a"], "excluded": [], "salt": "x",
            "includedContexts": [{"contextKind": "org", "values": ["o"]}], "excludedContexts": [],
            "rules": [{"id": "r", "clauses": [], "weight": 10, "bucketBy": "key", "rolloutContextKind": "user"}],
            "unbounded": false, "unboundedContextKind": "user", "generation": 2, "deleted": false,
        });
        assert_eq!(found(&unknown_segment_fields(&segment)), []);
        assert_eq!(
            found(&unknown_segment_fields(&json!({"include": ["a"]}))),
            [(
                "include".to_owned(),
                r#"unknown field "include", ignored (did you mean "included"?)"#.to_owned()
            )]
        );
    }

    #[test]
    fn edit_distance_counts_characters() {
        assert_eq!(edits("variations", "variatons"), 1);
        assert_eq!(edits("on", "no"), 2);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("kind", "kind"), 0);
    }
}
