//! The frame of every page: the environment banner, navigation, messages, and the error pages.

use axum::http::StatusCode;
use axum::response::Response;
use flags_store::{Environment, StoreError};
use maud::{Markup, html};

use super::UiState;
use super::assets;
pub use super::page::{Flash, bare_page, error_page, unavailable};
use super::page::{document, flash_markup, respond};
use super::session::Visitor;

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
        let flash = self.visitor.take_flash();
        let (background, _) = assets::banner_colours(env_color(&self.env));
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

/// A path segment with everything but unreserved characters escaped.
pub fn path_segment(raw: &str) -> String {
    percent_encoding::utf8_percent_encode(raw, SEGMENT).to_string()
}

const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

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
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(path_segment("flag-1.x_y~"), "flag-1.x_y~");
    }
}
