//! The frame of a page, below any session or environment: the document, messages, and the
//! error pages. `layout` builds the pages of an environment on it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::assets;

/// A message shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// An error, or a success.
    pub error: bool,
    /// What to say.
    pub text: String,
}

impl Flash {
    /// Something went well.
    pub fn done(text: impl Into<String>) -> Flash {
        Flash {
            error: false,
            text: text.into(),
        }
    }

    /// Something went wrong.
    pub fn error(text: impl Into<String>) -> Flash {
        Flash {
            error: true,
            text: text.into(),
        }
    }
}

pub fn flash_markup(flash: Option<&Flash>) -> Markup {
    html! {
        @if let Some(flash) = flash {
            @if flash.error {
                div.flash.error role="alert" { (flash.text) }
            } @else {
                div.flash.done role="status" { (flash.text) }
            }
        }
    }
}

/// The HTML document around `body`; `live`: the page's change feed, which app.js follows;
/// `banner`: the environment's colour (a stylesheet of its own: the policy allows no inline
/// styles).
pub fn document(title: &str, live: Option<&str>, banner: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · flagd" }
                link rel="stylesheet" href=(assets::url("app.css"));
                link rel="stylesheet" href=(assets::banner_url(banner));
                script src=(assets::url("app.js")) defer {}
            }
            body data-live=[live] {
                a.skip href="#main" { "Skip to content" }
                (body)
            }
        }
    }
}

/// A page outside any environment (sign-in, errors).
pub fn bare_page(status: StatusCode, title: &str, main: Markup) -> Response {
    let body = html! {
        header.top {
            div.env-banner {
                strong { "flagd" }
            }
        }
        main #main tabindex="-1" { (main) }
    };
    respond(
        status,
        document(title, None, &assets::banner_colours(None).0, body),
    )
}

pub fn respond(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, PreEscaped(markup.into_string()).0).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A page that says what went wrong, with a way back.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    bare_page(
        status,
        title,
        html! {
            h1 { (title) }
            div.flash.error role="alert" { (message) }
            p { a href="/ui" { "Back to flagd" } }
        },
    )
}

/// The store did not answer.
pub fn unavailable() -> Response {
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "The database is unreachable; nothing was changed. Try again in a moment.",
    )
}
