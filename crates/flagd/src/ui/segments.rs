//! Segments: the list, creating one, editing its keys and rules, and uploading the members of
//! a big segment.
//!
//! The detail page is one form that works without JavaScript: **Add rule**, **Add clause** and
//! the remove buttons post the form with the pending edit and show it again, unsaved; **Save
//! segment** writes it with the version the page was shown at, so a change made meanwhile by
//! someone else is shown side by side with this one (409) instead of being overwritten. The
//! form edits the user keys and the rules' clauses; whatever else the segment holds (other
//! context kinds' keys, rule weights, a big segment's generation) is kept as stored.
//!
//! A big segment's members are uploaded as a file: NDJSON lines as the admin API takes them,
//! or one key a line. Without the script the file goes as `multipart/form-data`, the CSRF
//! token first among its fields; the script sends the file alone, the token in
//! `X-CSRF-Token`, to show the upload's progress. Both hand the lines to the admin API's own
//! upload ([`crate::admin::upload_members`]).

use std::collections::HashSet;
use std::fmt::Write as _;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use flags_store::{AuditItemKind, AuditQuery, ListFilter, StoreError, StoredSegment};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::UiState;
use super::editor::OPERATORS;
use super::flags::{now_ms, when};
use super::layout::{self, Chrome, Flash, Section, path_segment};
use super::session::{Form, Posted, Visitor, check_csrf, check_same_site};
use crate::admin::{LineFormat, MemberReport, upload_members};

/// Rules and clauses read from one form at most: far more than anyone edits by hand, and a
/// bound on the work a posted form can cause.
const MAX_RULES: usize = 500;
const MAX_CLAUSES: usize = 500;

/// `GET /ui/envs/{env}/segments?q=`.
#[derive(Debug, Default, Deserialize)]
pub struct Search {
    #[serde(default)]
    q: String,
}

/// `GET /ui/envs/{env}/segments`: the list, with search and the create form.
pub async fn list(
    State(state): State<UiState>,
    visitor: Visitor,
    Path(env): Path<String>,
    Query(search): Query<Search>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let filter = ListFilter {
        archived: Some(false),
        key_prefix: None,
    };
    let segments = match state.admin.store.list_segments(&env, &filter).await {
        Ok(segments) => segments,
        Err(e) => return layout::store_error(e),
    };
    let query = search.q.trim().to_lowercase();
    let shown: Vec<&StoredSegment> = segments
        .iter()
        .filter(|s| {
            query.is_empty()
                || s.key.to_lowercase().contains(&query)
                || name_of(s).to_lowercase().contains(&query)
        })
        .collect();
    let now = now_ms();
    let main = html! {
        h1 { "Segments" }
        form.filters role="search" method="get" action=(chrome.url("/segments")) {
            p {
                label for="q" { "Search" }
                input #q type="search" name="q" value=(search.q) placeholder="key or name";
            }
            button type="submit" { "Filter" }
        }
        div #segment-table data-refresh {
            table {
                caption { "Segments in " (chrome.env_name()) " — " (shown.len()) " of " (segments.len()) }
                thead {
                    tr {
                        th scope="col" { "Segment" }
                        th scope="col" { "Kind" }
                        th scope="col" { "Keys" }
                        th scope="col" { "Rules" }
                        th scope="col" { "Last change" }
                    }
                }
                tbody {
                    @for segment in &shown {
                        (segment_row(&chrome, segment, now))
                    }
                }
            }
            @if shown.is_empty() {
                p.muted { "No segments match." }
            }
        }
        h2 { "Create a segment" }
        form.inline method="post" action=(chrome.url("/segments")) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            p { label for="new-key" { "New segment key" } input #new-key type="text" name="key" required; }
            p { label for="new-name" { "Name" } input #new-name type="text" name="name"; }
            p.check {
                label for="new-unbounded" { "Big segment" }
                input #new-unbounded type="checkbox" name="unbounded" value="1";
            }
            button.primary type="submit" { "Create segment" }
        }
    };
    chrome.page(StatusCode::OK, Section::Segments, "Segments", main)
}

fn segment_row(chrome: &Chrome, segment: &StoredSegment, now: u64) -> Markup {
    let doc = &segment.doc;
    let count = |field: &str| doc.get(field).and_then(Value::as_array).map_or(0, Vec::len);
    let name = name_of(segment);
    let url = chrome.url(&format!("/segments/{}", path_segment(&segment.key)));
    html! {
        tr {
            th scope="row" {
                a href=(url) { (name) }
                @if name != segment.key { br; code.muted { (segment.key) } }
            }
            td {
                @if is_big(doc) { "Big segment" } @else { "Keys and rules" }
            }
            td { (count("included")) " included, " (count("excluded")) " excluded" }
            td { (count("rules")) }
            td { (when(segment.updated_at, now)) }
        }
    }
}

