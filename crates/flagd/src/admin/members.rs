//! Big-segment members: `POST /environments/{env}/segments/{key}/members` (an NDJSON upload,
//! read as a stream) and `GET .../members/{contextKey}`.
//!
//! An upload is read chunk by chunk as it arrives and handed to the store [`CHUNK`] lines at a
//! time, so its size is bounded by nothing but the store; it is stored all or nothing (a bad
//! line anywhere stores none of it, in a store with transactions). The segment's generation
//! moves only through an ordinary versioned segment write, so SDKs hear of it as of any
//! segment change: the first upload of a segment without a generation gives it generation 1,
//! and `?replace=true` writes the lines under the next generation and then switches the
//! segment to it in one write, so evaluators see the old membership or the new one, never a
//! mix; the old generation's rows are deleted afterwards.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flags_eval::{big_segment_hash, big_segment_ref};
use flags_store::{
    Actor, BigSegmentMembers, MemberChange, MemberOp, MemberUpload, StoreError, StoredSegment,
    UploadError, validate,
};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AdminState;
use super::auth::Principal;
use super::problem::Problem;

/// Lines handed to the store at a time.
pub const CHUNK: usize = 10_000;

/// The longest line read; a longer one is refused rather than buffered.
const MAX_LINE: usize = 64 * 1024;

type Answer = Result<Response, Problem>;

/// The query of an upload.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    replace: Option<String>,
}

/// What an upload did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    /// Lines read (blank ones aside).
    pub lines: u64,
    /// Lines that include a key.
    pub included: u64,
    /// Lines that exclude a key.
    pub excluded: u64,
    /// Lines that remove a key.
    pub removed: u64,
    /// The generation written.
    pub generation: u64,
    /// Whether the upload replaced every member.
    pub replaced: bool,
}

/// How an upload's lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFormat {
    /// `{"op":"include"|"exclude"|"remove","key":"..."}` on every line (the admin API).
    Ndjson,
    /// Those lines, or a bare key to include: a line that does not start with `{` is a key (a
    /// file of keys, one a line, uploaded from the web UI).
    KeysOrNdjson,
}

/// `POST /environments/{env}/segments/{key}/members`.
pub async fn upload(
    State(state): State<AdminState>,
    Extension(principal): Extension<Principal>,
    Path((env, key)): Path<(String, String)>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    request: Request,
) -> Answer {
    let query = query
        .map_err(|e| Problem::invalid("", format!("cannot read the query: {e}")))?
        .0;
    let replace = match query.replace.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Problem::invalid("replace", "expected true or false")),
    };
    let body = request.into_body().into_data_stream();
    let report = upload_members(
        &state,
        &principal.actor,
        (&env, &key),
        replace,
        body,
        LineFormat::Ndjson,
    )
    .await?;
    Ok(Json(report).into_response())
}

