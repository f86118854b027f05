//! The targeting form of a flag: a LaunchDarkly flag document shown as form fields, and the
//! fields posted back read into a document again.
//!
//! The form edits the off variation, the fallthrough (a variation, or a percentage rollout with
//! its bucketing attribute), individual targets per context kind, the rules (description,
//! clauses, what they serve) and the prerequisites. Everything else in the document (variations,
//! salt, `trackEvents`, experiments' `seed` and `untracked` buckets, client-side availability,
//! `_meta`, whatever LaunchDarkly adds next) is carried through a hidden copy of the stored
//! document and left exactly as it was.
//!
//! The rule that keeps a save from rewriting what nobody touched: **a field posted back with the
//! text it was shown with leaves the stored value as it was**, byte for byte. Each rule, clause
//! and prerequisite carries its stored JSON in a hidden field, so this holds after rules are
//! added, moved or removed around it. Only what was edited is read from the form, so a
//! document round-trips through the form unchanged even where the form could not show it
//! exactly (a number among a semantic-version clause's values, a duplicate target entry).
//!
//! Buttons named `op` (add, remove, move) change the form and show it again, unsaved; only
//! **Save changes** (`op=save`) turns it into a document.
//!
//! # Field names
//! `offVariation`; `fallthrough.serve` (a variation index, `rollout`, or empty),
//! `fallthrough.weight.{variation}`, `fallthrough.bucketBy`; `targets.{n}.kind`,
//! `targets.{n}.keys.{variation}`; `rules.{n}.base`, `rules.{n}.description`, `rules.{n}.serve`,
//! `rules.{n}.weight.{variation}`, `rules.{n}.bucketBy`, `rules.{n}.clauses.{m}.base`,
//! `.contextKind`, `.attribute`, `.op`, `.values`, `.negate`; `prerequisites.{n}.base`,
//! `.key`, `.variation`; the hidden `doc` (the stored document) and `version`.

use std::collections::{BTreeMap, BTreeSet};

use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::session::Form;

/// Every operator LaunchDarkly defines, in the order the form offers them.
pub const OPERATORS: [&str; 15] = [
    "in",
    "endsWith",
    "startsWith",
    "matches",
    "contains",
    "lessThan",
    "lessThanOrEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "before",
    "after",
    "semVerEqual",
    "semVerLessThan",
    "semVerGreaterThan",
    "segmentMatch",
];

/// A rollout's weights are out of this: 100% in thousandths of a percent.
const FULL_WEIGHT: i64 = 100_000;

/// What the form shows besides the flag: where it posts, the session's token, and the other
/// flags of the environment (for prerequisites).
pub struct View<'a> {
    /// The URL the form posts to.
    pub action: &'a str,
    /// The session's CSRF token.
    pub csrf: &'a str,
    /// The flags a prerequisite may name.
    pub flags: &'a [OtherFlag],
}

/// A flag a prerequisite may name.
#[derive(Debug, Clone)]
pub struct OtherFlag {
    /// Its key.
    pub key: String,
    /// Its name, or its key.
    pub name: String,
    /// Its variations.
    pub variations: Vec<Value>,
}

/// The targeting form's state: the stored document it began from, and every field as it was
/// typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Editor {
    base: Value,
    version: u64,
    off_variation: String,
    fallthrough: Serve,
    targets: Vec<TargetGroup>,
    rules: Vec<RuleForm>,
    prerequisites: Vec<PrereqForm>,
}

/// What a fallthrough or a rule serves.
#[derive(Debug, Clone, PartialEq)]
struct Serve {
    /// A variation index as written, `rollout`, or empty (nothing).
    choice: String,
    /// Each variation's weight in percent, as typed.
    weights: Vec<(i64, String)>,
    bucket_by: String,
}

/// The individual targets of one context kind.
#[derive(Debug, Clone, PartialEq)]
struct TargetGroup {
    kind: String,
    /// Each variation's keys, one per line.
    keys: Vec<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct RuleForm {
    /// The stored rule (`{}` or `{"id"}` for a new one).
    base: Value,
    description: String,
    clauses: Vec<ClauseForm>,
    serve: Serve,
}

#[derive(Debug, Clone, PartialEq)]
struct ClauseForm {
    base: Value,
    context_kind: String,
    attribute: String,
    op: String,
    values: String,
    negate: bool,
}

#[derive(Debug, Clone, PartialEq)]
struct PrereqForm {
    base: Value,
    key: String,
    variation: String,
}

impl Editor {
    /// The form showing `doc`, stored at `version`.
    pub fn from_doc(doc: &Value, version: u64) -> Editor {
        let n = variation_count(doc);
        Editor {
            base: doc.clone(),
            version,
            off_variation: choice_text(doc.get("offVariation")),
            fallthrough: Serve::from_doc(doc.get("fallthrough").unwrap_or(&Value::Null), n),
            targets: TargetGroup::from_doc(doc, n),
            rules: elements(doc.get("rules"))
                .iter()
                .map(|rule| RuleForm::from_doc(rule, n))
                .collect(),
            prerequisites: elements(doc.get("prerequisites"))
                .iter()
                .map(PrereqForm::from_doc)
                .collect(),
        }
    }

    /// The form as posted. Fails only when its hidden fields are missing or damaged.
    pub fn from_form(form: &Form) -> Result<Editor, String> {
        let base: Value = form
            .get("doc")
            .and_then(|doc| serde_json::from_str(doc).ok())
            .filter(Value::is_object)
            .ok_or("the form lacks the flag it was made from")?;
        let version = form
            .get("version")
            .and_then(|v| v.trim().parse().ok())
            .ok_or("the form lacks the version it was made from")?;
        let targets = indexes(form, "targets.")
            .into_iter()
            .map(|g| {
                let prefix = format!("targets.{g}.");
                TargetGroup {
                    kind: text(form, &format!("{prefix}kind")),
                    keys: numbered(form, &format!("{prefix}keys.")),
                }
            })
            .collect();
        let rules = indexes(form, "rules.")
            .into_iter()
            .map(|r| RuleForm::from_form(form, &format!("rules.{r}.")))
            .collect();
        let prerequisites = indexes(form, "prerequisites.")
            .into_iter()
            .map(|p| {
                let prefix = format!("prerequisites.{p}.");
                PrereqForm {
                    base: hidden_json(form, &format!("{prefix}base")),
                    key: text(form, &format!("{prefix}key")),
                    variation: text(form, &format!("{prefix}variation")),
                }
            })
            .collect();
        Ok(Editor {
            off_variation: text(form, "offVariation"),
            fallthrough: Serve::from_form(form, "fallthrough."),
            base,
            version,
            targets,
            rules,
            prerequisites,
        })
    }

    /// The version the form was made from (its `If-Match`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The stored document the form was made from.
    pub fn base(&self) -> &Value {
        &self.base
    }

    /// Applies an `op` button: adds, removes or moves a part of the form. Returns false for
    /// `save` and for anything it does not know (the form is then left as it is).
    pub fn apply(&mut self, op: &str) -> bool {
        let n = variation_count(&self.base);
        match op {
            "add-target-kind" => {
                let kind = if self.targets.iter().any(|g| g.kind.trim() == "user") {
                    ""
                } else {
                    "user"
                };
                self.targets.push(TargetGroup::empty(kind, n));
                return true;
            }
            "add-rule" => {
                self.rules.push(RuleForm::new(n));
                return true;
            }
            "add-prerequisite" => {
                self.prerequisites.push(PrereqForm {
                    base: json!({}),
                    key: String::new(),
                    variation: String::new(),
                });
                return true;
            }
            _ => {}
        }
        let parts: Vec<&str> = op.split('.').collect();
        let index = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok());
        match (parts.first().copied(), index(1), parts.get(2).copied()) {
            (Some("rules"), Some(r), Some(action)) if r < self.rules.len() => match action {
                "remove" if parts.len() == 3 => {
                    self.rules.remove(r);
                }
                "up" if parts.len() == 3 && r > 0 => self.rules.swap(r, r - 1),
                "down" if parts.len() == 3 && r + 1 < self.rules.len() => {
                    self.rules.swap(r, r + 1);
                }
                "add-clause" if parts.len() == 3 => self.rules[r].clauses.push(ClauseForm::new()),
                "clauses" if parts.len() == 5 && parts[4] == "remove" => match index(3) {
                    Some(c) if c < self.rules[r].clauses.len() => {
                        self.rules[r].clauses.remove(c);
                    }
                    _ => return false,
                },
                _ => return false,
            },
            (Some("prerequisites"), Some(p), Some("remove"))
                if parts.len() == 3 && p < self.prerequisites.len() =>
            {
                self.prerequisites.remove(p);
            }
            _ => return false,
        }
        true
    }