/// A segment's name, or its key when it has none.
fn name_of(segment: &StoredSegment) -> &str {
    segment
        .doc
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or(&segment.key)
}

fn is_big(doc: &Value) -> bool {
    doc.get("unbounded").and_then(Value::as_bool) == Some(true)
}

/// `POST /ui/envs/{env}/segments`: creates a segment, then shows it.
pub async fn create(
    State(state): State<UiState>,
    Path(env): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let key = form.get("key").unwrap_or_default().trim();
    let name = form.get("name").unwrap_or_default().trim();
    let big = form.get("unbounded").is_some_and(|v| !v.is_empty());
    let session = &chrome.visitor.session;
    let actor = &chrome.visitor.principal.actor;
    let doc = new_segment(key, name, big);
    match state
        .admin
        .store
        .put_segment(actor, &env, key, doc, None)
        .await
    {
        Ok(segment) => {
            session.set_flash(Flash::done(format!("Segment {} created.", segment.key)));
            let url = chrome.url(&format!("/segments/{}", path_segment(&segment.key)));
            Redirect::to(&url).into_response()
        }
        Err(e) if layout::is_refusal(&e) => {
            session.set_flash(Flash::error(format!(
                "Segment {key:?} was not created: {}",
                layout::refusal(e)
            )));
            Redirect::to(&chrome.url("/segments")).into_response()
        }
        Err(e) => layout::store_error(e),
    }
}

/// The document of a new segment: no keys, no rules.
fn new_segment(key: &str, name: &str, big: bool) -> Value {
    let mut doc = json!({
        "key": key,
        "included": [],
        "excluded": [],
        "rules": [],
        "salt": key,
    });
    if !name.is_empty() {
        doc["name"] = Value::from(name);
    }
    if big {
        doc["unbounded"] = Value::Bool(true);
    }
    doc
}

/// `GET /ui/envs/{env}/segments/{key}`.
pub async fn detail(
    State(state): State<UiState>,
    visitor: Visitor,
    Path((env, key)): Path<(String, String)>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let segment = match state.admin.store.get_segment(&env, &key).await {
        Ok(segment) => segment,
        Err(e) => return layout::store_error(e),
    };
    let draft = Draft::of(&segment);
    detail_page(&chrome, &segment, &draft, StatusCode::OK, None)
}

/// `POST /ui/envs/{env}/segments/{key}`: an edit of the form (shown again, unsaved), a save,
/// or an overwrite after a conflict.
pub async fn edit(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let store = &state.admin.store;
    let segment = match store.get_segment(&env, &key).await {
        Ok(segment) => segment,
        Err(e) => return layout::store_error(e),
    };
    let op = form.get("op").unwrap_or("save");
    if op == "overwrite" {
        return overwrite(&state, &chrome, &segment, &form).await;
    }
    let mut draft = Draft::from_form(&form);
    if op != "save" {
        draft.apply(op);
        return detail_page(&chrome, &segment, &draft, StatusCode::OK, None);
    }
    let mine = match draft.to_doc(&segment.doc) {
        Ok(doc) => doc,
        Err(problem) => {
            return detail_page(
                &chrome,
                &segment,
                &draft,
                StatusCode::BAD_REQUEST,
                Some(&problem),
            );
        }
    };
    let actor = &chrome.visitor.principal.actor;
    match store
        .put_segment(actor, &env, &key, mine.clone(), Some(draft.version))
        .await
    {
        Ok(saved) => saved_redirect(&chrome, &saved),
        Err(StoreError::Conflict { .. }) => conflict_page(&state, &chrome, &key, &mine).await,
        Err(e) if layout::is_refusal(&e) => {
            let problem = format!("Not saved: {}", layout::refusal(e));
            detail_page(
                &chrome,
                &segment,
                &draft,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&problem),
            )
        }
        Err(e) => layout::store_error(e),
    }
}

fn saved_redirect(chrome: &Chrome, saved: &StoredSegment) -> Response {
    chrome.visitor.session.set_flash(Flash::done(format!(
        "Segment {} saved (version {}).",
        saved.key, saved.version
    )));
    let url = chrome.url(&format!("/segments/{}", path_segment(&saved.key)));
    Redirect::to(&url).into_response()
}