/// Reads the member lines of `body` into big segment `segment` = (env, key), as the admin
/// API's upload does (see the module's comment): all or nothing, `replace` writing a new
/// generation, the segment switched to the generation written. `actor` is recorded for that
/// switch. The web UI's upload comes here too.
pub(crate) async fn upload_members<S, E>(
    state: &AdminState,
    actor: &Actor,
    (env, key): (&str, &str),
    replace: bool,
    body: S,
    format: LineFormat,
) -> Result<Report, Problem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let (env, key) = (env.to_owned(), key.to_owned());
    let members = members_of(state)?;
    let segment = big_segment(state, &env, &key).await?;
    let current = generation_of(&segment);
    let generation = match (replace, current) {
        (true, Some(g)) => g + 1,
        (true, None) | (false, None) => 1,
        (false, Some(g)) => g,
    };
    let mut upload = members
        .begin_upload(&env, &key, generation, replace)
        .await?;
    let mut report = Report {
        generation,
        replaced: replace,
        ..Report::default()
    };
    let started = Instant::now();
    read_lines(body, format, upload.as_mut(), &mut report).await?;
    let read = started.elapsed();

    // Stored, then copied into Redis when flagd mirrors there.
    let mirror = state.big_segments.as_ref().and_then(|b| b.mirror());
    let copy_time = Arc::new(Mutex::new(Duration::ZERO));
    let copy = match mirror {
        Some(mirror) => match mirror.begin_upload(&env, &key, generation, replace).await {
            Ok(copy) => Some(Box::new(Timed {
                inner: copy,
                spent: Arc::clone(&copy_time),
            }) as Box<dyn MemberUpload>),
            Err(error) => {
                tracing::warn!(%env, segment = %key, %error,
                    "cannot copy a member upload into Redis; Redis's big segments of this environment are behind");
                mirror.copied(&env, false, false);
                None
            }
        },
        None => None,
    };
    let copying = copy.is_some();
    let committing = Instant::now();
    let writing = match mirror {
        Some(mirror) => Some(mirror.writing().await),
        None => None,
    };
    let committed = upload.commit(copy).await;
    let copied = *copy_time.lock().unwrap_or_else(PoisonError::into_inner);
    tracing::info!(%env, segment = %key, lines = report.lines, generation,
        read_ms = read.as_millis(),
        stored_ms = committing.elapsed().saturating_sub(copied).as_millis(),
        copied = copying, copy_ms = copied.as_millis(), "big-segment members uploaded");
    match committed {
        Ok(()) => {
            if let Some(mirror) = mirror.filter(|_| copying) {
                mirror.copied(&env, true, replace);
            }
        }
        Err(UploadError::NotStored(error)) => return Err(error.into()),
        Err(UploadError::NotCopied(error)) => {
            tracing::warn!(%env, segment = %key, %error,
                "a member upload was stored but not copied into Redis; Redis's big segments of this environment are behind");
            if let Some(mirror) = mirror {
                mirror.copied(&env, false, false);
            }
        }
    }
    drop(writing);

    if current != Some(generation) {
        // The segment switches to the generation just written, as one versioned write that
        // every SDK receives as a segment change.
        let mut doc = segment.doc.clone();
        doc["generation"] = json!(generation);
        state
            .store
            .put_segment(actor, &env, &key, doc, Some(segment.version))
            .await
            .map_err(|e| {
                tracing::warn!(%env, segment = %key, error = %e,
                    "members stored under a new generation, but the segment did not switch to it");
                Problem::new(
                    StatusCode::CONFLICT,
                    "version-conflict",
                    format!(
                        "the members were stored under generation {generation}, but segment {key:?} could not switch to it ({e}); upload again"
                    ),
                )
            })?;
    }
    if let (true, Some(old)) = (replace, current) {
        // No evaluator asks for the old generation any more.
        if let Err(error) = members.clear_generation(&env, &key, old).await {
            tracing::warn!(%env, segment = %key, generation = old, %error,
                "cannot delete a replaced generation's members");
        }
        if let Some(mirror) = mirror {
            clear_in_background(mirror, &env, &key, old).await;
        }
    }
    synchronized(state, members.as_ref(), &env).await;
    Ok(report)
}

/// An upload that adds the time spent in it to `spent`: the Redis copy's share of a commit.
struct Timed {
    inner: Box<dyn MemberUpload>,
    spent: Arc<Mutex<Duration>>,
}

impl Timed {
    fn add(&self, since: Instant) {
        *self.spent.lock().unwrap_or_else(PoisonError::into_inner) += since.elapsed();
    }
}

#[async_trait::async_trait]
impl MemberUpload for Timed {
    async fn apply(&mut self, changes: &[MemberChange]) -> Result<(), StoreError> {
        let started = Instant::now();
        let applied = self.inner.apply(changes).await;
        self.add(started);
        applied
    }

    async fn commit(
        self: Box<Self>,
        copy: Option<Box<dyn MemberUpload>>,
    ) -> Result<(), UploadError> {
        let started = Instant::now();
        let spent = Arc::clone(&self.spent);
        let committed = self.inner.commit(copy).await;
        *spent.lock().unwrap_or_else(PoisonError::into_inner) += started.elapsed();
        committed
    }
}

/// Reads the body's lines into `upload`, [`CHUNK`] at a time, counting them in `report`.
async fn read_lines<S, E>(
    mut body: S,
    format: LineFormat,
    upload: &mut dyn MemberUpload,
    report: &mut Report,
) -> Result<(), Problem>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut lines = LineSplitter::default();
    let mut changes: Vec<MemberChange> = Vec::with_capacity(CHUNK);
    let mut line_no = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "unreadable-body",
                format!("cannot read the request body: {e}"),
            )
        })?;
        let mut rest: &[u8] = &chunk;
        while let Some(line) = lines.next_line(&mut rest, line_no + 1)? {
            line_no += 1;
            if let Some(change) = parse_line(&line, line_no, format)? {
                report.count(change.op);
                changes.push(change);
            }
            if changes.len() >= CHUNK {
                upload.apply(&changes).await?;
                changes.clear();
            }
        }
    }
    if let Some(line) = lines.finish() {
        line_no += 1;
        if let Some(change) = parse_line(&line, line_no, format)? {
            report.count(change.op);
            changes.push(change);
        }
    }
    if !changes.is_empty() {
        upload.apply(&changes).await?;
    }
    Ok(())
}

impl Report {
    fn count(&mut self, op: MemberOp) {
        self.lines += 1;
        match op {
            MemberOp::Include => self.included += 1,
            MemberOp::Exclude => self.excluded += 1,
            MemberOp::Remove => self.removed += 1,
        }
    }
}

