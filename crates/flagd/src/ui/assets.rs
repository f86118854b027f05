//! The stylesheet and script, compiled into the binary and served with a content hash in
//! their URLs, so browsers keep them until a new flagd ships new ones.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::layout;

const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");

/// Each asset: name, content type, body, and its content hash.
static ASSETS: LazyLock<[(&str, &str, &str, String); 2]> = LazyLock::new(|| {
    [
        ("app.css", "text/css; charset=utf-8", APP_CSS, hash(APP_CSS)),
        (
            "app.js",
            "text/javascript; charset=utf-8",
            APP_JS,
            hash(APP_JS),
        ),
    ]
});

/// FNV-1a: enough to tell one build's asset from another's.
fn hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The URL of asset `name`, with its hash.
pub fn url(name: &str) -> String {
    let version = ASSETS
        .iter()
        .find(|(n, ..)| *n == name)
        .map_or("", |(.., h)| h.as_str());
    format!("/ui/assets/{name}?v={version}")
}

/// The URL of the banner stylesheet for `color` (`#rrggbb`).
pub fn banner_url(color: &str) -> String {
    format!("/ui/assets/banner.css?c={}", color.trim_start_matches('#'))
}

#[derive(Deserialize)]
pub struct Banner {
    c: Option<String>,
}

/// `GET /ui/assets/{name}`.
pub async fn serve(Path(name): Path<String>, Query(banner): Query<Banner>) -> Response {
    if name == "banner.css" {
        // The environment's colour, with black or white text, whichever reads better.
        let color = banner.c.map(|c| format!("#{c}"));
        let (background, text) = layout::banner_colours(color.as_deref());
        let css = format!(".env-banner{{background:{background};color:{text}}}\n");
        return cached("text/css; charset=utf-8", css);
    }
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, content_type, body, _)) => cached(content_type, (*body).to_owned()),
        None => layout::error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such asset.",
        ),
    }
}

fn cached(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