/// **Overwrite with mine**: the document shown as "yours" on the conflict page, written over
/// the version shown as "theirs" (and refused again if it changed once more).
async fn overwrite(
    state: &UiState,
    chrome: &Chrome,
    segment: &StoredSegment,
    form: &Form,
) -> Response {
    let version = form.get("version").and_then(|v| v.parse().ok());
    let mine = match serde_json::from_str::<Value>(form.get("doc").unwrap_or_default()) {
        Ok(doc @ Value::Object(_)) => doc,
        _ => {
            return layout::error_page(
                StatusCode::BAD_REQUEST,
                "Not saved",
                "The form did not carry a segment document. Nothing was changed.",
            );
        }
    };
    let actor = &chrome.visitor.principal.actor;
    let env = &chrome.env.key;
    match state
        .admin
        .store
        .put_segment(actor, env, &segment.key, mine.clone(), version)
        .await
    {
        Ok(saved) => saved_redirect(chrome, &saved),
        Err(StoreError::Conflict { .. }) => conflict_page(state, chrome, &segment.key, &mine).await,
        Err(e) if layout::is_refusal(&e) => {
            let problem = format!("Not saved: {}", layout::refusal(e));
            let draft = Draft::of(&StoredSegment {
                doc: mine,
                ..segment.clone()
            });
            detail_page(
                chrome,
                segment,
                &draft,
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(&problem),
            )
        }
        Err(e) => layout::store_error(e),
    }
}

/// 409: someone saved the segment since the form was shown. Theirs and yours side by side,
/// with a way to write yours over theirs and a way to drop yours.
async fn conflict_page(state: &UiState, chrome: &Chrome, key: &str, mine: &Value) -> Response {
    let store = &state.admin.store;
    let env = &chrome.env.key;
    let theirs = match store.get_segment(env, key).await {
        Ok(theirs) => theirs,
        Err(e) => return layout::store_error(e),
    };
    let query = AuditQuery {
        item: Some((AuditItemKind::Segment, key.to_owned())),
        ..AuditQuery::env(env, 1)
    };
    // Who changed it is a courtesy: without the audit log the page still shows what changed.
    let by = match store.audit_log(&query).await {
        Ok(entries) => entries.into_iter().next().map(|e| e.actor.name),
        Err(_) => None,
    };
    let at = crate::store::rfc3339(theirs.updated_at);
    let pretty = |doc: &Value| serde_json::to_string_pretty(doc).unwrap_or_default();
    let url = chrome.url(&format!("/segments/{}", path_segment(key)));
    let main = html! {
        h1 { "Not saved: the segment changed" }
        div.flash.error role="alert" {
            "This segment was changed by " (by.as_deref().unwrap_or("someone else")) " at "
            time datetime=(at) { (at) } " while you were editing. Nothing was saved."
        }
        div.side-by-side {
            section aria-labelledby="theirs" {
                h2 #theirs { "Theirs (version " (theirs.version) ")" }
                pre tabindex="0" aria-label="Their version" { (pretty(&theirs.doc)) }
            }
            section aria-labelledby="yours" {
                h2 #yours { "Yours" }
                pre tabindex="0" aria-label="Your version" { (pretty(mine)) }
            }
        }
        form.inline method="post" action=(url) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            input type="hidden" name="op" value="overwrite";
            input type="hidden" name="version" value=(theirs.version);
            input type="hidden" name="doc" value=(mine.to_string());
            button.danger type="submit" { "Overwrite with mine" }
            a href=(url) { "Discard mine" }
        }
    };
    chrome.page(StatusCode::CONFLICT, Section::Segments, "Conflict", main)
}

fn detail_page(
    chrome: &Chrome,
    segment: &StoredSegment,
    draft: &Draft,
    status: StatusCode,
    problem: Option<&str>,
) -> Response {
    let url = chrome.url(&format!("/segments/{}", path_segment(&segment.key)));
    let name = name_of(segment);
    let big = is_big(&segment.doc);
    let generation = segment.doc.get("generation").and_then(Value::as_u64);
    let main = html! {
        div #segment-detail data-live-key=(segment.key) data-live-kind="segment" data-refresh {
            h1 { (name) }
            p {
                code { (segment.key) } " · version " (segment.version) " · changed "
                (when(segment.updated_at, now_ms()))
                @if segment.archived { " · " span.state.archived { "Archived" } }
                @if big { " · " strong { "Big segment" } }
            }
            div #changed-notice.flash.error role="alert" hidden {
                "This segment changed since you opened it. "
                form.inline method="get" action=(url) { button type="submit" { "Reload" } }
            }
            @if let Some(problem) = problem {
                div.flash.error role="alert" { (problem) }
            }
            form #segment-form method="post" action=(url) data-track-edits {
                // Enter in a text field saves, rather than pressing the first button of the
                // form (a remove button).
                button.default-submit type="submit" name="op" value="save" tabindex="-1"
                    aria-hidden="true" { "Save" }
                input type="hidden" name="_csrf" value=(chrome.csrf());
                input type="hidden" name="version" value=(draft.version);
                h2 { "Keys" }
                p.hint { "User keys, one a line. Excluded keys are checked after included ones." }
                div.keys {
                    p {
                        label for="included" { "Included" }
                        textarea #included name="included" rows="6" { (draft.included) }
                    }
                    p {
                        label for="excluded" { "Excluded" }
                        textarea #excluded name="excluded" rows="6" { (draft.excluded) }
                    }
                }
                h2 { "Rules" }
                p.hint { "A context that matches every clause of any rule is in the segment." }
                @for (i, rule) in draft.rules.iter().enumerate() {
                    (rule_fieldset(i, rule))
                }
                @if draft.rules.is_empty() {
                    p.muted { "No rules." }
                }
                p {
                    button type="submit" name="op" value="add-rule" { "Add rule" }
                }
                p {
                    button.primary type="submit" name="op" value="save" { "Save segment" }
                }
            }
        }
        @if big {
            (members_section(chrome, &segment.key, generation))
        }
    };
    chrome.page(status, Section::Segments, name, main)
}