    /// The document the form describes: the stored one with the edits applied. Refused with
    /// one sentence per problem (a rollout not adding up to 100%, a prerequisite without a
    /// flag); the store checks the rest when it is saved.
    pub fn to_doc(&self) -> Result<Value, Vec<String>> {
        let mut errors = Vec::new();
        let n = variation_count(&self.base);
        let mut out = self.base.clone();
        set_choice(
            &mut out,
            &self.base,
            "offVariation",
            &self.off_variation,
            "Off variation",
            &mut errors,
        );
        let base_fallthrough = self.base.get("fallthrough").unwrap_or(&Value::Null);
        let mut fallthrough = base_fallthrough.clone();
        self.fallthrough.apply(
            &mut fallthrough,
            base_fallthrough,
            n,
            "Fallthrough",
            &mut errors,
        );
        if fallthrough != *base_fallthrough {
            object(&mut out).insert("fallthrough".to_owned(), fallthrough);
        }
        self.apply_targets(&mut out, &mut errors);
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| rule.to_doc(n, &format!("Rule {}", i + 1), &mut errors))
            .collect();
        set_list(&mut out, &self.base, "rules", rules);
        let prerequisites = self
            .prerequisites
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_doc(&format!("Prerequisite {}", i + 1), &mut errors))
            .collect();
        set_list(&mut out, &self.base, "prerequisites", prerequisites);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// The form: `errors` from a refused save above it, `pending` when it shows edits not
    /// saved yet.
    pub fn render(&self, view: &View<'_>, errors: &[String], pending: bool) -> Markup {
        let labels = labels(variations(&self.base));
        let last_rule = self.rules.len().saturating_sub(1);
        // Edits not saved yet are never replaced by a live refresh.
        let unsaved = pending || !errors.is_empty();
        html! {
            form #targeting method="post" action=(view.action) data-track-edits data-pending[unsaved] {
                div #targeting-fields data-refresh[!unsaved] {
                    input type="hidden" name="_csrf" value=(view.csrf);
                    input type="hidden" name="version" value=(self.version);
                    input type="hidden" name="doc" value=(self.base.to_string());
                    @if !errors.is_empty() {
                        div.flash.error role="alert" {
                            "Not saved:"
                            ul { @for error in errors { li { (error) } } }
                        }
                    } @else if pending {
                        div.flash.pending role="status" {
                            "Not saved yet: " strong { "Save changes" } " stores these edits."
                        }
                    }
                    div.form-actions {
                        button.primary type="submit" name="op" value="save" { "Save changes" }
                        span.muted { " Editing version " (self.version) }
                    }
                    p {
                        label for="f-offVariation" { "Off variation" }
                        select #f-offVariation name="offVariation" {
                            (choice_options(&self.off_variation, &labels, Some("(none: the caller's default)"), false))
                        }
                    }
                    (self.fallthrough.render("fallthrough.", "Fallthrough", &labels))
                    h3 { "Targets" }
                    p.hint { "One context key per line. Targets are checked before the rules." }
                    @for (g, group) in self.targets.iter().enumerate() {
                        (group.render(g, &labels))
                    }
                    p { (op_button("add-target-kind", "Add target kind")) }
                    h3 { "Rules" }
                    @if self.rules.is_empty() {
                        p.muted { "No rules: everyone not targeted gets the fallthrough." }
                    }
                    @for (r, rule) in self.rules.iter().enumerate() {
                        (rule.render(r, last_rule, &labels))
                    }
                    p { (op_button("add-rule", "Add rule")) }
                    h3 { "Prerequisites" }
                    @if self.prerequisites.is_empty() {
                        p.muted { "No prerequisites." }
                    }
                    @for (p, prerequisite) in self.prerequisites.iter().enumerate() {
                        (prerequisite.render(p, view.flags))
                    }
                    p { (op_button("add-prerequisite", "Add prerequisite")) }
                }
            }
        }
    }

    /// Writes the targets back when they changed. See [`rebuild_targets`].
    fn apply_targets(&self, out: &mut Value, errors: &mut Vec<String>) {
        let mut wanted: Vec<((String, i64), Vec<String>)> = Vec::new();
        for group in &self.targets {
            let kind = group.kind.trim();
            for (variation, text) in &group.keys {
                let keys = read_keys(text);
                if keys.is_empty() {
                    continue;
                }
                if kind.is_empty() {
                    errors.push(format!(
                        "Targets: enter the context kind of the keys for variation {variation}."
                    ));
                    continue;
                }
                let pair = (kind.to_owned(), *variation);
                match wanted.iter_mut().find(|(p, _)| *p == pair) {
                    Some((_, list)) => list.extend(keys),
                    None => wanted.push((pair, keys)),
                }
            }
        }
        let (_, stored) = target_map(&self.base);
        let stored: BTreeMap<_, _> = stored.into_iter().filter(|(_, k)| !k.is_empty()).collect();
        let unchanged = wanted.len() == stored.len()
            && wanted
                .iter()
                .all(|(pair, keys)| stored.get(pair) == Some(keys));
        if !unchanged {
            rebuild_targets(out, &self.base, &wanted);
        }
    }
}

impl Serve {
    fn from_doc(container: &Value, n: usize) -> Serve {
        let variation = container.get("variation").filter(|v| !v.is_null());
        let rollout = container.get("rollout").filter(|r| r.is_object());
        let choice = match (variation, rollout) {
            (Some(v), _) => v.to_string(),
            (None, Some(_)) => "rollout".to_owned(),
            (None, None) => String::new(),
        };
        let sums = rollout.map(weight_sums).unwrap_or_default();
        let weights = rows(n, sums.keys().copied())
            .into_iter()
            .map(|v| {
                let text = match rollout {
                    Some(_) => format_percent(sums.get(&v).copied().unwrap_or(0)),
                    None => String::new(),
                };
                (v, text)
            })
            .collect();
        Serve {
            choice,
            weights,
            bucket_by: text_of(rollout.and_then(|r| r.get("bucketBy"))),
        }
    }

    fn from_form(form: &Form, prefix: &str) -> Serve {
        Serve {
            choice: text(form, &format!("{prefix}serve")),
            weights: numbered(form, &format!("{prefix}weight.")),
            bucket_by: text(form, &format!("{prefix}bucketBy")),
        }
    }

    fn new(n: usize) -> Serve {
        Serve {
            choice: if n > 0 { "0".to_owned() } else { String::new() },
            weights: rows(n, std::iter::empty())
                .into_iter()
                .map(|v| (v, String::new()))
                .collect(),
            bucket_by: String::new(),
        }
    }

    /// Applies this serve to `out`, a copy of `base` (the fallthrough object, or a rule).
    fn apply(&self, out: &mut Value, base: &Value, n: usize, what: &str, errors: &mut Vec<String>) {
        let shown = Serve::from_doc(base, n);
        let base_rollout = base.get("rollout").filter(|r| r.is_object());
        if self.choice == shown.choice {
            let as_shown = self.weights == shown.weights && self.bucket_by == shown.bucket_by;
            if self.choice != "rollout" || as_shown {
                return;
            }
            let Some(weights) = self.parse_weights(what, errors) else {
                return;
            };
            let sums = base_rollout.map(weight_sums).unwrap_or_default();
            let same_weights = weights
                .iter()
                .all(|(v, w)| sums.get(v).copied().unwrap_or(0) == *w)
                && sums.keys().all(|v| weights.iter().any(|(w, _)| w == v));
            if same_weights && self.bucket_by == shown.bucket_by {
                return;
            }
            if let Some(rollout) = self.rollout(base_rollout, &weights, what, errors) {
                object(out).insert("rollout".to_owned(), rollout);
            }
            return;
        }
        match self.choice.as_str() {
            "rollout" => {
                let Some(weights) = self.parse_weights(what, errors) else {
                    return;
                };
                if let Some(rollout) = self.rollout(base_rollout, &weights, what, errors) {
                    let map = object(out);
                    map.remove("variation");
                    map.insert("rollout".to_owned(), rollout);
                }
            }
            "" => {
                let map = object(out);
                map.remove("variation");
                map.remove("rollout");
            }
            index => match index.trim().parse::<i64>() {
                Ok(index) => {
                    let map = object(out);
                    map.remove("rollout");
                    map.insert("variation".to_owned(), Value::from(index));
                }
                Err(_) => errors.push(format!("{what}: choose a variation to serve.")),
            },
        }
    }

