//! `GET /ui/envs/{env}/evaluate`: what the environment serves to one context, as the native
//! API answers it.
//!
//! The page asks the native API's own code ([`crate::http::evaluate_native`]) with the
//! environment's served data, so the raw JSON it shows is byte for byte what
//! `POST /v1/evaluate` (or `/v1/evaluate/{flagKey}`) answers with an SDK key of the
//! environment, and the table reads that JSON. The form is a GET: evaluating changes nothing.

use axum::body::to_bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use flags_store::ListFilter;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::UiState;
use super::layout::{self, Chrome, Section};
use super::session::Visitor;

/// The context the form starts with.
const EXAMPLE_CONTEXT: &str = r#"{"kind":"user","key":"example-user"}"#;

/// The largest answer read back (every flag of a large environment fits).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// The form's fields.
#[derive(Debug, Default, Deserialize)]
pub struct Ask {
    /// The context, as JSON; absent until the form is sent.
    context: Option<String>,
    /// One flag's key; empty or absent for every flag.
    #[serde(default)]
    flag: String,
    /// Set by **Build context and evaluate**: the context is made from the fields below, not
    /// read from the JSON.
    build: Option<String>,
    /// The built context's kind and key.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    key: String,
    /// Up to [`ATTRIBUTE_ROWS`] attributes of the built context: names and values.
    #[serde(default)]
    attr1: String,
    #[serde(default)]
    value1: String,
    #[serde(default)]
    attr2: String,
    #[serde(default)]
    value2: String,
    #[serde(default)]
    attr3: String,
    #[serde(default)]
    value3: String,
}

/// Attribute rows the context builder offers.
const ATTRIBUTE_ROWS: usize = 3;

impl Ask {
    fn attributes(&self) -> [(&str, &str); ATTRIBUTE_ROWS] {
        [
            (&self.attr1, &self.value1),
            (&self.attr2, &self.value2),
            (&self.attr3, &self.value3),
        ]
    }

    /// The context the builder's fields describe, as JSON text. An attribute's value is read
    /// as JSON when it is JSON (`42`, `true`, `["a","b"]`, `"quoted"`), else it is its text.
    fn built_context(&self) -> String {
        let mut context = serde_json::Map::new();
        let kind = self.kind.trim();
        context.insert(
            "kind".to_owned(),
            Value::from(if kind.is_empty() { "user" } else { kind }),
        );
        context.insert("key".to_owned(), Value::from(self.key.trim()));
        for (name, value) in self.attributes() {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            let value = serde_json::from_str::<Value>(value.trim())
                .unwrap_or_else(|_| Value::from(value.trim()));
            context.insert(name.to_owned(), value);
        }
        Value::Object(context).to_string()
    }
}

/// What came of an evaluation.
enum Outcome {
    /// Not asked yet.
    None,
    /// The context could not be evaluated: why.
    Refused(String),
    /// The API's answer: its status and its body.
    Answered(StatusCode, Bytes),
}