fn rule_fieldset(i: usize, rule: &RuleDraft) -> Markup {
    let field = |j: usize, name: &str| format!("rule-{i}-clause-{j}-{name}");
    html! {
        fieldset.rule {
            legend { "Rule " (i + 1) }
            input type="hidden" name=(format!("rule-{i}-kept")) value=(Value::Object(rule.kept.clone()).to_string());
            @for (j, clause) in rule.clauses.iter().enumerate() {
                fieldset.clause {
                    legend { "Clause " (j + 1) }
                    input type="hidden" name=(field(j, "kept")) value=(Value::Object(clause.kept.clone()).to_string());
                    p {
                        label for=(field(j, "kind")) { "Context kind" }
                        input id=(field(j, "kind")) type="text" name=(field(j, "kind")) value=(clause.context_kind);
                    }
                    p {
                        label for=(field(j, "attribute")) { "Attribute" }
                        input id=(field(j, "attribute")) type="text" name=(field(j, "attribute")) value=(clause.attribute);
                    }
                    p {
                        label for=(field(j, "op")) { "Operator" }
                        select id=(field(j, "op")) name=(field(j, "op")) {
                            @if !OPERATORS.contains(&clause.op.as_str()) {
                                option value=(clause.op) selected { (clause.op) }
                            }
                            @for op in OPERATORS {
                                option value=(op) selected[clause.op == op] { (op) }
                            }
                        }
                    }
                    p {
                        label for=(field(j, "values")) { "Values" }
                        textarea id=(field(j, "values")) name=(field(j, "values")) rows="3" { (clause.values) }
                    }
                    p.check {
                        input id=(field(j, "negate")) type="checkbox" name=(field(j, "negate")) value="1" checked[clause.negate];
                        label for=(field(j, "negate")) { "Negate" }
                    }
                    p {
                        button type="submit" name="op" value=(format!("remove-clause-{i}-{j}")) { "Remove clause" }
                    }
                }
            }
            p {
                button type="submit" name="op" value=(format!("add-clause-{i}")) { "Add clause" }
                " "
                button type="submit" name="op" value=(format!("remove-rule-{i}")) { "Remove rule" }
            }
        }
    }
}

fn members_section(chrome: &Chrome, key: &str, generation: Option<u64>) -> Markup {
    let action = chrome.url(&format!("/segments/{}/members", path_segment(key)));
    html! {
        section aria-labelledby="members-heading" {
            h2 #members-heading { "Members" }
            p {
                "Members of a big segment are kept apart from it. "
                @match generation {
                    Some(g) => { "Generation " (g) " is served." }
                    None => { "None were uploaded yet." }
                }
            }
            form #members-form method="post" action=(action) enctype="multipart/form-data"
                data-upload {
                // First: the server checks the token before it reads the file.
                input type="hidden" name="_csrf" value=(chrome.csrf());
                p.check {
                    input #replace type="checkbox" name="replace" value="true";
                    label for="replace" { "Replace every member" }
                }
                p {
                    label for="members" { "Members file" }
                    input #members type="file" name="members" required
                        aria-describedby="members-hint"
                        accept=".ndjson,.jsonl,.json,.txt,.csv,text/plain,application/x-ndjson";
                    span #members-hint.hint {
                        "One key a line, or NDJSON lines such as "
                        code { r#"{"op":"include","key":"user-1"}"# }
                        " (op include, exclude or remove)."
                    }
                }
                p {
                    progress #upload-progress max="100" value="0" hidden aria-label="Upload progress" {}
                    output #upload-result for="members" {}
                }
                button.primary type="submit" { "Upload members" }
            }
        }
    }
}