    fn parse_weights(&self, what: &str, errors: &mut Vec<String>) -> Option<Vec<(i64, i64)>> {
        let mut weights = Vec::new();
        let mut ok = true;
        for (variation, text) in &self.weights {
            match parse_percent(text) {
                Some(w) if w >= 0 => weights.push((*variation, w)),
                _ => {
                    ok = false;
                    errors.push(format!(
                        "{what}: the weight of variation {variation} must be a percentage \
                         from 0 to 100 with at most 3 decimals, not {:?}.",
                        text.trim()
                    ));
                }
            }
        }
        ok.then_some(weights)
    }

    /// The rollout with these weights, keeping what the stored one had besides (its kind,
    /// seed, context kind, untracked buckets) and the order of its buckets.
    fn rollout(
        &self,
        base: Option<&Value>,
        weights: &[(i64, i64)],
        what: &str,
        errors: &mut Vec<String>,
    ) -> Option<Value> {
        let total: i64 = weights.iter().map(|(_, w)| w).sum();
        if total != FULL_WEIGHT {
            errors.push(format!(
                "{what}: the weights add up to {}%, not 100%.",
                format_percent(total)
            ));
            return None;
        }
        let weight_of = |v: i64| weights.iter().find(|(x, _)| *x == v).map(|(_, w)| *w);
        let mut rollout = base.cloned().unwrap_or_else(|| json!({}));
        let mut buckets = Vec::new();
        let mut placed = BTreeSet::new();
        for bucket in elements(base.and_then(|b| b.get("variations"))) {
            let Some(v) = bucket_variation(bucket) else {
                continue;
            };
            if !placed.insert(v) {
                continue;
            }
            let mut bucket = bucket.clone();
            object(&mut bucket).insert("weight".to_owned(), Value::from(weight_of(v).unwrap_or(0)));
            buckets.push(bucket);
        }
        for (v, w) in weights {
            if *w > 0 && placed.insert(*v) {
                buckets.push(json!({"variation": v, "weight": w}));
            }
        }
        let map = object(&mut rollout);
        map.insert("variations".to_owned(), Value::Array(buckets));
        let base_bucket_by = text_of(base.and_then(|b| b.get("bucketBy")));
        if self.bucket_by != base_bucket_by {
            match self.bucket_by.trim() {
                "" => map.remove("bucketBy"),
                attribute => map.insert("bucketBy".to_owned(), Value::from(attribute)),
            };
        }
        Some(rollout)
    }

    fn render(&self, prefix: &str, label: &str, labels: &[String]) -> Markup {
        let serve_id = field_id(&format!("{prefix}serve"));
        let total: i64 = self
            .weights
            .iter()
            .filter_map(|(_, t)| parse_percent(t))
            .sum();
        html! {
            div.serve {
                p {
                    label for=(serve_id) { (label) }
                    select #(serve_id) name=(format!("{prefix}serve")) data-serve {
                        (choice_options(&self.choice, labels, (self.choice.is_empty()).then_some("(not set)"), true))
                    }
                }
                div.rollout data-rollout {
                    p.hint { "Used when " (label) " is Percentage rollout. Weights are percentages of contexts, adding up to 100." }
                    @for (variation, text) in &self.weights {
                        @let id = field_id(&format!("{prefix}weight.{variation}"));
                        p {
                            label for=(id) { "Weight of " (row_label(labels, *variation)) " (%)" }
                            input #(id) type="number" name=(format!("{prefix}weight.{variation}"))
                                value=(text) step="0.001" min="0" max="100" inputmode="decimal" data-weight;
                        }
                    }
                    p {
                        output.total data-rollout-total aria-live="polite" {
                            "Total: " (format_percent(total)) "%"
                        }
                    }
                    @let id = field_id(&format!("{prefix}bucketBy"));
                    p {
                        label for=(id) { "Bucket by" }
                        input #(id) type="text" name=(format!("{prefix}bucketBy")) value=(self.bucket_by) placeholder="key";
                    }
                }
            }
        }
    }
}

impl TargetGroup {
    fn from_doc(doc: &Value, n: usize) -> Vec<TargetGroup> {
        let (kinds, map) = target_map(doc);
        let mut groups: Vec<TargetGroup> = kinds
            .into_iter()
            .map(|kind| {
                let used = map
                    .keys()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, v)| *v)
                    .collect::<Vec<_>>();
                let keys = rows(n, used.into_iter())
                    .into_iter()
                    .map(|v| {
                        let keys = map.get(&(kind.clone(), v)).cloned().unwrap_or_default();
                        (v, keys_text(&keys))
                    })
                    .collect();
                TargetGroup { kind, keys }
            })
            .collect();
        if groups.is_empty() {
            groups.push(TargetGroup::empty("user", n));
        }
        groups
    }

    fn empty(kind: &str, n: usize) -> TargetGroup {
        TargetGroup {
            kind: kind.to_owned(),
            keys: rows(n, std::iter::empty())
                .into_iter()
                .map(|v| (v, String::new()))
                .collect(),
        }
    }

    fn render(&self, g: usize, labels: &[String]) -> Markup {
        let kind_id = field_id(&format!("targets.{g}.kind"));
        let shown_kind = if self.kind.trim().is_empty() {
            "(enter a kind)"
        } else {
            self.kind.trim()
        };
        html! {
            fieldset.targets {
                legend { "Targets of kind " (shown_kind) }
                p {
                    label for=(kind_id) { "Context kind" }
                    input #(kind_id) type="text" name=(format!("targets.{g}.kind")) value=(self.kind) placeholder="user";
                }
                @for (variation, text) in &self.keys {
                    @let name = format!("targets.{g}.keys.{variation}");
                    @let id = field_id(&name);
                    p {
                        label for=(id) { "Keys for " (row_label(labels, *variation)) }
                        textarea #(id) name=(name) rows=(text_rows(text)) { (text) }
                    }
                }
            }
        }
    }
}

impl RuleForm {
    fn from_doc(rule: &Value, n: usize) -> RuleForm {
        RuleForm {
            base: rule.clone(),
            description: text_of(rule.get("description")),
            clauses: elements(rule.get("clauses"))
                .iter()
                .map(ClauseForm::from_doc)
                .collect(),
            serve: Serve::from_doc(rule, n),
        }
    }

    fn from_form(form: &Form, prefix: &str) -> RuleForm {
        let clauses = indexes(form, &format!("{prefix}clauses."))
            .into_iter()
            .map(|c| {
                let p = format!("{prefix}clauses.{c}.");
                ClauseForm {
                    base: hidden_json(form, &format!("{p}base")),
                    context_kind: text(form, &format!("{p}contextKind")),
                    attribute: text(form, &format!("{p}attribute")),
                    op: text(form, &format!("{p}op")),
                    values: text(form, &format!("{p}values")),
                    negate: form.get(&format!("{p}negate")).is_some(),
                }
            })
            .collect();
        RuleForm {
            base: hidden_json(form, &format!("{prefix}base")),
            description: text(form, &format!("{prefix}description")),
            clauses,
            serve: Serve::from_form(form, prefix),
        }
    }

    /// A new rule: a fresh id (LaunchDarkly reports it in `RULE_MATCH` reasons), one clause,
    /// serving the first variation.
    fn new(n: usize) -> RuleForm {
        RuleForm {
            base: json!({"id": new_rule_id()}),
            description: String::new(),
            clauses: vec![ClauseForm::new()],
            serve: Serve::new(n),
        }
    }

    fn to_doc(&self, n: usize, what: &str, errors: &mut Vec<String>) -> Value {
        let mut out = self.base.clone();
        set_text(&mut out, &self.base, "description", &self.description);
        let clauses = self.clauses.iter().map(ClauseForm::to_doc).collect();
        set_list(&mut out, &self.base, "clauses", clauses);
        self.serve.apply(&mut out, &self.base, n, what, errors);
        out
    }

    fn render(&self, r: usize, last: usize, labels: &[String]) -> Markup {
        let prefix = format!("rules.{r}.");
        let description_id = field_id(&format!("{prefix}description"));
        html! {
            fieldset.rule {
                legend { "Rule " (r + 1) }
                input type="hidden" name=(format!("{prefix}base")) value=(self.base.to_string());
                p {
                    label for=(description_id) { "Description" }
                    input #(description_id) type="text" name=(format!("{prefix}description")) value=(self.description);
                }
                @for (c, clause) in self.clauses.iter().enumerate() {
                    (clause.render(&format!("{prefix}clauses.{c}."), c))
                }
                @if self.clauses.is_empty() {
                    p.muted { "No clauses: this rule matches every context." }
                }
                p { (op_button(&format!("{prefix}add-clause"), "Add clause")) }
                (self.serve.render(&prefix, "Serve", labels))
                p.rule-actions {
                    @if r > 0 { (op_button(&format!("{prefix}up"), "Move up")) " " }
                    @if r < last { (op_button(&format!("{prefix}down"), "Move down")) " " }
                    (op_button(&format!("{prefix}remove"), "Remove rule"))
                }
            }
        }
    }
}