/// Splits a byte stream into lines, holding at most one unfinished line between chunks.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The next whole line in `partial` + `rest` (without its newline), consuming it from
    /// `rest`; `None` when `rest` holds no more newline (the remainder is kept). `line_no` is
    /// the number the line would have, for the error about a line that is too long.
    fn next_line(&mut self, rest: &mut &[u8], line_no: u64) -> Result<Option<Vec<u8>>, Problem> {
        match rest.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&rest[..end]);
                *rest = &rest[end + 1..];
                check_length(&line, line_no)?;
                Ok(Some(line))
            }
            None => {
                self.partial.extend_from_slice(rest);
                *rest = &[];
                check_length(&self.partial, line_no)?;
                Ok(None)
            }
        }
    }

    /// The last line, when the body does not end with a newline.
    fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

fn check_length(line: &[u8], line_no: u64) -> Result<(), Problem> {
    if line.len() > MAX_LINE {
        return Err(Problem::invalid(
            format!("line {line_no}"),
            format!("longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(())
}

/// One line: `{"op":"include"|"exclude"|"remove","key":"..."}` (or, in
/// [`LineFormat::KeysOrNdjson`], a key to include); blank lines give `None`.
fn parse_line(
    line: &[u8],
    line_no: u64,
    format: LineFormat,
) -> Result<Option<MemberChange>, Problem> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line<'a> {
        #[serde(borrow)]
        op: Option<Cow<'a, str>>,
        #[serde(borrow)]
        key: Option<Cow<'a, str>>,
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let at = || format!("line {line_no}");
    if format == LineFormat::KeysOrNdjson && line.trim_ascii_start().first() != Some(&b'{') {
        let key = std::str::from_utf8(line.trim_ascii())
            .map_err(|_| Problem::invalid(at(), "not UTF-8 text"))?;
        return Ok(Some(MemberChange {
            op: MemberOp::Include,
            context_hash: big_segment_hash(key),
        }));
    }
    let parsed: Line<'_> = serde_json::from_slice(line).map_err(|e| {
        Problem::invalid(
            at(),
            format!("not an object like {{\"op\":\"include\",\"key\":\"...\"}}: {e}"),
        )
    })?;
    let Some(op) = parsed.op else {
        return Err(Problem::invalid(
            at(),
            "\"op\" is missing; use include, exclude or remove",
        ));
    };
    let Some(op) = MemberOp::from_name(&op) else {
        return Err(Problem::invalid(
            at(),
            format!("unknown op {op:?}; use include, exclude or remove"),
        ));
    };
    let key = match parsed.key {
        None => return Err(Problem::invalid(at(), "\"key\" is missing")),
        Some(key) if key.is_empty() => {
            return Err(Problem::invalid(at(), "\"key\" is empty"));
        }
        Some(key) => key,
    };
    Ok(Some(MemberChange {
        op,
        context_hash: big_segment_hash(&key),
    }))
}

/// `GET /environments/{env}/segments/{key}/members/{contextKey}`.
pub async fn membership(
    State(state): State<AdminState>,
    Path((env, key, context_key)): Path<(String, String, String)>,
) -> Answer {
    validate::check_text("contextKey", &context_key)?;
    if context_key.is_empty() {
        return Err(Problem::invalid("contextKey", "must not be empty"));
    }
    let members = members_of(&state)?;
    let segment = big_segment(&state, &env, &key).await?;
    let generation = generation_of(&segment);
    let member = match generation {
        None => "none",
        Some(generation) => {
            let found = members
                .memberships(&env, &[big_segment_hash(&context_key)])
                .await?;
            let reference = big_segment_ref(&key, generation);
            match found.first().and_then(|(_, m)| m.check(&reference)) {
                Some(true) => "included",
                Some(false) => "excluded",
                None => "none",
            }
        }
    };
    Ok(Json(json!({
        "contextKey": context_key,
        "segment": key,
        "generation": generation,
        "member": member,
    }))
    .into_response())
}

/// Where the members of big segments are kept.
fn members_of(state: &AdminState) -> Result<Arc<dyn BigSegmentMembers>, Problem> {
    state
        .big_segments
        .as_ref()
        .map(|big| Arc::clone(big.members()))
        .or_else(|| state.store.big_segment_members())
        .ok_or_else(|| {
            Problem::new(
                StatusCode::NOT_IMPLEMENTED,
                "unsupported",
                "this store keeps no big-segment members",
            )
        })
}

/// The segment, which must exist (404) and be a big one (409).
async fn big_segment(state: &AdminState, env: &str, key: &str) -> Result<StoredSegment, Problem> {
    let segment = state.store.get_segment(env, key).await?;
    if segment
        .doc
        .get("unbounded")
        .and_then(serde_json::Value::as_bool)
        != Some(true)
    {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "not-unbounded",
            format!(
                "segment {key:?} is not a big segment: only segments with \"unbounded\": true have members kept apart from the segment; list this one's keys in its \"included\" and \"excluded\""
            ),
        ));
    }
    Ok(segment)
}