/// What the person is editing: the form's fields, as shown first or as posted.
#[derive(Debug, Clone, Default, PartialEq)]
struct Draft {
    /// The version the form was shown at: the expected version of the save.
    version: u64,
    /// User keys, one a line.
    included: String,
    excluded: String,
    rules: Vec<RuleDraft>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RuleDraft {
    /// The stored rule without its clauses, written back as it is (id, weight, bucketBy).
    kept: Map<String, Value>,
    clauses: Vec<ClauseDraft>,
}

#[derive(Debug, Clone, PartialEq)]
struct ClauseDraft {
    context_kind: String,
    attribute: String,
    op: String,
    /// One value a line.
    values: String,
    negate: bool,
    /// The stored clause: its values are written back as stored (typed) unless edited.
    kept: Map<String, Value>,
}

impl Default for ClauseDraft {
    fn default() -> ClauseDraft {
        ClauseDraft {
            context_kind: "user".to_owned(),
            attribute: "key".to_owned(),
            op: "in".to_owned(),
            values: String::new(),
            negate: false,
            kept: Map::new(),
        }
    }
}

impl Draft {
    /// The form of a stored segment.
    fn of(segment: &StoredSegment) -> Draft {
        let doc = &segment.doc;
        let lines = |field: &str| {
            doc.get(field)
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default()
        };
        let rules = doc
            .get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().map(RuleDraft::of).collect())
            .unwrap_or_default();
        Draft {
            version: segment.version,
            included: lines("included"),
            excluded: lines("excluded"),
            rules,
        }
    }

    /// The form as posted.
    fn from_form(form: &Form) -> Draft {
        let text = |name: &str| form.get(name).unwrap_or_default().to_owned();
        let kept = |name: &str| match form.get(name).map(serde_json::from_str::<Value>) {
            Some(Ok(Value::Object(map))) => map,
            _ => Map::new(),
        };
        let mut rules = Vec::new();
        for i in 0..MAX_RULES {
            let rule_kept = format!("rule-{i}-kept");
            if form.get(&rule_kept).is_none() {
                break;
            }
            let mut clauses = Vec::new();
            for j in 0..MAX_CLAUSES {
                let field = |name: &str| format!("rule-{i}-clause-{j}-{name}");
                let Some(op) = form.get(&field("op")) else {
                    break;
                };
                clauses.push(ClauseDraft {
                    context_kind: text(&field("kind")),
                    attribute: text(&field("attribute")),
                    op: op.to_owned(),
                    values: text(&field("values")),
                    negate: form.get(&field("negate")).is_some_and(|v| !v.is_empty()),
                    kept: kept(&field("kept")),
                });
            }
            rules.push(RuleDraft {
                kept: kept(&rule_kept),
                clauses,
            });
        }
        Draft {
            version: form
                .get("version")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            included: text("included"),
            excluded: text("excluded"),
            rules,
        }
    }

    /// Applies one of the form's edit buttons (`add-rule`, `remove-rule-{i}`, `add-clause-{i}`,
    /// `remove-clause-{i}-{j}`); an unknown one changes nothing.
    fn apply(&mut self, op: &str) {
        let indexes =
            |rest: &str| -> Vec<usize> { rest.split('-').filter_map(|n| n.parse().ok()).collect() };
        if op == "add-rule" {
            self.rules.push(RuleDraft {
                kept: Map::new(),
                clauses: vec![ClauseDraft::default()],
            });
        } else if let Some(rest) = op.strip_prefix("remove-rule-") {
            if let [i] = indexes(rest)[..]
                && i < self.rules.len()
            {
                self.rules.remove(i);
            }
        } else if let Some(rest) = op.strip_prefix("add-clause-") {
            if let [i] = indexes(rest)[..]
                && let Some(rule) = self.rules.get_mut(i)
            {
                rule.clauses.push(ClauseDraft::default());
            }
        } else if let Some(rest) = op.strip_prefix("remove-clause-")
            && let [i, j] = indexes(rest)[..]
            && let Some(rule) = self.rules.get_mut(i)
            && j < rule.clauses.len()
        {
            rule.clauses.remove(j);
        }
    }

    /// `base` (the stored document) with the form's keys and rules; an error names the rule
    /// and clause whose values do not fit their operator.
    fn to_doc(&self, base: &Value) -> Result<Value, String> {
        let mut doc = base.clone();
        let Some(fields) = doc.as_object_mut() else {
            return Err("The stored segment is not a JSON object.".to_owned());
        };
        fields.insert("included".to_owned(), keys(&self.included).into());
        fields.insert("excluded".to_owned(), keys(&self.excluded).into());
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let mut out = rule.kept.clone();
            let mut clauses = Vec::with_capacity(rule.clauses.len());
            for (j, clause) in rule.clauses.iter().enumerate() {
                let clause = clause
                    .to_json()
                    .map_err(|e| format!("Rule {}, clause {}: {e}", i + 1, j + 1))?;
                clauses.push(clause);
            }
            out.insert("clauses".to_owned(), Value::Array(clauses));
            rules.push(Value::Object(out));
        }
        fields.insert("rules".to_owned(), Value::Array(rules));
        Ok(doc)
    }
}