impl ClauseForm {
    fn from_doc(clause: &Value) -> ClauseForm {
        let op = text_of(clause.get("op"));
        ClauseForm {
            base: clause.clone(),
            context_kind: text_of(clause.get("contextKind")),
            attribute: text_of(clause.get("attribute")),
            values: values_text(clause.get("values"), &op),
            op,
            negate: clause.get("negate") == Some(&Value::Bool(true)),
        }
    }

    fn new() -> ClauseForm {
        ClauseForm {
            base: json!({}),
            context_kind: "user".to_owned(),
            attribute: "key".to_owned(),
            op: "in".to_owned(),
            values: String::new(),
            negate: false,
        }
    }

    fn to_doc(&self) -> Value {
        let base = &self.base;
        let mut out = base.clone();
        set_text(&mut out, base, "contextKind", &self.context_kind);
        set_text(&mut out, base, "attribute", &self.attribute);
        let base_op = text_of(base.get("op"));
        set_text(&mut out, base, "op", &self.op);
        let op = self.op.trim();
        let shown = values_text(base.get("values"), &base_op);
        if op != base_op || lines(&self.values) != lines(&shown) {
            object(&mut out).insert(
                "values".to_owned(),
                Value::Array(read_values(&self.values, op)),
            );
        }
        let base_negate = base.get("negate") == Some(&Value::Bool(true));
        if self.negate != base_negate {
            object(&mut out).insert("negate".to_owned(), Value::Bool(self.negate));
        }
        out
    }

    fn render(&self, prefix: &str, c: usize) -> Markup {
        let id = |field: &str| field_id(&format!("{prefix}{field}"));
        let name = |field: &str| format!("{prefix}{field}");
        let known = OPERATORS.contains(&self.op.as_str());
        html! {
            fieldset.clause {
                legend { "Clause " (c + 1) }
                input type="hidden" name=(name("base")) value=(self.base.to_string());
                p {
                    label for=(id("contextKind")) { "Context kind" }
                    input #(id("contextKind")) type="text" name=(name("contextKind")) value=(self.context_kind) placeholder="user";
                }
                p {
                    label for=(id("attribute")) { "Attribute" }
                    input #(id("attribute")) type="text" name=(name("attribute")) value=(self.attribute);
                }
                p {
                    label for=(id("op")) { "Operator" }
                    select #(id("op")) name=(name("op")) {
                        @if !known {
                            option value=(self.op) selected {
                                @if self.op.is_empty() { "(none)" } @else { (self.op) " (unknown)" }
                            }
                        }
                        @for op in OPERATORS {
                            option value=(op) selected[op == self.op] { (op) }
                        }
                    }
                }
                p {
                    label for=(id("values")) { "Values" }
                    textarea #(id("values")) name=(name("values")) rows=(text_rows(&self.values))
                        aria-describedby=(id("values-hint")) { (self.values) }
                    span.hint #(id("values-hint")) {
                        "One per line. Numbers and true/false are read as such for in, "
                        "numbers for the numeric and date operators; write \"quoted\" text to keep it text."
                    }
                }
                p.check {
                    input #(id("negate")) type="checkbox" name=(name("negate")) value="1" checked[self.negate];
                    label for=(id("negate")) { "Negate" }
                }
                p { (op_button(&format!("{prefix}remove"), "Remove clause")) }
            }
        }
    }
}

impl PrereqForm {
    fn from_doc(prerequisite: &Value) -> PrereqForm {
        PrereqForm {
            base: prerequisite.clone(),
            key: text_of(prerequisite.get("key")),
            variation: choice_text(prerequisite.get("variation")),
        }
    }

    fn to_doc(&self, what: &str, errors: &mut Vec<String>) -> Value {
        let mut out = self.base.clone();
        if self.key.trim().is_empty() {
            errors.push(format!("{what}: choose a flag."));
        }
        set_text(&mut out, &self.base, "key", &self.key);
        if self.variation.trim().is_empty() {
            errors.push(format!("{what}: choose a variation."));
        }
        set_choice(
            &mut out,
            &self.base,
            "variation",
            &self.variation,
            what,
            errors,
        );
        out
    }

    fn render(&self, p: usize, flags: &[OtherFlag]) -> Markup {
        let prefix = format!("prerequisites.{p}.");
        let key_id = field_id(&format!("{prefix}key"));
        let variation_id = field_id(&format!("{prefix}variation"));
        let chosen = flags.iter().find(|f| f.key == self.key);
        let known = chosen.is_some() || self.key.is_empty();
        let variation_labels = match chosen {
            Some(flag) => labels(&flag.variations),
            // Until a flag is chosen, offer every index any flag has.
            None => {
                let most = flags.iter().map(|f| f.variations.len()).max().unwrap_or(2);
                (0..most).map(|i| format!("variation {i}")).collect()
            }
        };
        html! {
            fieldset.prerequisite {
                legend { "Prerequisite " (p + 1) }
                input type="hidden" name=(format!("{prefix}base")) value=(self.base.to_string());
                p {
                    label for=(key_id) { "Flag" }
                    select #(key_id) name=(format!("{prefix}key")) {
                        @if self.key.is_empty() {
                            option value="" selected { "(choose a flag)" }
                        }
                        @if !known {
                            option value=(self.key) selected { (self.key) " (not a live flag here)" }
                        }
                        @for flag in flags {
                            option value=(flag.key) selected[flag.key == self.key] {
                                (flag.name) @if flag.name != flag.key { " (" (flag.key) ")" }
                            }
                        }
                    }
                }
                p {
                    label for=(variation_id) { "Variation" }
                    select #(variation_id) name=(format!("{prefix}variation")) {
                        (choice_options(&self.variation, &variation_labels, self.variation.is_empty().then_some("(choose a variation)"), false))
                    }
                    span.hint { " It must be on and serve this variation." }
                }
                p { (op_button(&format!("{prefix}remove"), "Remove")) }
            }
        }
    }
}

/// Writes `wanted` (keys per context kind and variation, in the form's order) as LaunchDarkly
/// stores targets: `user` keys in `targets`, other kinds' in `contextTargets`, and, once
/// `contextTargets` is in use, a `user` entry there without values for each `targets` entry,
/// which is where LaunchDarkly checks user targets among the other kinds. Entries keep their
/// stored order and any other fields; entries whose keys are gone are dropped, new ones are
/// appended.
fn rebuild_targets(out: &mut Value, base: &Value, wanted: &[((String, i64), Vec<String>)]) {
    let keys_for = |kind: &str, v: i64| {
        wanted
            .iter()
            .find(|((k, x), _)| k == kind && *x == v)
            .map(|(_, keys)| keys)
    };
    let base_targets = elements(base.get("targets"));
    let base_context = elements(base.get("contextTargets"));

    let mut targets = Vec::new();
    let mut user = Vec::new();
    for entry in base_targets {
        let Some(v) = bucket_variation(entry) else {
            continue;
        };
        if user.contains(&v) {
            continue;
        }
        if let Some(keys) = keys_for("user", v) {
            let mut entry = entry.clone();
            object(&mut entry).insert("values".to_owned(), json!(keys));
            targets.push(entry);
            user.push(v);
        }
    }
    for ((kind, v), keys) in wanted {
        if kind == "user" && !user.contains(v) {
            targets.push(json!({"variation": v, "values": keys}));
            user.push(*v);
        }
    }

    let mut context = Vec::new();
    let mut placed: Vec<(String, i64)> = Vec::new();
    for entry in base_context {
        let Some(v) = bucket_variation(entry) else {
            continue;
        };
        let kind = match entry.get("contextKind").and_then(Value::as_str) {
            None | Some("") => "user",
            Some(kind) => kind,
        };
        let pair = (kind.to_owned(), v);
        if placed.contains(&pair) {
            continue;
        }
        let mut entry = entry.clone();
        if kind == "user" {
            if !user.contains(&v) {
                continue;
            }
            if entry.get("values").is_some() {
                object(&mut entry).insert("values".to_owned(), json!([]));
            }
        } else {
            let Some(keys) = keys_for(kind, v) else {
                continue;
            };
            object(&mut entry).insert("values".to_owned(), json!(keys));
        }
        context.push(entry);
        placed.push(pair);
    }
    for ((kind, v), keys) in wanted {
        if kind != "user" && !placed.contains(&(kind.clone(), *v)) {
            context.push(json!({"contextKind": kind, "variation": v, "values": keys}));
            placed.push((kind.clone(), *v));
        }
    }
    if !base_context.is_empty() || !context.is_empty() {
        for v in &user {
            if !placed.contains(&("user".to_owned(), *v)) {
                context.push(json!({"contextKind": "user", "variation": v, "values": []}));
                placed.push(("user".to_owned(), *v));
            }
        }
    }
    let map = object(out);
    if base.get("targets").is_some() || !targets.is_empty() {
        map.insert("targets".to_owned(), Value::Array(targets));
    }
    if base.get("contextTargets").is_some() || !context.is_empty() {
        map.insert("contextTargets".to_owned(), Value::Array(context));
    }
}