/// `GET /ui/envs/{env}/evaluate`.
pub async fn page(
    State(state): State<UiState>,
    visitor: Visitor,
    Path(env): Path<String>,
    Query(ask): Query<Ask>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let flags = match state
        .admin
        .store
        .list_flags(
            &env,
            &ListFilter {
                archived: Some(false),
                key_prefix: None,
            },
        )
        .await
    {
        Ok(flags) => flags,
        Err(e) => return layout::store_error(e),
    };
    let built = ask.build.is_some().then(|| ask.built_context());
    let asked = built.as_deref().or(ask.context.as_deref());
    let outcome = match asked {
        None => Outcome::None,
        Some(context) => evaluate(&state, &env, context, &ask.flag).await,
    };
    let status = match &outcome {
        Outcome::Refused(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    let context = asked.unwrap_or(EXAMPLE_CONTEXT);
    let main = html! {
        h1 { "Evaluate" }
        p.hint {
            "What " strong { (chrome.env_name()) } " serves to one context: the same answer the "
            "native API (" code { "POST /v1/evaluate" } ") gives an SDK key of this environment."
        }
        form.evaluate method="get" action=(chrome.url("/evaluate")) {
            p {
                label for="context" { "Context JSON" }
                textarea #context.code name="context" rows="6" spellcheck="false"
                    aria-describedby="context-hint" { (context) }
                span #context-hint.hint {
                    "A LaunchDarkly context, such as " code { (EXAMPLE_CONTEXT) } "."
                }
            }
            p {
                label for="flag" { "Flag" }
                select #flag name="flag" {
                    option value="" { "All flags" }
                    @for flag in &flags {
                        option value=(flag.key) selected[flag.key == ask.flag] { (flag.key) }
                    }
                }
            }
            button.primary type="submit" { "Evaluate" }
            fieldset.builder {
                legend { "Or build a context" }
                p {
                    label for="ctx-kind" { "Context kind" }
                    input #ctx-kind type="text" name="kind" value=(ask.kind) placeholder="user";
                }
                p {
                    label for="ctx-key" { "Context key" }
                    input #ctx-key type="text" name="key" value=(ask.key);
                }
                @for (i, (name, value)) in ask.attributes().into_iter().enumerate() {
                    @let n = i + 1;
                    p {
                        label for=(format!("attr{n}")) { "Attribute " (n) " name" }
                        input id=(format!("attr{n}")) type="text" name=(format!("attr{n}")) value=(name);
                    }
                    p {
                        label for=(format!("value{n}")) { "Attribute " (n) " value" }
                        input id=(format!("value{n}")) type="text" name=(format!("value{n}")) value=(value);
                    }
                }
                p.hint { "A value that is JSON (" code { "42" } ", " code { "true" } ", "
                    code { "[\"a\",\"b\"]" } ") is taken as that; anything else as text." }
                button type="submit" name="build" value="1" { "Build context and evaluate" }
            }
        }
        (result(&outcome))
    };
    chrome.page(status, Section::Evaluate, "Evaluate", main)
}

/// Asks the native API's code in `env` for `context` (JSON text) and one flag or all.
async fn evaluate(state: &UiState, env: &str, context: &str, flag: &str) -> Outcome {
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(context) {
        return Outcome::Refused(format!("The context is not valid JSON: {e}."));
    }
    let Some(served) = state.app.envs.get(env) else {
        return Outcome::Refused(
            "This environment is not served yet (flagd is still loading it); try again in a \
             moment."
                .to_owned(),
        );
    };
    // The request body an API caller would send, around the context as typed.
    let body = Bytes::from(format!("{{\"context\":{context}}}"));
    let flag = (!flag.is_empty()).then_some(flag);
    let answer = crate::http::evaluate_native(&state.app, &served, flag, body).await;
    let status = answer.status();
    match to_bytes(answer.into_body(), MAX_ANSWER_BYTES).await {
        // A refusal names the problem in `message`.
        Ok(body) if status.is_client_error() && status != StatusCode::NOT_FOUND => {
            Outcome::Refused(api_message(&body))
        }
        Ok(body) if status.is_server_error() => Outcome::Refused(api_message(&body)),
        Ok(body) => Outcome::Answered(status, body),
        Err(e) => Outcome::Refused(format!("The answer could not be read: {e}.")),
    }
}

/// The `message` of an API error answer, as a sentence.
fn api_message(body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let mut sentence = upper_first(&message);
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

fn upper_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One row of the result table.
#[derive(Debug, PartialEq)]
struct Row {
    flag: String,
    value: String,
    variation: String,
    reason: String,
}

/// The rows of an answer: `{"flags": {KEY: {...}}}` for every flag, `{"key", ...}` for one.
fn rows(answer: &Value) -> Vec<Row> {
    let row = |key: &str, detail: &Value| Row {
        flag: key.to_owned(),
        value: detail
            .get("value")
            .map_or_else(|| "(none)".to_owned(), Value::to_string),
        variation: detail
            .get("variationIndex")
            .and_then(Value::as_u64)
            .map_or_else(|| "(none)".to_owned(), |i| i.to_string()),
        reason: detail.get("reason").map(reason_text).unwrap_or_default(),
    };
    match answer.get("flags").and_then(Value::as_object) {
        Some(flags) => flags.iter().map(|(key, d)| row(key, d)).collect(),
        None => match answer.get("key").and_then(Value::as_str) {
            Some(key) => vec![row(key, answer)],
            None => Vec::new(),
        },
    }
}

/// A reason as people read it: its kind, then its details (`RULE_MATCH (ruleIndex 0, ruleId
/// "r1")`).
fn reason_text(reason: &Value) -> String {
    let Some(fields) = reason.as_object() else {
        return reason.to_string();
    };
    let kind = fields.get("kind").and_then(Value::as_str).unwrap_or("?");
    let details: Vec<String> = fields
        .iter()
        .filter(|(name, _)| *name != "kind")
        .map(|(name, value)| match value {
            Value::String(s) => format!("{name} {s}"),
            other => format!("{name} {other}"),
        })
        .collect();
    if details.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({})", details.join(", "))
    }
}