impl RuleDraft {
    fn of(rule: &Value) -> RuleDraft {
        let mut kept = rule.as_object().cloned().unwrap_or_default();
        let clauses = match kept.remove("clauses") {
            Some(Value::Array(clauses)) => clauses.iter().map(ClauseDraft::of).collect(),
            _ => Vec::new(),
        };
        RuleDraft { kept, clauses }
    }
}

impl ClauseDraft {
    fn of(clause: &Value) -> ClauseDraft {
        let kept = clause.as_object().cloned().unwrap_or_default();
        let text = |field: &str| kept.get(field).and_then(Value::as_str).unwrap_or_default();
        let context_kind = match text("contextKind") {
            "" => "user",
            kind => kind,
        };
        ClauseDraft {
            context_kind: context_kind.to_owned(),
            attribute: text("attribute").to_owned(),
            op: text("op").to_owned(),
            values: kept.get("values").map(value_lines).unwrap_or_default(),
            negate: kept.get("negate").and_then(Value::as_bool).unwrap_or(false),
            kept: kept.clone(),
        }
    }

    /// The clause as stored: the kept clause with the form's fields. Values typed as they
    /// were are kept as they were; edited ones are read for the operator ([`clause_values`]).
    fn to_json(&self) -> Result<Value, String> {
        let mut out = self.kept.clone();
        let kept_kind = out.get("contextKind").and_then(Value::as_str);
        let kind = self.context_kind.trim();
        // A clause stored without a kind reads its attribute as a plain name; naming `user`
        // in the form (as it shows such a clause) keeps it that way.
        if !(kind.is_empty() || (kind == "user" && kept_kind.is_none_or(str::is_empty))) {
            out.insert("contextKind".to_owned(), Value::from(kind));
        }
        out.insert("attribute".to_owned(), Value::from(self.attribute.trim()));
        let kept_values = out.get("values").cloned();
        let unchanged = out.get("op").and_then(Value::as_str) == Some(self.op.as_str())
            && kept_values
                .as_ref()
                .is_some_and(|v| same_lines(&value_lines(v), &self.values));
        let values = match kept_values {
            Some(values) if unchanged => values,
            _ => Value::Array(clause_values(&self.op, &self.values)?),
        };
        out.insert("op".to_owned(), Value::from(self.op.as_str()));
        out.insert("values".to_owned(), values);
        out.insert("negate".to_owned(), Value::Bool(self.negate));
        Ok(Value::Object(out))
    }
}

/// Values as the form shows them: strings as they are, anything else as JSON, one a line.
fn value_lines(values: &Value) -> String {
    let Some(values) = values.as_array() else {
        return String::new();
    };
    let mut out = String::new();
    for (n, value) in values.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        match value {
            Value::String(s) => out.push_str(s),
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
    out
}

/// The non-empty lines of a textarea (browsers send CRLF).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
}

fn same_lines(a: &str, b: &str) -> bool {
    lines(a).eq(lines(b))
}

/// Keys, one a line: trimmed, blank lines and repeats dropped, in order.
fn keys(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    lines(text)
        .map(str::trim)
        .filter(|k| seen.insert(*k))
        .map(str::to_owned)
        .collect()
}

/// A clause's values from its lines, typed for `op`: numbers for the numeric comparisons,
/// numbers (Unix milliseconds) or strings (RFC 3339) for dates, strings otherwise.
fn clause_values(op: &str, text: &str) -> Result<Vec<Value>, String> {
    let number = |line: &str| serde_json::from_str::<serde_json::Number>(line.trim()).ok();
    lines(text)
        .map(|line| match op {
            "lessThan" | "lessThanOrEqual" | "greaterThan" | "greaterThanOrEqual" => number(line)
                .map(Value::Number)
                .ok_or_else(|| format!("{line:?} is not a number, which {op} compares with")),
            "before" | "after" => {
                Ok(number(line).map_or_else(|| Value::from(line.trim()), Value::Number))
            }
            _ => Ok(Value::from(line)),
        })
        .collect()
}

