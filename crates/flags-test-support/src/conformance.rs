//! LaunchDarkly's server-side evaluation suite, as vendored in flags-eval
//! (`crates/flags-eval/testdata/ld-server-side-eval`): its files, and each file expanded into
//! the copies its `parameters` make, placeholders (`<name>`) filled as the suite's own runner
//! fills them. Read by the suite's runner and by anything else that wants real flags.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// One copy of a suite file: the parameters it was made with, and the file's document with
/// them (and its constants) substituted, `constants` and `parameters` removed.
pub struct Copy {
    /// This copy's parameter set.
    pub params: Map<String, Value>,
    /// The document: `sdkData`, `evaluations`, ...
    pub body: Value,
}

/// The suite's directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../flags-eval/testdata/ld-server-side-eval")
}

/// The suite's files (YAML or JSON), sorted; at least 25 of them, or this panics.
pub fn files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir().display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yml" || e == "yaml" || e == "json")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 25,
        "conformance files missing: found {}",
        files.len()
    );
    files
}

/// Every copy of the suite file at `path`.
pub fn copies(path: &Path) -> Vec<Copy> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml.apply_merge()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = serde_json::to_value(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let constants = doc
        .get("constants")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut body = doc.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.remove("constants");
        obj.remove("parameters");
    }
    parameter_sets(doc.get("parameters"))
        .into_iter()
        .map(|params| {
            let mut vars = constants.clone();
            for (k, v) in &params {
                vars.insert(k.clone(), v.clone());
            }
            let body = substitute(&body, &vars, 0);
            Copy { params, body }
        })
        .collect()
}

/// One parameter set per copy of the file; `[[a, b], [c, d]]` gives every combination.
fn parameter_sets(params: Option<&Value>) -> Vec<Map<String, Value>> {
    let Some(Value::Array(items)) = params else {
        return vec![Map::new()];
    };
    if items.iter().all(Value::is_array) {
        let mut sets = vec![Map::new()];
        for group in items {
            let mut next = Vec::new();
            for choice in group.as_array().into_iter().flatten() {
                for base in &sets {
                    let mut merged = base.clone();
                    for (k, v) in choice.as_object().into_iter().flatten() {
                        merged.insert(k.clone(), v.clone());
                    }
                    next.push(merged);
                }
            }
            sets = next;
        }
        sets
    } else {
        items
            .iter()
            .map(|i| i.as_object().cloned().unwrap_or_default())
            .collect()
    }
}

fn substitute(v: &Value, vars: &Map<String, Value>, depth: usize) -> Value {
    assert!(depth < 32, "placeholder substitution does not terminate");
    match v {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix('<').and_then(|r| r.strip_suffix('>'))
                && let Some(value) = vars.get(name)
            {
                return substitute(value, vars, depth + 1);
            }
            Value::String(substitute_text(s, vars, depth))
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| substitute(i, vars, depth)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (substitute_text(k, vars, depth), substitute(v, vars, depth)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_text(s: &str, vars: &Map<String, Value>, depth: usize) -> String {
    if !s.contains('<') {
        return s.to_owned();
    }
    let mut out = s.to_owned();
    for (name, value) in vars {
        let placeholder = format!("<{name}>");
        if out.contains(&placeholder) {
            let text = match substitute(value, vars, depth + 1) {
                Value::String(t) => t,
                other => other.to_string(),
            };
            out = out.replace(&placeholder, &text);
        }
    }
    out
}