fn result(outcome: &Outcome) -> Markup {
    match outcome {
        Outcome::None => html! {},
        Outcome::Refused(why) => html! {
            div.flash.error role="alert" { (why) }
        },
        Outcome::Answered(status, body) => {
            let parsed = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
            let rows = rows(&parsed);
            html! {
                h2 { "Result" }
                table #evaluation {
                    caption { "Evaluation (" (status.as_u16()) ")" }
                    thead {
                        tr {
                            th scope="col" { "Flag" }
                            th scope="col" { "Value" }
                            th scope="col" { "Variation" }
                            th scope="col" { "Reason" }
                        }
                    }
                    tbody {
                        @for row in &rows {
                            tr {
                                th scope="row" { code { (row.flag) } }
                                td { code { (row.value) } }
                                td { (row.variation) }
                                td { (row.reason) }
                            }
                        }
                    }
                }
                @if rows.is_empty() {
                    p.muted { "No flags." }
                }
                h3 { "Raw JSON" }
                pre #raw-result tabindex="0" { (String::from_utf8_lossy(body)) }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_builder_makes_a_context_of_its_fields() {
        let ask = Ask {
            kind: "org".to_owned(),
            key: " acme ".to_owned(),
            attr1: "plan".to_owned(),
            value1: "gold".to_owned(),
            attr2: "seats".to_owned(),
            value2: "42".to_owned(),
            attr3: String::new(),
            value3: "ignored".to_owned(),
            ..Ask::default()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&ask.built_context()).unwrap(),
            json!({"kind": "org", "key": "acme", "plan": "gold", "seats": 42})
        );
        let no_kind = Ask {
            key: "alice".to_owned(),
            ..Ask::default()
        };
        assert_eq!(
            serde_json::from_str::<Value>(&no_kind.built_context()).unwrap(),
            json!({"kind": "user", "key": "alice"})
        );
    }

    #[test]
    fn answers_for_all_flags_and_one_flag_read_as_rows() {
        let all = json!({"flags": {
            "a": {"value": true, "variationIndex": 0, "reason": {"kind": "FALLTHROUGH"}},
            "b": {"reason": {"kind": "ERROR", "errorKind": "MALFORMED_FLAG"}},
        }});
        assert_eq!(
            rows(&all),
            [
                Row {
                    flag: "a".into(),
                    value: "true".into(),
                    variation: "0".into(),
                    reason: "FALLTHROUGH".into()
                },
                Row {
                    flag: "b".into(),
                    value: "(none)".into(),
                    variation: "(none)".into(),
                    reason: "ERROR (errorKind MALFORMED_FLAG)".into()
                },
            ]
        );
        let one = json!({"key": "c", "value": "x", "variationIndex": 2,
            "reason": {"kind": "RULE_MATCH", "ruleIndex": 1, "ruleId": "r"}});
        assert_eq!(rows(&one)[0].reason, "RULE_MATCH (ruleId r, ruleIndex 1)");
        assert_eq!(rows(&one)[0].value, "\"x\"");
        assert!(rows(&json!({"error": "X"})).is_empty());
    }

    #[test]
    fn api_errors_read_as_sentences() {
        assert_eq!(
            api_message(br#"{"error":"INVALID_CONTEXT","message":"invalid context: no key"}"#),
            "Invalid context: no key."
        );
        assert_eq!(api_message(b"plain"), "Plain.");
    }
}