/// `POST /ui/envs/{env}/segments/{key}/members`: a big segment's members, as a file.
pub async fn upload(
    State(state): State<UiState>,
    Path((env, key)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    if let Err(refused) = check_same_site(&parts.headers, state.secure) {
        return refused;
    }
    let visitor = match Visitor::from_request_parts(&mut parts, &state).await {
        Ok(visitor) => visitor,
        Err(refused) => return refused,
    };
    let scripted = parts.headers.contains_key("x-csrf-token");
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let back = chrome.url(&format!("/segments/{}", path_segment(&key)));
    let session = &chrome.visitor.session;
    let actor = &chrome.visitor.principal.actor;
    let uploaded = if scripted {
        // The script sends the file as the body, the token in a header.
        let token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if let Err(refused) = check_csrf(session, token) {
            return refused;
        }
        let replace = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "replace=true"));
        let body = body.into_data_stream();
        upload_members(
            &state.admin,
            actor,
            (&env, &key),
            replace,
            body,
            LineFormat::KeysOrNdjson,
        )
        .await
        .map_err(|p| p.detail.clone())
    } else {
        match multipart_upload(&state, &chrome, &key, &parts.headers, body).await {
            Ok(uploaded) => uploaded,
            Err(refused) => return refused,
        }
    };
    let flash = match uploaded {
        Ok(report) => Flash::done(report_text(&report)),
        Err(problem) => Flash::error(format!("No members were changed: {problem}.")),
    };
    if scripted {
        // The script shows the result, then the page (with the message) again.
        let status = if flash.error {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        };
        let body = json!({"message": flash.text, "error": flash.error, "location": back});
        if !flash.error {
            // Shown on the page the script goes to next; a refusal stays on this one.
            session.set_flash(flash);
        }
        return (status, axum::Json(body)).into_response();
    }
    session.set_flash(flash);
    Redirect::to(&back).into_response()
}

/// The upload of the form without the script: `multipart/form-data` whose first field is the
/// CSRF token, then optionally `replace`, then the file `members`, read as it arrives.
/// `Err`: a page refusing the request; `Ok(Err)`: the upload's own problem.
async fn multipart_upload(
    state: &UiState,
    chrome: &Chrome,
    key: &str,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Result<MemberReport, String>, Response> {
    let refuse = |why: &str| {
        layout::error_page(
            StatusCode::BAD_REQUEST,
            "Not uploaded",
            &format!("{why} Nothing was changed."),
        )
    };
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        return Err(refuse("The members file must be sent as a form upload."));
    };
    let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
    let mut field = next_field(&mut multipart).await?;
    // The token comes first, so nothing is read from someone else's page.
    let token = match field {
        Some(f) if f.name() == Some("_csrf") => {
            Some(f.text().await.map_err(|e| refuse(&e.to_string()))?)
        }
        _ => None,
    };
    check_csrf(&chrome.visitor.session, token.as_deref())?;
    field = next_field(&mut multipart).await?;
    let mut replace = false;
    if let Some(f) = field.take_if(|f| f.name() == Some("replace")) {
        replace = f.text().await.map_err(|e| refuse(&e.to_string()))? == "true";
        field = next_field(&mut multipart).await?;
    }
    let Some(file) = field.filter(|f| f.name() == Some("members")) else {
        return Err(refuse("The form carried no members file."));
    };
    let actor = &chrome.visitor.principal.actor;
    let report = upload_members(
        &state.admin,
        actor,
        (&chrome.env.key, key),
        replace,
        Box::pin(file),
        LineFormat::KeysOrNdjson,
    )
    .await;
    Ok(report.map_err(|p| p.detail.clone()))
}

async fn next_field(
    multipart: &mut multer::Multipart<'static>,
) -> Result<Option<multer::Field<'static>>, Response> {
    multipart.next_field().await.map_err(|e| {
        layout::error_page(
            StatusCode::BAD_REQUEST,
            "Not uploaded",
            &format!("The upload could not be read: {e}. Nothing was changed."),
        )
    })
}

