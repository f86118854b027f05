//! The stylesheet and script, compiled into the binary and served with a content hash in
//! their URLs, so browsers keep them until a new flagd ships new ones.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

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
        let (background, text) = banner_colours(color.as_deref());
        let css = format!(".env-banner{{background:{background};color:{text}}}\n");
        return cached("text/css; charset=utf-8", css);
    }
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, content_type, body, _)) => cached(content_type, (*body).to_owned()),
        None => (StatusCode::NOT_FOUND, "there is no such asset").into_response(),
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

/// The banner's background, and black or white text, whichever contrasts more with it.
pub fn banner_colours(color: Option<&str>) -> (String, &'static str) {
    let Some(rgb) = color.and_then(parse_hex) else {
        return ("#24292f".to_owned(), "#ffffff");
    };
    let luminance = relative_luminance(rgb);
    // Contrast with white is 1.05 / (L + 0.05), with black (L + 0.05) / 0.05.
    let text = if 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.05 {
        "#ffffff"
    } else {
        "#000000"
    };
    (format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]), text)
}

fn parse_hex(color: &str) -> Option<[u8; 3]> {
    let hex = color.strip_prefix('#')?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

/// WCAG 2's relative luminance of an sRGB colour.
fn relative_luminance(rgb: [u8; 3]) -> f64 {
    let channel = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(rgb[0]) + 0.7152 * channel(rgb[1]) + 0.0722 * channel(rgb[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_text_contrasts_with_the_colour() {
        assert_eq!(banner_colours(Some("#0550ae")).1, "#ffffff");
        assert_eq!(banner_colours(Some("#ffd33d")).1, "#000000");
        assert_eq!(
            banner_colours(Some("#FFFFFF")),
            ("#ffffff".to_owned(), "#000000")
        );
        assert_eq!(banner_colours(Some("red")).0, "#24292f");
        assert_eq!(banner_colours(None).1, "#ffffff");
    }
}
