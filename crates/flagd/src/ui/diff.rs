//! What changed between two JSON documents, as people read it: one row per changed path
//! (`rules[0].clauses[1].values: ["a"] → ["a","b"]`), for the audit log and for edit conflicts.
//!
//! Objects are compared key by key and arrays of objects element by element, down to the
//! values that changed; any other array (a clause's values, a flag's variations) is one value.
//! Arrays whose elements all carry a distinct string `id` on both sides (a flag's rules) are
//! matched by id, so inserting or reordering rules shows as that, not as every later rule
//! changing.

use maud::{Markup, html};
use serde_json::{Map, Value};

/// One changed path.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Where, as `rules[0].clauses[1].values`; empty for the whole document.
    pub path: String,
    /// What happened there.
    pub change: Change,
}

/// What happened at one path.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Present only after.
    Added(Value),
    /// Present only before.
    Removed(Value),
    /// Different before and after.
    Changed(Value, Value),
    /// An element matched by id stands at another position (its old index); changes inside it
    /// have rows of their own.
    Moved(usize),
}

/// The rows that turn `before` into `after`, in document order; none when they are equal.
pub fn diff(before: &Value, after: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    walk("", before, after, &mut rows);
    rows
}

/// [`diff`] of an item that may not exist on one side (created, deleted): a missing object
/// reads as `{}`, so a created flag shows each of its fields as added.
pub fn diff_optional(before: Option<&Value>, after: Option<&Value>) -> Vec<Row> {
    let empty = Value::Object(Map::new());
    match (before, after) {
        (None, None) => Vec::new(),
        (Some(b), None) if b.is_object() => diff(b, &empty),
        (None, Some(a)) if a.is_object() => diff(&empty, a),
        (Some(b), None) => vec![Row {
            path: String::new(),
            change: Change::Removed(b.clone()),
        }],
        (None, Some(a)) => vec![Row {
            path: String::new(),
            change: Change::Added(a.clone()),
        }],
        (Some(b), Some(a)) => diff(b, a),
    }
}

