//! `GET /ui/envs/{env}/live`: the environment's changes as Server-Sent Events, which every page
//! follows (`assets/app.js`) to show what changed, wherever it was changed, within a second.
//!
//! Each event is `event: change` with `data: {"kind": "flag"|"segment"|"kill"|"override"|
//! "environment", "key": ...}`. The events come from root mode's sync, which follows the
//! store's change feed once for the whole server ([`crate::root::ChangeNotices`]) and tells of
//! a change once it is served: a page that looks again on hearing of it sees the change. A
//! stream costs a receiver of that one feed, never a database connection, and takes a place
//! under the cap SDK streams share. A stream that falls behind hears of the environment as a
//! whole (`"kind": "environment"`), which pages take as "look again at everything".

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use super::UiState;
use super::layout::{self, Chrome};
use super::session::Visitor;
use crate::root::{ChangeNotice, NoticeKind};

/// A quiet stream sends a comment this often, so that proxies and browsers keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /ui/envs/{env}/live`.
pub async fn live(
    State(state): State<UiState>,
    visitor: Visitor,
    Path(env): Path<String>,
) -> Response {
    // The environment must exist and be one the key may see.
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let Ok(permit) = Arc::clone(&state.app.streams).try_acquire_owned() else {
        return layout::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "This server holds as many open streams as it takes; live updates are off for \
             this page. Reload it later.",
        );
    };
    let follower = Follower {
        env: chrome.env.key,
        notices: state.app.changes.subscribe(),
        _permit: permit,
    };
    let shutdown = state.app.shutdown.clone();
    let frames = follower
        .into_stream()
        .take_until(async move { shutdown.wait().await })
        .map(Ok::<Bytes, Infallible>);
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Ask reverse proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One browser's place in the feed.
struct Follower {
    env: String,
    notices: Receiver<Arc<ChangeNotice>>,
    /// The stream's place under the cap, given back when the stream ends.
    _permit: OwnedSemaphorePermit,
}

impl Follower {
    /// The stream's frames: a change event per notice of this environment, a keep-alive
    /// comment whenever none came for [`KEEP_ALIVE`].
    fn into_stream(self) -> impl futures_util::Stream<Item = Bytes> + Send {
        let first = Bytes::from_static(b"retry: 2000\n\n");
        let rest = futures_util::stream::unfold(self, |mut follower| async move {
            // `recv` loses nothing when the timeout cancels it.
            let frame = match tokio::time::timeout(KEEP_ALIVE, follower.next_frame()).await {
                Ok(frame) => frame?,
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((frame, follower))
        });
        futures_util::stream::once(async move { first }).chain(rest)
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            match self.notices.recv().await {
                Ok(notice) if notice.env == self.env => {
                    return Some(change_frame(notice.kind, &notice.key));
                }
                Ok(_) => {}
                // Some were missed: the page looks again at everything.
                Err(RecvError::Lagged(_)) => {
                    return Some(change_frame(NoticeKind::Environment, &self.env));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `event: change` with the change's kind and key, on one `data:` line (JSON escapes line
/// breaks).
fn change_frame(kind: NoticeKind, key: &str) -> Bytes {
    let data = json!({"kind": kind.as_str(), "key": key});
    Bytes::from(format!("event: change\ndata: {data}\n\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::root::ChangeNotices;

    fn notice(env: &str, kind: NoticeKind, key: &str) -> ChangeNotice {
        ChangeNotice {
            env: env.to_owned(),
            kind,
            key: key.to_owned(),
        }
    }

    #[test]
    fn a_change_is_one_event_on_one_line() {
        assert_eq!(
            change_frame(NoticeKind::Kill, "new\nline"),
            "event: change\ndata: {\"key\":\"new\\nline\",\"kind\":\"kill\"}\n\n"
        );
    }

    #[tokio::test]
    async fn a_stream_hears_only_its_environment() {
        let notices = ChangeNotices::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let follower = Follower {
            env: "prod".to_owned(),
            notices: notices.subscribe(),
            _permit: Arc::clone(&permits).try_acquire_owned().unwrap(),
        };
        let mut frames = Box::pin(follower.into_stream());
        assert_eq!(frames.next().await.unwrap(), "retry: 2000\n\n");
        notices.send(notice("staging", NoticeKind::Flag, "a"));
        notices.send(notice("prod", NoticeKind::Segment, "b"));
        let frame = frames.next().await.unwrap();
        assert!(
            frame.ends_with(b"{\"key\":\"b\",\"kind\":\"segment\"}\n\n"),
            "{frame:?}"
        );
        // The place under the cap is held while the stream is, and given back with it.
        assert_eq!(permits.available_permits(), 0);
        drop(frames);
        assert_eq!(permits.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_stream_that_fell_behind_is_told_to_look_again() {
        let notices = ChangeNotices::new();
        let follower = Follower {
            env: "prod".to_owned(),
            notices: notices.subscribe(),
            _permit: Arc::new(tokio::sync::Semaphore::new(1))
                .try_acquire_owned()
                .unwrap(),
        };
        for i in 0..2000 {
            notices.send(notice("prod", NoticeKind::Flag, &format!("f{i}")));
        }
        let mut frames = Box::pin(follower.into_stream());
        frames.next().await.unwrap();
        let frame = frames.next().await.unwrap();
        assert!(
            frame.ends_with(b"{\"key\":\"prod\",\"kind\":\"environment\"}\n\n"),
            "{frame:?}"
        );
    }
}