/// The segment's `generation`, if it has one.
fn generation_of(segment: &StoredSegment) -> Option<u64> {
    segment
        .doc
        .get("generation")
        .and_then(serde_json::Value::as_u64)
}

/// Records that `env`'s memberships are up to date now, in the store and in Redis, and drops
/// what this server cached of them.
async fn synchronized(state: &AdminState, members: &dyn BigSegmentMembers, env: &str) {
    let now = crate::events::unix_millis();
    if let Err(error) = members.set_synchronized_on(env, now).await {
        tracing::warn!(%env, %error, "cannot record that big segments are up to date");
    }
    if let Some(big) = &state.big_segments {
        if let Some(mirror) = big.mirror()
            && let Err(error) = mirror.synchronized(env, now).await
        {
            tracing::warn!(%env, %error, "cannot record in Redis that big segments are up to date");
        }
        big.forget(env);
    }
}

/// Deletes a replaced generation from Redis without holding up the answer: Redis has no index
/// by segment, so this scans every membership set of the environment.
async fn clear_in_background(
    mirror: &crate::big_segments::RedisMirror,
    env: &str,
    segment: &str,
    generation: u64,
) {
    let store = match mirror.store(env).await {
        Ok(store) => store,
        Err(error) => {
            tracing::warn!(%env, %segment, generation, %error,
                "cannot delete a replaced generation's members from Redis");
            return;
        }
    };
    let (env, segment) = (env.to_owned(), segment.to_owned());
    drop(tokio::spawn(async move {
        if let Err(error) = store.clear_generation(&env, &segment, generation).await {
            tracing::warn!(%env, %segment, generation, %error,
                "cannot delete a replaced generation's members from Redis");
        }
    }));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = LineSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = *chunk;
            while let Some(line) = lines.next_line(&mut rest, 1).unwrap() {
                out.push(String::from_utf8(line).unwrap());
            }
        }
        out.extend(lines.finish().map(|l| String::from_utf8(l).unwrap()));
        out
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(split(&[b"a\nb", b"c\n\nd"]), ["a", "bc", "", "d"]);
        assert_eq!(split(&[b"a\n", b"b\n"]), ["a", "b"]);
        assert_eq!(split(&[b"", b"x"]), ["x"]);
    }

    fn problem(line: &str) -> String {
        parse_line(line.as_bytes(), 7, LineFormat::Ndjson)
            .unwrap_err()
            .detail
            .clone()
    }

    #[test]
    fn lines_are_read_or_refused_with_their_number() {
        let change = parse_line(
            br#"{"op":"exclude","key":"user-key"}"#,
            1,
            LineFormat::Ndjson,
        )
        .unwrap()
        .unwrap();
        assert_eq!(change.op, MemberOp::Exclude);
        assert_eq!(
            change.context_hash,
            "CEXjZY7cHJG/ydFy7q4+YEFwVrG3/pkJwA4FAjrbfx0="
        );
        assert!(
            parse_line(b"  \r", 1, LineFormat::Ndjson)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            problem(r#"{"op":"add","key":"a"}"#),
            r#"line 7: unknown op "add"; use include, exclude or remove"#
        );
        assert_eq!(
            problem(r#"{"op":"include"}"#),
            r#"line 7: "key" is missing"#
        );
        assert_eq!(
            problem(r#"{"key":"a"}"#),
            r#"line 7: "op" is missing; use include, exclude or remove"#
        );
        assert!(problem("{not json").starts_with("line 7: not an object like"));
        assert!(problem(r#"{"op":"include","key":"a","kye":1}"#).contains("unknown field"));
        // Only NDJSON through the API: a bare key is a mistake there.
        assert!(problem("user-key").starts_with("line 7: not an object like"));
    }

    #[test]
    fn a_file_of_keys_includes_each_key() {
        let keys = |line: &str| parse_line(line.as_bytes(), 3, LineFormat::KeysOrNdjson).unwrap();
        let bare = keys(" user-key\r").unwrap();
        assert_eq!(bare.op, MemberOp::Include);
        let ndjson = parse_line(
            br#"{"op":"include","key":"user-key"}"#,
            1,
            LineFormat::Ndjson,
        )
        .unwrap()
        .unwrap();
        assert_eq!(bare.context_hash, ndjson.context_hash);
        assert_eq!(
            keys(r#"{"op":"remove","key":"user-key"}"#).unwrap().op,
            MemberOp::Remove
        );
        assert!(keys("   ").is_none());
        assert!(
            parse_line(b"{oops", 3, LineFormat::KeysOrNdjson)
                .unwrap_err()
                .detail
                .starts_with("line 3: not an object like")
        );
    }
}