/// "N members added, M removed", with the exclusions when there were any.
fn report_text(report: &MemberReport) -> String {
    let plural = |n: u64| if n == 1 { "member" } else { "members" };
    let mut text = format!(
        "{} {} added, {} removed",
        report.included,
        plural(report.included),
        report.removed
    );
    if report.excluded > 0 {
        let _ = write!(text, ", {} excluded", report.excluded);
    }
    if report.replaced {
        let _ = write!(text, "; every earlier member replaced");
    }
    let _ = write!(text, " (generation {}).", report.generation);
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stored(doc: Value) -> StoredSegment {
        StoredSegment {
            key: "s".to_owned(),
            version: 3,
            archived: false,
            updated_at: 0,
            doc,
        }
    }

    #[test]
    fn a_form_shown_and_saved_unchanged_keeps_the_document() {
        let doc = json!({
            "key": "s", "salt": "x", "included": ["a", "b"], "excluded": ["c"],
            "includedContexts": [{"contextKind": "org", "values": ["o"]}],
            "rules": [{"id": "r1", "weight": 50000, "bucketBy": "email", "clauses": [
                {"attribute": "age", "op": "in", "values": [30, "30"], "negate": false},
                {"contextKind": "org", "attribute": "/name", "op": "lessThan", "values": [5]},
            ]}],
        });
        let draft = Draft::of(&stored(doc.clone()));
        assert_eq!(draft.version, 3);
        assert_eq!(draft.included, "a\nb");
        assert_eq!(draft.rules[0].clauses[0].context_kind, "user");
        assert_eq!(draft.rules[0].clauses[0].values, "30\n30");
        let saved = draft.to_doc(&doc).unwrap();
        let mut expected = doc.clone();
        // The form writes `negate` out on every clause.
        expected["rules"][0]["clauses"][1]["negate"] = json!(false);
        assert_eq!(saved, expected);
    }

    #[test]
    fn edited_values_are_typed_for_their_operator() {
        let check = |op: &str, text: &str, expected: Result<Value, &str>| {
            let got = clause_values(op, text).map(Value::Array);
            match expected {
                Ok(values) => assert_eq!(got, Ok(values), "{op} {text:?}"),
                Err(problem) => assert_eq!(got.unwrap_err(), problem),
            }
        };
        check("in", "a\r\n\r\n 5\n", Ok(json!(["a", " 5"])));
        check("lessThan", "5\n2.5", Ok(json!([5, 2.5])));
        check(
            "greaterThan",
            "five",
            Err("\"five\" is not a number, which greaterThan compares with"),
        );
        check(
            "before",
            "1700000000000\n2024-01-01T00:00:00Z",
            Ok(json!([1_700_000_000_000_u64, "2024-01-01T00:00:00Z"])),
        );
        check("segmentMatch", "beta\nstaff", Ok(json!(["beta", "staff"])));
    }

    #[test]
    fn a_clause_edited_in_the_form_is_written_from_the_form() {
        let mut clause = ClauseDraft::of(&json!({"attribute": "n", "op": "in", "values": [1]}));
        clause.values = "1\n2".to_owned();
        clause.negate = true;
        assert_eq!(
            clause.to_json().unwrap(),
            json!({"attribute": "n", "op": "in", "values": ["1", "2"], "negate": true})
        );
        clause.context_kind = "org".to_owned();
        assert_eq!(clause.to_json().unwrap()["contextKind"], "org");
    }

    fn form(pairs: &[(&str, &str)]) -> Form {
        let body: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", path_segment(k), path_segment(v)))
            .collect();
        Form::parse(body.join("&").as_bytes())
    }

    #[test]
    fn the_posted_form_reads_back_and_edits_apply() {
        let posted = form(&[
            ("version", "7"),
            ("included", "a\r\nb"),
            ("excluded", ""),
            ("rule-0-kept", r#"{"id":"r"}"#),
            ("rule-0-clause-0-kept", "{}"),
            ("rule-0-clause-0-kind", "user"),
            ("rule-0-clause-0-attribute", "email"),
            ("rule-0-clause-0-op", "endsWith"),
            ("rule-0-clause-0-values", "@example.com"),
            ("rule-0-clause-0-negate", "1"),
            ("rule-1-kept", "{}"),
        ]);
        let mut draft = Draft::from_form(&posted);
        assert_eq!(draft.version, 7);
        assert_eq!(draft.rules.len(), 2);
        assert_eq!(draft.rules[0].kept["id"], "r");
        assert!(draft.rules[0].clauses[0].negate);
        assert!(draft.rules[1].clauses.is_empty());

        draft.apply("add-clause-1");
        assert_eq!(draft.rules[1].clauses, [ClauseDraft::default()]);
        draft.apply("remove-clause-0-0");
        assert!(draft.rules[0].clauses.is_empty());
        draft.apply("remove-rule-0");
        assert_eq!(draft.rules.len(), 1);
        draft.apply("add-rule");
        assert_eq!(draft.rules.len(), 2);
        // Out of range or unknown: nothing.
        let before = draft.clone();
        for op in [
            "remove-rule-9",
            "remove-clause-0-9",
            "add-clause-x",
            "launch",
        ] {
            draft.apply(op);
        }
        assert_eq!(draft, before);

        let doc = draft
            .to_doc(&json!({"key": "s", "unbounded": true, "generation": 2}))
            .unwrap();
        assert_eq!(doc["included"], json!(["a", "b"]));
        assert_eq!(doc["generation"], 2);
        assert_eq!(
            doc["rules"][0]["clauses"][0],
            json!({"attribute": "key", "op": "in", "values": [], "negate": false})
        );
    }

    #[test]
    fn keys_are_trimmed_and_deduplicated_in_order() {
        assert_eq!(keys(" b\r\na\n\nb\n a "), ["b", "a"]);
    }

    #[test]
    fn new_segments_are_valid() {
        for big in [false, true] {
            let doc = new_segment("beta", "Beta testers", big);
            let segment = flags_core::Segment::from_json_value(doc).unwrap();
            assert_eq!(segment.unbounded, big);
        }
    }

    #[test]
    fn upload_reports_read_as_a_sentence() {
        let report = MemberReport {
            lines: 4,
            included: 3,
            excluded: 0,
            removed: 1,
            generation: 2,
            replaced: false,
        };
        assert_eq!(
            report_text(&report),
            "3 members added, 1 removed (generation 2)."
        );
    }
}