/// Target keys by (context kind, variation).
type TargetKeys = BTreeMap<(String, i64), Vec<String>>;

/// Every target key of `doc` by (context kind, variation), and the kinds in the order
/// LaunchDarkly checks them. A `user` kind's keys are those of its `targets` entries, then of
/// any `user` entry in `contextTargets` that has values of its own.
fn target_map(doc: &Value) -> (Vec<String>, TargetKeys) {
    let mut kinds: Vec<String> = Vec::new();
    let mut map = TargetKeys::new();
    let see = |kind: &str, kinds: &mut Vec<String>| {
        if !kinds.iter().any(|k| k == kind) {
            kinds.push(kind.to_owned());
        }
    };
    let key_list = |entry: &Value| -> Vec<String> {
        elements(entry.get("values"))
            .iter()
            .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_owned))
            .collect()
    };
    let context = elements(doc.get("contextTargets"));
    for entry in context {
        let kind = match entry.get("contextKind").and_then(Value::as_str) {
            None | Some("") => "user",
            Some(kind) => kind,
        };
        see(kind, &mut kinds);
    }
    for entry in elements(doc.get("targets")) {
        if let Some(v) = bucket_variation(entry) {
            see("user", &mut kinds);
            map.entry(("user".to_owned(), v))
                .or_default()
                .extend(key_list(entry));
        }
    }
    for entry in context {
        let kind = match entry.get("contextKind").and_then(Value::as_str) {
            None | Some("") => "user",
            Some(kind) => kind,
        };
        if let Some(v) = bucket_variation(entry) {
            map.entry((kind.to_owned(), v))
                .or_default()
                .extend(key_list(entry));
        }
    }
    (kinds, map)
}

/// How a clause's values are typed, one per line (`Values`):
/// - a line holding a JSON string (`"quoted"`), array or object is that value, whatever the
///   operator (so any text can be written: `"42"` stays text, `" padded "` keeps its spaces);
/// - for `in`, a line that is a JSON number or `true`/`false` is that number or boolean;
/// - for the numeric operators (`lessThan`, ...) and the date operators (`before`, `after`),
///   a line that is a JSON number is that number (dates may be Unix milliseconds or text);
/// - any other line is its text, without surrounding spaces. Empty lines are skipped.
///
/// Values are shown the same way, quoted where their plain text would read differently.
pub fn read_values(text: &str, op: &str) -> Vec<Value> {
    lines(text)
        .iter()
        .map(|line| read_value(line, op))
        .collect()
}

fn read_value(line: &str, op: &str) -> Value {
    if line.starts_with(['"', '[', '{'])
        && let Ok(value) = serde_json::from_str::<Value>(line)
        && (value.is_string() || value.is_array() || value.is_object())
    {
        return value;
    }
    let typed = serde_json::from_str::<Value>(line).ok();
    match (op, typed) {
        ("in", Some(value @ (Value::Number(_) | Value::Bool(_)))) => value,
        (
            "lessThan" | "lessThanOrEqual" | "greaterThan" | "greaterThanOrEqual" | "before"
            | "after",
            Some(value @ Value::Number(_)),
        ) => value,
        _ => Value::String(line.to_owned()),
    }
}

fn value_text(value: &Value, op: &str) -> String {
    match value {
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.trim() == s
                && !s.contains(['\n', '\r'])
                && read_value(s, op) == *value;
            if plain { s.clone() } else { value.to_string() }
        }
        other => other.to_string(),
    }
}

fn values_text(values: Option<&Value>, op: &str) -> String {
    match values {
        None | Some(Value::Null) => String::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| value_text(v, op))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
    }
}

/// Target keys, one per line; a line holding a JSON string (`"quoted"`) is that string, so a
/// key with surrounding spaces can be written.
fn read_keys(text: &str) -> Vec<String> {
    lines(text)
        .into_iter()
        .map(|line| match serde_json::from_str::<Value>(&line) {
            Ok(Value::String(s)) if line.starts_with('"') => s,
            _ => line,
        })
        .collect()
}

