//! The frame of every page: the environment banner, navigation, messages, and the error pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flags_store::{Environment, StoreError};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::UiState;
use super::assets;
use super::session::Visitor;

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

/// Which part of the UI a page belongs to, for the navigation's current item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The flag list and flag pages.
    Flags,
    /// Segments.
    Segments,
    /// The audit log.
    Audit,
    /// The evaluate panel.
    Evaluate,
    /// Environment settings.
    Settings,
}

/// What frames a page of one environment: the visitor, the environment, the others it may
/// switch to.
pub struct Chrome {
    /// Who is looking.
    pub visitor: Visitor,
    /// The environment shown.
    pub env: Environment,
    /// Every environment the visitor's key may use.
    pub envs: Vec<Environment>,
}

impl Chrome {
    /// The environment of `env` for `visitor`: 404 when there is none, 403 when the key is
    /// limited to another.
    pub async fn load(state: &UiState, visitor: Visitor, env: &str) -> Result<Chrome, Response> {
        if !visitor.principal.allows_env(env) {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!(
                    "Your admin key is limited to environment {:?}.",
                    visitor.principal.env.as_deref().unwrap_or_default()
                ),
            ));
        }
        let envs = state
            .admin
            .store
            .list_environments()
            .await
            .map_err(store_error)?;
        let envs: Vec<Environment> = envs
            .into_iter()
            .filter(|e| visitor.principal.allows_env(&e.key))
            .collect();
        let Some(found) = envs.iter().find(|e| e.key == env).cloned() else {
            return Err(error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                &format!("There is no environment {env:?}."),
            ));
        };
        Ok(Chrome {
            visitor,
            env: found,
            envs,
        })
    }

    /// The session's CSRF token, for forms.
    pub fn csrf(&self) -> &str {
        self.visitor.session.csrf()
    }

    /// `/ui/envs/{env}` plus `rest`.
    pub fn url(&self, rest: &str) -> String {
        format!("/ui/envs/{}{rest}", path_segment(&self.env.key))
    }

    /// The environment's display name.
    pub fn env_name(&self) -> &str {
        if self.env.name.is_empty() {
            &self.env.key
        } else {
            &self.env.name
        }
    }

    /// A whole page of this environment.
    pub fn page(
        &self,
        status: StatusCode,
        section: Section,
        title: &str,
        main: Markup,
    ) -> Response {
        let flash = self.visitor.session.take_flash();
        let (background, _) = banner_colours(env_color(&self.env));
        let nav = [
            (Section::Flags, "Flags", "/flags"),
            (Section::Segments, "Segments", "/segments"),
            (Section::Audit, "Audit log", "/audit"),
            (Section::Evaluate, "Evaluate", "/evaluate"),
            (Section::Settings, "Environment settings", "/settings"),
        ];
        let body = html! {
            header.top {
                div.env-banner {
                    span.env-label { "Environment: " }
                    strong.env-name { (self.env_name()) }
                    " (" code { (self.env.key) } ")"
                }
                nav aria-label="Main" {
                    ul {
                        @for (item, label, path) in nav {
                            li {
                                @if item == section {
                                    a href=(self.url(path)) aria-current="page" { (label) }
                                } @else {
                                    a href=(self.url(path)) { (label) }
                                }
                            }
                        }
                    }
                    form.switch method="get" action="/ui" {
                        label for="env-switch" { "Environment" }
                        select #env-switch name="env" {
                            @for env in &self.envs {
                                option value=(env.key) selected[env.key == self.env.key] {
                                    (display_name(env)) " (" (env.key) ")"
                                }
                            }
                        }
                        button type="submit" { "Switch" }
                    }
                    form.sign-out method="post" action="/ui/sign-out" {
                        input type="hidden" name="_csrf" value=(self.csrf());
                        span.who { "Signed in as " (self.visitor.principal.actor.name) }
                        button type="submit" { "Sign out" }
                    }
                }
            }
            main #main tabindex="-1" {
                (flash_markup(flash.as_ref()))
                (main)
            }
        };
        respond(
            status,
            document(
                &format!("{title} · {}", self.env_name()),
                Some(&self.url("/live")),
                &background,
                body,
            ),
        )
    }
}

/// The environment's banner colour.
pub fn env_color(env: &Environment) -> Option<&str> {
    env.color.as_deref()
}

/// An environment's display name, or its key when it has none.
pub fn display_name(env: &Environment) -> &str {
    if env.name.is_empty() {
        &env.key
    } else {
        &env.name
    }
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

/// A path segment with everything but unreserved characters escaped.
pub fn path_segment(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn flash_markup(flash: Option<&Flash>) -> Markup {
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
fn document(title: &str, live: Option<&str>, banner: &str, body: Markup) -> Markup {
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
    respond(status, document(title, None, &banner_colours(None).0, body))
}

fn respond(status: StatusCode, markup: Markup) -> Response {
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

/// What a store error means to someone in a browser: the page to show.
pub fn store_error(error: StoreError) -> Response {
    match error {
        StoreError::Unavailable { .. } => unavailable(),
        StoreError::NotFound { what } => error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("There is no {what}."),
        ),
        other => {
            let problem = crate::admin::Problem::from_store(other, false);
            error_page(problem.status, "Not done", &problem.detail)
        }
    }
}

/// Whether the store refused the change for a reason the person can fix (a page with the
/// reason, rather than an error page).
pub fn is_refusal(error: &StoreError) -> bool {
    !matches!(
        error,
        StoreError::Unavailable { .. } | StoreError::Internal { .. }
    )
}

/// What the store said, as a sentence.
pub fn refusal(error: StoreError) -> String {
    let problem = crate::admin::Problem::from_store(error, false);
    let mut text = problem.detail.clone();
    for (path, message) in &problem.errors {
        // A single problem is the detail itself: say it once.
        let item = if path.is_empty() {
            message.clone()
        } else {
            format!("{path}: {message}")
        };
        if !text.contains(&item) {
            text.push_str(&format!(" {item}."));
        }
    }
    text
}

/// The UI's fallback: a page, not a JSON problem.
pub async fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page in flagd's web UI.",
    )
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

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("flag-1.x_y~"), "flag-1.x_y~");
    }
}