/// A value in one line, cut at `max` characters.
pub fn compact(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The rows as a table: path, before, after; added and removed are said in words as well as
/// marked (`<ins>`, `<del>`), so nothing depends on colour.
pub fn table(rows: &[Row], caption: &str) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No differences." }
        } @else {
            table.diff {
                caption { (caption) }
                thead {
                    tr {
                        th scope="col" { "Path" }
                        th scope="col" { "Before" }
                        th scope="col" { "After" }
                    }
                }
                tbody {
                    @for row in rows {
                        tr {
                            th scope="row" {
                                code {
                                    @if row.path.is_empty() { "(whole)" } @else { (row.path) }
                                }
                            }
                            @match &row.change {
                                Change::Added(v) => {
                                    td.muted { "(absent)" }
                                    td { "added: " ins { code { (compact(v, 300)) } } }
                                }
                                Change::Removed(v) => {
                                    td { "removed: " del { code { (compact(v, 300)) } } }
                                    td.muted { "(absent)" }
                                }
                                Change::Changed(b, a) => {
                                    td { del { code { (compact(b, 300)) } } }
                                    td { ins { code { (compact(a, 300)) } } }
                                }
                                Change::Moved(from) => {
                                    td { "position " (from) }
                                    td { "moved here" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn walk(path: &str, before: &Value, after: &Value, rows: &mut Vec<Row>) {
    if before == after {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, bv) in b {
                let here = key_path(path, key);
                match a.get(key) {
                    Some(av) => walk(&here, bv, av, rows),
                    None => rows.push(Row {
                        path: here,
                        change: Change::Removed(bv.clone()),
                    }),
                }
            }
            for (key, av) in a {
                if !b.contains_key(key) {
                    rows.push(Row {
                        path: key_path(path, key),
                        change: Change::Added(av.clone()),
                    });
                }
            }
        }
        (Value::Array(b), Value::Array(a)) if all_objects(b) && all_objects(a) => {
            match (ids(b), ids(a)) {
                (Some(bi), Some(ai)) => by_id(path, b, a, &bi, &ai, rows),
                _ => by_index(path, b, a, rows),
            }
        }
        _ => rows.push(Row {
            path: path.to_owned(),
            change: Change::Changed(before.clone(), after.clone()),
        }),
    }
}

fn by_index(path: &str, before: &[Value], after: &[Value], rows: &mut Vec<Row>) {
    for i in 0..before.len().max(after.len()) {
        let here = format!("{path}[{i}]");
        match (before.get(i), after.get(i)) {
            (Some(b), Some(a)) => walk(&here, b, a, rows),
            (Some(b), None) => rows.push(Row {
                path: here,
                change: Change::Removed(b.clone()),
            }),
            (None, Some(a)) => rows.push(Row {
                path: here,
                change: Change::Added(a.clone()),
            }),
            (None, None) => {}
        }
    }
}

/// Elements matched by id: removed ones (at their old index), then each element of `after`
/// in order (added, or moved and changed). Only elements whose order relative to the others
/// changed count as moved: those outside the longest run kept in order.
fn by_id(
    path: &str,
    before: &[Value],
    after: &[Value],
    before_ids: &[&str],
    after_ids: &[&str],
    rows: &mut Vec<Row>,
) {
    let old_index = |id: &str| before_ids.iter().position(|b| *b == id);
    for (i, id) in before_ids.iter().enumerate() {
        if !after_ids.contains(id) {
            rows.push(Row {
                path: format!("{path}[{i}]"),
                change: Change::Removed(before[i].clone()),
            });
        }
    }
    let kept: Vec<usize> = after_ids.iter().filter_map(|id| old_index(id)).collect();
    let in_order = longest_increasing(&kept);
    for (j, id) in after_ids.iter().enumerate() {
        let here = format!("{path}[{j}]");
        match old_index(id) {
            None => rows.push(Row {
                path: here,
                change: Change::Added(after[j].clone()),
            }),
            Some(i) => {
                if !in_order.contains(&i) {
                    rows.push(Row {
                        path: here.clone(),
                        change: Change::Moved(i),
                    });
                }
                walk(&here, &before[i], &after[j], rows);
            }
        }
    }
}

/// The values of one longest strictly increasing subsequence of `seq`.
fn longest_increasing(seq: &[usize]) -> Vec<usize> {
    // O(n²) is plenty for the rules of one flag.
    let mut length = vec![1usize; seq.len()];
    let mut previous = vec![None; seq.len()];
    for i in 0..seq.len() {
        for j in 0..i {
            if seq[j] < seq[i] && length[j] + 1 > length[i] {
                length[i] = length[j] + 1;
                previous[i] = Some(j);
            }
        }
    }
    let mut best = (0..seq.len()).max_by_key(|&i| (length[i], std::cmp::Reverse(i)));
    let mut out = Vec::new();
    while let Some(i) = best {
        out.push(seq[i]);
        best = previous[i];
    }
    out.reverse();
    out
}

fn all_objects(items: &[Value]) -> bool {
    items.iter().all(Value::is_object)
}

/// Each element's `id`, when every element has a distinct string one.
fn ids(items: &[Value]) -> Option<Vec<&str>> {
    let ids: Vec<&str> = items
        .iter()
        .map(|item| item.get("id").and_then(Value::as_str))
        .collect::<Option<_>>()?;
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    (sorted.len() == ids.len()).then_some(ids)
}

/// `path.key`, or `path["odd key"]` for a key that is not a plain name.
fn key_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    match (plain, path.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", Value::from(key)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The rows as one line each.
    fn lines(rows: &[Row]) -> Vec<String> {
        rows.iter()
            .map(|row| {
                let path = if row.path.is_empty() {
                    "(whole)"
                } else {
                    &row.path
                };
                match &row.change {
                    Change::Added(v) => format!("{path}: added {}", compact(v, 200)),
                    Change::Removed(v) => format!("{path}: removed {}", compact(v, 200)),
                    Change::Changed(b, a) => {
                        format!("{path}: {} → {}", compact(b, 200), compact(a, 200))
                    }
                    Change::Moved(from) => format!("{path}: moved from position {from}"),
                }
            })
            .collect()
    }

    fn check(before: Value, after: Value, expected: &[&str]) {
        assert_eq!(lines(&diff(&before, &after)), expected);
    }

    #[test]
    fn equal_documents_have_no_rows() {
        check(
            json!({"a": [1, {"b": 2}]}),
            json!({"a": [1, {"b": 2}]}),
            &[],
        );
    }

    #[test]
    fn scalars_and_plain_arrays_change_as_a_whole() {
        check(
            json!({"on": false}),
            json!({"on": true}),
            &["on: false → true"],
        );
        check(
            json!({"rules": [{"clauses": [{}, {"values": ["a"]}]}]}),
            json!({"rules": [{"clauses": [{}, {"values": ["a", "b"]}]}]}),
            &[r#"rules[0].clauses[1].values: ["a"] → ["a","b"]"#],
        );
        check(
            json!({"variations": [true, false]}),
            json!({"variations": [true, false, null]}),
            &["variations: [true,false] → [true,false,null]"],
        );
        check(json!(1), json!("1"), &[r#"(whole): 1 → "1""#]);
    }

    #[test]
    fn keys_are_added_and_removed() {
        check(
            json!({"a": 1, "b": {"c": 2}}),
            json!({"b": {}, "d": [1]}),
            &["a: removed 1", "b.c: removed 2", "d: added [1]"],
        );
        check(
            json!({"odd key": 1, "0": 2}),
            json!({}),
            &[r#"["0"]: removed 2"#, r#"["odd key"]: removed 1"#],
        );
    }

    #[test]
    fn arrays_of_objects_without_ids_go_by_index() {
        check(
            json!({"targets": [{"variation": 0, "values": ["a"]}]}),
            json!({"targets": [{"variation": 1, "values": ["a"]}, {"variation": 0}]}),
            &[
                "targets[0].variation: 0 → 1",
                r#"targets[1]: added {"variation":0}"#,
            ],
        );
        check(
            json!({"prerequisites": [{"key": "a"}, {"key": "b"}]}),
            json!({"prerequisites": [{"key": "a"}]}),
            &[r#"prerequisites[1]: removed {"key":"b"}"#],
        );
        check(
            json!({"rules": []}),
            json!({"rules": [{"variation": 0}]}),
            &[r#"rules[0]: added {"variation":0}"#],
        );
    }

    #[test]
    fn rules_with_ids_are_matched_by_id() {
        let a = json!({"id": "a", "variation": 0});
        let b = json!({"id": "b", "variation": 1});
        let c = json!({"id": "c", "variation": 0});
        // Inserting at the top moves nothing.
        check(
            json!({"rules": [a, b]}),
            json!({"rules": [c, a, b]}),
            &[r#"rules[0]: added {"id":"c","variation":0}"#],
        );
        // Swapping two shows one of them moved, and the other's change where it now is.
        let b2 = json!({"id": "b", "variation": 0});
        check(
            json!({"rules": [a, b]}),
            json!({"rules": [b2, a]}),
            &[
                "rules[0].variation: 1 → 0",
                "rules[1]: moved from position 0",
            ],
        );
        check(
            json!({"rules": [a, b, c]}),
            json!({"rules": [a, c]}),
            &[r#"rules[1]: removed {"id":"b","variation":1}"#],
        );
        // Repeated ids cannot be matched: by index.
        let a2 = json!({"id": "a", "variation": 1});
        check(
            json!({"rules": [a, a]}),
            json!({"rules": [a, a2]}),
            &["rules[1].variation: 0 → 1"],
        );
    }

    #[test]
    fn created_and_deleted_items_list_their_fields() {
        let doc = json!({"on": true, "variations": [1, 2]});
        assert_eq!(
            lines(&diff_optional(None, Some(&doc))),
            ["on: added true", "variations: added [1,2]"]
        );
        assert_eq!(
            lines(&diff_optional(Some(&json!({"killed": true})), None)),
            ["killed: removed true"]
        );
        assert_eq!(
            lines(&diff_optional(None, Some(&json!(3)))),
            ["(whole): added 3"]
        );
        assert!(diff_optional(None, None).is_empty());
    }

    #[test]
    fn long_values_are_cut() {
        let long = Value::from("x".repeat(50));
        assert_eq!(compact(&long, 10).chars().count(), 10);
        assert!(compact(&long, 10).ends_with('…'));
        assert_eq!(compact(&json!([1]), 10), "[1]");
    }

    #[test]
    fn the_table_says_what_happened_in_words() {
        let rows = diff(&json!({"a": 1}), &json!({"b": 2}));
        let html = table(&rows, "Changes").into_string();
        assert!(html.contains("removed: <del>"), "{html}");
        assert!(html.contains("added: <ins>"), "{html}");
        assert!(
            html.contains(r#"<th scope="row"><code>a</code></th>"#),
            "{html}"
        );
        assert!(
            table(&[], "Changes")
                .into_string()
                .contains("No differences")
        );
    }
}