fn keys_text(keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            let plain =
                !k.is_empty() && k.trim() == k && !k.starts_with('"') && !k.contains(['\n', '\r']);
            if plain {
                k.clone()
            } else {
                Value::from(k.as_str()).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The non-empty lines of a textarea, trimmed (browsers send `\r\n`).
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A percentage as typed: digits with up to 3 decimals (LaunchDarkly's weights are
/// thousandths of a percent); empty is 0. `None` when it is not such a number.
fn parse_percent(text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let decimal = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || whole.len() > 12
        || fraction.len() > 3
        || !decimal(whole)
        || !decimal(fraction)
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = format!("{fraction:0<3}").parse().ok()?;
    let value = whole.checked_mul(1000)?.checked_add(fraction)?;
    Some(if negative { -value } else { value })
}

/// Thousandths of a percent as a percentage: `50000` is `50`, `33333` is `33.333`.
fn format_percent(weight: i64) -> String {
    let sign = if weight < 0 { "-" } else { "" };
    let weight = weight.unsigned_abs();
    let (whole, fraction) = (weight / 1000, weight % 1000);
    if fraction == 0 {
        format!("{sign}{whole}")
    } else {
        let fraction = format!("{fraction:03}");
        format!("{sign}{whole}.{}", fraction.trim_end_matches('0'))
    }
}

/// A rollout's total weight per variation.
fn weight_sums(rollout: &Value) -> BTreeMap<i64, i64> {
    let mut sums = BTreeMap::new();
    for bucket in elements(rollout.get("variations")) {
        if let Some(v) = bucket_variation(bucket) {
            let weight = bucket.get("weight").and_then(Value::as_i64).unwrap_or(0);
            *sums.entry(v).or_insert(0) += weight;
        }
    }
    sums
}

/// The variation index of a target or rollout bucket (absent reads as 0, as the SDKs read it).
fn bucket_variation(entry: &Value) -> Option<i64> {
    match entry.get("variation") {
        None | Some(Value::Null) => Some(0),
        Some(v) => v.as_i64(),
    }
}

/// The variation rows a part of the form shows: every variation of the flag, then any other
/// index the stored document uses (which the store would refuse, but is shown, not dropped).
fn rows(n: usize, used: impl Iterator<Item = i64>) -> Vec<i64> {
    let count = i64::try_from(n).unwrap_or(i64::MAX);
    let mut rows: Vec<i64> = (0..count).collect();
    let extra: BTreeSet<i64> = used.filter(|v| !(0..count).contains(v)).collect();
    rows.extend(extra);
    rows
}

fn variations(doc: &Value) -> &[Value] {
    elements(doc.get("variations"))
}

fn variation_count(doc: &Value) -> usize {
    variations(doc).len()
}

/// How each variation is named in the form: a string variation by its text, others by their
/// JSON; repeated names get their index.
pub fn labels(variations: &[Value]) -> Vec<String> {
    let plain: Vec<String> = variations
        .iter()
        .map(|v| match v {
            Value::String(s) if !s.trim().is_empty() => short(s, 40),
            other => super::diff::compact(other, 40),
        })
        .collect();
    plain
        .iter()
        .enumerate()
        .map(|(i, label)| {
            if plain.iter().filter(|l| *l == label).count() > 1 {
                format!("{label} (variation {i})")
            } else {
                label.clone()
            }
        })
        .collect()
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

fn row_label(labels: &[String], variation: i64) -> String {
    usize::try_from(variation)
        .ok()
        .and_then(|i| labels.get(i))
        .cloned()
        .unwrap_or_else(|| format!("variation {variation} (not a variation of this flag)"))
}

/// The options of a variation select: `none` first (an empty value) when given, each
/// variation by index, `Percentage rollout` when `rollout`, and the current value when it is
/// none of these (an index the flag does not have).
fn choice_options(current: &str, labels: &[String], none: Option<&str>, rollout: bool) -> Markup {
    let indexes: Vec<String> = (0..labels.len()).map(|i| i.to_string()).collect();
    let known = indexes.iter().any(|i| i == current)
        || (rollout && current == "rollout")
        || (none.is_some() && current.is_empty());
    html! {
        @if let Some(none) = none {
            option value="" selected[current.is_empty()] { (none) }
        }
        @for (i, label) in labels.iter().enumerate() {
            option value=(indexes[i]) selected[indexes[i] == current] { (label) }
        }
        @if rollout {
            option value="rollout" selected[current == "rollout"] { "Percentage rollout" }
        }
        @if !known {
            option value=(current) selected { (current) " (not a variation of this flag)" }
        }
    }
}

/// A submit button that changes the form rather than saving it; it skips the browser's own
/// checks, which are for saving.
fn op_button(op: &str, label: &str) -> Markup {
    html! {
        button type="submit" name="op" value=(op) formnovalidate { (label) }
    }
}

fn text_rows(text: &str) -> usize {
    (text.lines().count() + 1).clamp(2, 12)
}

/// A field's element id: its name with dots as dashes.
fn field_id(name: &str) -> String {
    format!("f-{}", name.replace('.', "-"))
}

/// A stored value as a select shows it: its JSON, or empty when absent or null.
fn choice_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(v) => v.to_string(),
    }
}

/// A stored value as a text field shows it: a string's text, empty when absent or null,
/// otherwise its JSON.
fn text_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Sets text field `key` of `out` unless the form shows it as stored in `base`; empty
/// removes it.
fn set_text(out: &mut Value, base: &Value, key: &str, posted: &str) {
    if posted == text_of(base.get(key)) {
        return;
    }
    match posted.trim() {
        "" => {
            object(out).remove(key);
        }
        text => {
            object(out).insert(key.to_owned(), Value::from(text));
        }
    }
}

/// Sets variation index `key` of `out` from a select, unless it shows what `base` has.
fn set_choice(
    out: &mut Value,
    base: &Value,
    key: &str,
    posted: &str,
    what: &str,
    errors: &mut Vec<String>,
) {
    if posted == choice_text(base.get(key)) {
        return;
    }
    match posted.trim() {
        "" => {
            object(out).remove(key);
        }
        index => match index.parse::<i64>() {
            Ok(index) => {
                object(out).insert(key.to_owned(), Value::from(index));
            }
            Err(_) => errors.push(format!("{what}: {index:?} is not a variation.")),
        },
    }
}

/// Sets list `key` of `out` unless it equals the stored one (an absent or null list and an
/// empty one are the same).
fn set_list(out: &mut Value, base: &Value, key: &str, list: Vec<Value>) {
    let stored = base.get(key);
    let same = match stored {
        Some(Value::Array(items)) => *items == list,
        _ => list.is_empty(),
    };
    if !same {
        object(out).insert(key.to_owned(), Value::Array(list));
    }
}

/// The elements of an array field; nothing when it is absent or not an array.
fn elements(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// `value` as an object to write into, replacing whatever else it was.
fn object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        // Made an object just above.
        _ => unreachable!("an object was just put here"),
    }
}

/// The indexes `n` of fields named `{prefix}{n}...`, in order.
fn indexes(form: &Form, prefix: &str) -> Vec<usize> {
    let set: BTreeSet<usize> = form
        .iter()
        .filter_map(|(name, _)| name.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    set.into_iter().collect()
}

/// The fields named `{prefix}{variation}`, in the order posted.
fn numbered(form: &Form, prefix: &str) -> Vec<(i64, String)> {
    form.iter()
        .filter_map(|(name, value)| {
            let v = name.strip_prefix(prefix)?.parse().ok()?;
            Some((v, value.to_owned()))
        })
        .collect()
}

fn text(form: &Form, name: &str) -> String {
    form.get(name).unwrap_or_default().to_owned()
}

fn hidden_json(form: &Form, name: &str) -> Value {
    form.get(name)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| json!({}))
}

/// A random rule id in the form LaunchDarkly gives them (a version 4 UUID).
fn new_rule_id() -> String {
    let mut b = [0u8; 16];
    // As for session ids: a server without randomness cannot go on.
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("no randomness for a rule id: {e}"));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The fields a browser submits for the form in `html` (inputs, checked boxes, textareas,
    /// selects), read from the markup as a browser reads it: attribute values unescaped, the
    /// newline right after `<textarea>` dropped, an unselected select sending its first option.
    fn submitted(html: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = html;
        while let Some(at) = rest.find('<') {
            rest = &rest[at + 1..];
            let Some(close) = rest.find('>') else { break };
            let tag_text = &rest[..close];
            rest = &rest[close + 1..];
            let name_end = tag_text
                .find(|c: char| c.is_whitespace())
                .unwrap_or(tag_text.len());
            let attrs = attributes(&tag_text[name_end..]);
            let attr = |name: &str| {
                attrs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            match &tag_text[..name_end] {
                "input" => {
                    let Some(name) = attr("name") else { continue };
                    let kind = attr("type").unwrap_or_else(|| "text".to_owned());
                    if kind == "checkbox" || kind == "radio" {
                        if attr("checked").is_some() {
                            out.push((name, attr("value").unwrap_or_else(|| "on".to_owned())));
                        }
                    } else if kind != "submit" && kind != "button" {
                        out.push((name, attr("value").unwrap_or_default()));
                    }
                }
                "textarea" => {
                    let end = rest.find("</textarea>").unwrap_or(rest.len());
                    let mut text = unescape(&rest[..end]);
                    if text.starts_with('\n') {
                        text.remove(0);
                    }
                    if let Some(name) = attr("name") {
                        out.push((name, text));
                    }
                    rest = &rest[end..];
                }
                "select" => {
                    let end = rest.find("</select>").unwrap_or(rest.len());
                    let options = select_options(&rest[..end]);
                    let chosen = options
                        .iter()
                        .find(|(_, selected)| *selected)
                        .or(options.first())
                        .map(|(value, _)| value.clone());
                    if let (Some(name), Some(value)) = (attr("name"), chosen) {
                        out.push((name, value));
                    }
                    rest = &rest[end..];
                }
                _ => {}
            }
        }
        out
    }

    fn select_options(inner: &str) -> Vec<(String, bool)> {
        let mut options = Vec::new();
        let mut rest = inner;
        while let Some(at) = rest.find("<option") {
            rest = &rest[at + "<option".len()..];
            let close = rest.find('>').unwrap_or(rest.len());
            let attrs = attributes(&rest[..close]);
            rest = &rest[close + 1..];
            let end = rest.find("</option>").unwrap_or(rest.len());
            let text = unescape(&rest[..end]);
            let value = attrs
                .iter()
                .find(|(n, _)| n == "value")
                .map_or(text, |(_, v)| v.clone());
            options.push((value, attrs.iter().any(|(n, _)| n == "selected")));
        }
        options
    }

    fn attributes(text: &str) -> Vec<(String, String)> {
        let mut attrs = Vec::new();
        let mut rest = text.trim_start();
        while !rest.is_empty() {
            let end = rest
                .find(|c: char| c == '=' || c.is_whitespace())
                .unwrap_or(rest.len());
            let name = rest[..end].to_owned();
            rest = &rest[end..];
            if let Some(quoted) = rest.strip_prefix("=\"") {
                let close = quoted.find('"').unwrap_or(quoted.len());
                attrs.push((name, unescape(&quoted[..close])));
                rest = &quoted[(close + 1).min(quoted.len())..];
            } else {
                attrs.push((name, String::new()));
            }
            rest = rest.trim_start();
        }
        attrs
    }

    fn unescape(text: &str) -> String {
        text.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    }

    fn form_of(fields: &[(String, String)], op: &str) -> Form {
        let encode = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let mut body: Vec<String> = fields
            .iter()
            .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
            .collect();
        body.push(format!("op={}", encode(op)));
        Form::parse(body.join("&").as_bytes())
    }

    fn render(editor: &Editor, flags: &[OtherFlag]) -> String {
        let view = View {
            action: "/ui/envs/e/flags/f",
            csrf: "token",
            flags,
        };
        editor.render(&view, &[], false).into_string()
    }

    /// The form a browser posts back after clicking `op`, as the server reads it.
    fn post(editor: &Editor, op: &str) -> Editor {
        let fields = submitted(&render(editor, &[]));
        Editor::from_form(&form_of(&fields, op)).unwrap()
    }

    /// Shows `doc`, clicks each of `ops` in turn, sets `fields` (a value of `None` unchecks a
    /// box), then saves.
    fn edit(
        doc: &Value,
        ops: &[&str],
        fields: &[(&str, Option<&str>)],
    ) -> Result<Value, Vec<String>> {
        let mut editor = Editor::from_doc(doc, 3);
        for op in ops {
            editor = post(&editor, "");
            assert!(editor.apply(op), "{op} did nothing");
        }
        let mut posted = submitted(&render(&editor, &[]));
        for (name, value) in fields {
            posted.retain(|(n, _)| n != name);
            if let Some(value) = value {
                posted.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        let form = form_of(&posted, "save");
        let editor = Editor::from_form(&form).unwrap();
        assert_eq!(editor.version(), 3);
        editor.to_doc()
    }

    fn boolean_flag() -> Value {
        json!({
            "key": "f", "version": 3, "on": true, "salt": "f",
            "variations": [true, false], "offVariation": 1,
            "fallthrough": {"variation": 0},
            "targets": [], "contextTargets": [], "rules": [], "prerequisites": [],
            "_meta": {"owner": "growth"}, "trackEvents": true,
        })
    }

    /// Every distinct flag of the LaunchDarkly conformance suite vendored in flags-eval, each
    /// file expanded with its parameters as the suite's own runner does.
    fn conformance_flags() -> Vec<(String, Value)> {
        let mut seen = BTreeSet::new();
        let mut flags = Vec::new();
        for path in flags_test_support::conformance::files() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            for copy in flags_test_support::conformance::copies(&path) {
                let Some(found) = copy
                    .body
                    .pointer("/sdkData/flags")
                    .and_then(Value::as_object)
                else {
                    continue;
                };
                for (key, flag) in found {
                    if seen.insert(flag.to_string()) {
                        flags.push((format!("{name}: {key}"), flag.clone()));
                    }
                }
            }
        }
        flags
    }

    #[test]
    fn conformance_flags_round_trip_through_the_form_unchanged() {
        let flags = conformance_flags();
        assert!(flags.len() > 250, "only {} flags", flags.len());
        for (label, doc) in &flags {
            let shown = Editor::from_doc(doc, 7);
            let posted = post(&shown, "save");
            assert_eq!(
                posted, shown,
                "{label}: the form did not come back as shown"
            );
            assert_eq!(posted.to_doc().as_ref(), Ok(doc), "{label}");
        }
    }

    /// The typing rule reads back every value it can write, without the stored copy's help:
    /// only values no line can stand for under their operator (a number in a semantic
    /// version clause, `null`) need it.
    #[test]
    fn clause_values_read_back_as_written() {
        let representable = |v: &Value, op: &str| match v {
            Value::String(_) | Value::Array(_) | Value::Object(_) => true,
            Value::Number(_) => matches!(
                op,
                "in" | "lessThan"
                    | "lessThanOrEqual"
                    | "greaterThan"
                    | "greaterThanOrEqual"
                    | "before"
                    | "after"
            ),
            Value::Bool(_) => op == "in",
            Value::Null => false,
        };
        let mut checked = 0;
        for (label, doc) in conformance_flags() {
            for rule in elements(doc.get("rules")) {
                for clause in elements(rule.get("clauses")) {
                    let op = text_of(clause.get("op"));
                    let values = elements(clause.get("values"));
                    if !values.iter().all(|v| representable(v, &op)) {
                        continue;
                    }
                    let text = values_text(clause.get("values"), &op);
                    assert_eq!(read_values(&text, &op), values, "{label}: {text:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 180, "only {checked} clauses checked");
    }

    #[test]
    fn values_are_typed_by_operator() {
        let check = |op: &str, text: &str, expected: Value| {
            assert_eq!(
                Value::Array(read_values(text, op)),
                expected,
                "{op} {text:?}"
            );
        };
        check(
            "in",
            "alice\n 42 \ntrue\n\"7\"\n\n3.5",
            json!(["alice", 42, true, "7", 3.5]),
        );
        check("in", "null\n[1]\n{\"a\":1}", json!(["null", [1], {"a": 1}]));
        check(
            "lessThan",
            "5\n-1.5\nfive\ntrue",
            json!([5, -1.5, "five", "true"]),
        );
        check(
            "before",
            "2024-01-01T00:00:00Z\n1700000000000",
            json!(["2024-01-01T00:00:00Z", 1_700_000_000_000_u64]),
        );
        check(
            "startsWith",
            "42\ntrue\n\" x \"",
            json!(["42", "true", " x "]),
        );
        check("semVerEqual", "1.2.3\n2", json!(["1.2.3", "2"]));
        check("segmentMatch", "beta-testers", json!(["beta-testers"]));
        // Shown quoted where plain text would read as something else.
        assert_eq!(
            values_text(Some(&json!(["7", 7, " x", ""])), "in"),
            "\"7\"\n7\n\" x\"\n\"\""
        );
        assert_eq!(values_text(Some(&json!(["7"])), "startsWith"), "7");
    }

    #[test]
    fn percentages_are_thousandths_exactly() {
        for (text, weight) in [
            ("50", Some(50_000)),
            ("33.333", Some(33_333)),
            ("0.5", Some(500)),
            (".25", Some(250)),
            ("", Some(0)),
            ("100.000", Some(100_000)),
            ("-1.5", Some(-1_500)),
            ("33.3333", None),
            ("1e3", None),
            ("abc", None),
            (".", None),
        ] {
            assert_eq!(parse_percent(text), weight, "{text:?}");
        }
        for weight in [0, 1, 500, 33_333, 50_000, 100_000, -1_500, 2] {
            assert_eq!(parse_percent(&format_percent(weight)), Some(weight));
        }
        assert_eq!(format_percent(33_330), "33.33");
    }

    #[test]
    fn a_rule_with_two_clauses_and_a_rollout_is_added() {
        let doc = boolean_flag();
        let saved = edit(
            &doc,
            &["add-rule", "rules.0.add-clause"],
            &[
                ("rules.0.description", Some("Staff and gold orgs")),
                ("rules.0.clauses.0.attribute", Some("email")),
                ("rules.0.clauses.0.op", Some("endsWith")),
                (
                    "rules.0.clauses.0.values",
                    Some("@example.com\r\n@example.org\r\n"),
                ),
                ("rules.0.clauses.1.contextKind", Some("org")),
                ("rules.0.clauses.1.attribute", Some("tier")),
                ("rules.0.clauses.1.values", Some("gold\n1\n\"2\"")),
                ("rules.0.clauses.1.negate", Some("1")),
                ("rules.0.serve", Some("rollout")),
                ("rules.0.weight.0", Some("50")),
                ("rules.0.weight.1", Some("50")),
                ("rules.0.bucketBy", Some("email")),
            ],
        )
        .unwrap();
        let rule = &saved["rules"][0];
        let id = rule["id"].as_str().unwrap();
        assert_eq!(id.len(), 36, "{id}");
        let mut expected = doc.clone();
        expected["rules"] = json!([{
            "id": id,
            "description": "Staff and gold orgs",
            "clauses": [
                {"contextKind": "user", "attribute": "email", "op": "endsWith",
                 "values": ["@example.com", "@example.org"]},
                {"contextKind": "org", "attribute": "tier", "op": "in",
                 "values": ["gold", 1, "2"], "negate": true},
            ],
            "rollout": {
                "variations": [{"variation": 0, "weight": 50_000}, {"variation": 1, "weight": 50_000}],
                "bucketBy": "email",
            },
        }]);
        assert_eq!(saved, expected);
        flags_core::Flag::from_json_value(saved).unwrap();
    }

    #[test]
    fn weights_must_add_up_to_100() {
        let errors = edit(
            &boolean_flag(),
            &[],
            &[
                ("fallthrough.serve", Some("rollout")),
                ("fallthrough.weight.0", Some("49.5")),
                ("fallthrough.weight.1", Some("50")),
            ],
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Fallthrough: the weights add up to 99.5%, not 100%."]
        );
        let errors = edit(
            &boolean_flag(),
            &["add-rule"],
            &[
                ("rules.0.serve", Some("rollout")),
                ("rules.0.weight.0", Some("12.3456")),
                ("rules.0.weight.1", Some("50")),
            ],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("Rule 1: the weight of variation 0"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_experiment_keeps_its_settings_when_its_weights_change() {
        let mut doc = boolean_flag();
        doc["fallthrough"] = json!({"rollout": {
            "kind": "experiment", "seed": 61, "contextKind": "org",
            "variations": [
                {"variation": 1, "weight": 60_000, "untracked": true},
                {"variation": 0, "weight": 40_000},
            ],
        }});
        let saved = edit(
            &doc,
            &[],
            &[
                ("fallthrough.weight.0", Some("10")),
                ("fallthrough.weight.1", Some("90")),
            ],
        )
        .unwrap();
        assert_eq!(
            saved["fallthrough"],
            json!({"rollout": {
                "kind": "experiment", "seed": 61, "contextKind": "org",
                "variations": [
                    {"variation": 1, "weight": 90_000, "untracked": true},
                    {"variation": 0, "weight": 10_000},
                ],
            }})
        );
        // A rollout that does not add up is kept while nobody edits it.
        doc["fallthrough"]["rollout"]["variations"][0]["weight"] = json!(2);
        assert_eq!(edit(&doc, &[], &[]).unwrap(), doc);
        // Back to a fixed variation.
        let saved = edit(&doc, &[], &[("fallthrough.serve", Some("1"))]).unwrap();
        assert_eq!(saved["fallthrough"], json!({"variation": 1}));
    }

    #[test]
    fn targets_of_other_kinds_go_to_context_targets() {
        let mut doc = boolean_flag();
        doc["targets"] = json!([{"variation": 0, "values": ["alice"]}]);
        let saved = edit(
            &doc,
            &["add-target-kind"],
            &[
                ("targets.0.keys.1", Some("bob\n\" spaced \"")),
                ("targets.1.kind", Some("org")),
                ("targets.1.keys.0", Some("acme")),
            ],
        )
        .unwrap();
        assert_eq!(
            saved["targets"],
            json!([{"variation": 0, "values": ["alice"]}, {"variation": 1, "values": ["bob", " spaced "]}])
        );
        assert_eq!(
            saved["contextTargets"],
            json!([
                {"contextKind": "org", "variation": 0, "values": ["acme"]},
                {"contextKind": "user", "variation": 0, "values": []},
                {"contextKind": "user", "variation": 1, "values": []},
            ])
        );
        let flag = flags_core::Flag::from_json_value(saved.clone()).unwrap();
        let lists: Vec<_> = flag
            .target_lists()
            .map(|(k, keys, v)| (k.to_owned(), keys.to_vec(), v))
            .collect();
        assert_eq!(lists.len(), 3, "{lists:?}");

        // Emptying the user keys drops their entries and placeholders, keeping the org's.
        let again = edit(
            &saved,
            &[],
            // The kinds are shown in the order LaunchDarkly checks them: org, then user.
            &[
                ("targets.1.keys.0", Some("")),
                ("targets.1.keys.1", Some("")),
            ],
        )
        .unwrap();
        assert_eq!(again["targets"], json!([]));
        assert_eq!(
            again["contextTargets"],
            json!([{"contextKind": "org", "variation": 0, "values": ["acme"]}])
        );
        // Keys without a kind are refused.
        let errors = edit(
            &doc,
            &["add-target-kind"],
            &[
                ("targets.1.kind", Some(" ")),
                ("targets.1.keys.0", Some("x")),
            ],
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Targets: enter the context kind of the keys for variation 0."]
        );
    }

    #[test]
    fn rules_keep_what_the_form_does_not_show_and_move() {
        let mut doc = boolean_flag();
        doc["rules"] = json!([
            {"id": "a", "trackEvents": true, "ref": "x", "variation": 0,
             "clauses": [{"attribute": "country", "op": "in", "values": ["NZ"]},
                         {"attribute": "age", "op": "startsWith", "values": ["18"]}]},
            {"id": "b", "variation": 1, "clauses": []},
        ]);
        // Changing the operator reads the values again, as numbers for lessThan.
        let saved = edit(
            &doc,
            &["rules.0.down"],
            &[("rules.1.clauses.1.op", Some("lessThan"))],
        )
        .unwrap();
        assert_eq!(
            saved["rules"],
            json!([
                {"id": "b", "variation": 1, "clauses": []},
                {"id": "a", "trackEvents": true, "ref": "x", "variation": 0,
                 "clauses": [{"attribute": "country", "op": "in", "values": ["NZ"]},
                             {"attribute": "age", "op": "lessThan", "values": [18]}]},
            ])
        );
        let saved = edit(&doc, &["rules.0.clauses.0.remove", "rules.1.remove"], &[]).unwrap();
        assert_eq!(
            saved["rules"],
            json!([{"id": "a", "trackEvents": true, "ref": "x", "variation": 0,
                    "clauses": [{"attribute": "age", "op": "startsWith", "values": ["18"]}]}])
        );
        let saved = edit(&doc, &["rules.1.up"], &[]).unwrap();
        assert_eq!(saved["rules"][0]["id"], "b");
    }

    #[test]
    fn the_off_variation_fallthrough_and_prerequisites_are_edited() {
        let doc = boolean_flag();
        let saved = edit(
            &doc,
            &[],
            &[("offVariation", Some("")), ("fallthrough.serve", Some("1"))],
        )
        .unwrap();
        let mut expected = doc.clone();
        expected.as_object_mut().unwrap().remove("offVariation");
        expected["fallthrough"] = json!({"variation": 1});
        assert_eq!(saved, expected);

        let errors = edit(&doc, &["add-prerequisite"], &[]).unwrap_err();
        assert_eq!(
            errors,
            [
                "Prerequisite 1: choose a flag.",
                "Prerequisite 1: choose a variation."
            ]
        );
        let saved = edit(
            &doc,
            &["add-prerequisite"],
            &[
                ("prerequisites.0.key", Some("parent")),
                ("prerequisites.0.variation", Some("0")),
            ],
        )
        .unwrap();
        assert_eq!(
            saved["prerequisites"],
            json!([{"key": "parent", "variation": 0}])
        );
        let mut with = doc.clone();
        with["prerequisites"] = saved["prerequisites"].clone();
        assert_eq!(edit(&with, &["prerequisites.0.remove"], &[]).unwrap(), doc);
    }

    #[test]
    fn unknown_ops_change_nothing() {
        let mut editor = Editor::from_doc(&boolean_flag(), 1);
        let before = editor.clone();
        for op in [
            "save",
            "rules.0.remove",
            "rules.x.up",
            "nonsense",
            "prerequisites.3.remove",
        ] {
            assert!(!editor.apply(op), "{op}");
        }
        assert_eq!(editor, before);
    }

    #[test]
    fn the_form_names_every_control() {
        let mut doc = boolean_flag();
        doc["rules"] = json!([{"id": "a", "variation": 0,
            "clauses": [{"attribute": "key", "op": "in", "values": ["x"]}]}]);
        doc["prerequisites"] = json!([{"key": "other", "variation": 1}]);
        let flags = [OtherFlag {
            key: "other".to_owned(),
            name: "Other".to_owned(),
            variations: vec![json!("red"), json!("blue")],
        }];
        let html = render(&Editor::from_doc(&doc, 1), &flags);
        for label in [
            ">Off variation</label>",
            ">Fallthrough</label>",
            ">Weight of true (%)</label>",
            ">Keys for false</label>",
            ">Context kind</label>",
            ">Attribute</label>",
            ">Operator</label>",
            ">Values</label>",
            ">Negate</label>",
            ">Bucket by</label>",
            ">Description</label>",
            ">Flag</label>",
            "<legend>Rule 1</legend>",
            ">Save changes</button>",
            ">Add target kind</button>",
            ">Add clause</button>",
            ">Remove clause</button>",
            ">Remove rule</button>",
            ">Add rule</button>",
            ">Add prerequisite</button>",
            "<option value=\"1\" selected>blue</option>",
            "aria-live=\"polite\">Total: 0%</output>",
        ] {
            assert!(html.contains(label), "{label} missing");
        }
        for op in OPERATORS {
            assert!(html.contains(&format!("<option value=\"{op}\"")), "{op}");
        }
        // Every control's id is unique and has a label.
        let ids: Vec<&str> = html
            .split(" id=\"")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        let unique: BTreeSet<&&str> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        let containers = ["targeting", "targeting-fields"];
        for id in ids
            .iter()
            .filter(|id| !id.ends_with("-hint") && !containers.contains(id))
        {
            assert!(html.contains(&format!("for=\"{id}\"")), "no label for {id}");
        }
    }
}
