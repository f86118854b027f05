//! `GET/POST /ui/envs/{env}/settings`: the environment's display name and colour, which the
//! banner of every page shows so that production does not look like staging.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use flags_store::EnvironmentUpdate;
use maud::html;

use super::UiState;
use super::assets::banner_colours;
use super::layout::{self, Chrome, Flash, Section, display_name, env_color};
use super::session::{Posted, Visitor};

/// `GET /ui/envs/{env}/settings`.
pub async fn page(
    State(state): State<UiState>,
    visitor: Visitor,
    Path(env): Path<String>,
) -> Response {
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let color = env_color(&chrome.env);
    // A colour input always holds a colour: without one chosen it shows the plain banner's.
    let (shown, _) = banner_colours(color);
    let main = html! {
        h1 { "Environment settings" }
        form.settings method="post" action=(chrome.url("/settings")) {
            input type="hidden" name="_csrf" value=(chrome.csrf());
            p {
                label for="name" { "Display name" }
                input #name type="text" name="name" value=(display_name(&chrome.env)) required;
            }
            p {
                label for="color" { "Colour" }
                input #color type="color" name="color" value=(shown)
                    aria-describedby="color-hint";
                span #color-hint.hint {
                    "The banner of every page of " code { (chrome.env.key) } " shows it, with black or white text, whichever reads better."
                }
            }
            p.check {
                input #no-color type="checkbox" name="no_color" value="1" checked[color.is_none()];
                label for="no-color" { "No colour" }
            }
            button.primary type="submit" { "Save settings" }
        }
    };
    chrome.page(
        StatusCode::OK,
        Section::Settings,
        "Environment settings",
        main,
    )
}

/// `POST /ui/envs/{env}/settings`.
pub async fn save(
    State(state): State<UiState>,
    Path(env): Path<String>,
    posted: Posted,
) -> Response {
    let Posted { visitor, form } = posted;
    let chrome = match Chrome::load(&state, visitor, &env).await {
        Ok(chrome) => chrome,
        Err(page) => return page,
    };
    let no_color = form.get("no_color").is_some_and(|v| !v.is_empty());
    let update = EnvironmentUpdate {
        name: Some(form.get("name").unwrap_or_default().trim().to_owned()),
        color: Some(if no_color {
            None
        } else {
            form.get("color").map(|c| c.trim().to_owned())
        }),
    };
    let actor = &chrome.visitor.principal.actor;
    let session = &chrome.visitor.session;
    match state
        .admin
        .store
        .update_environment(actor, &env, &update)
        .await
    {
        Ok(saved) => {
            session.set_flash(Flash::done(format!(
                "Settings of {} saved.",
                display_name(&saved)
            )));
        }
        Err(e) if layout::is_refusal(&e) => {
            session.set_flash(Flash::error(format!(
                "Settings not saved: {}",
                layout::refusal(e)
            )));
        }
        Err(e) => return layout::store_error(e),
    }
    Redirect::to(&chrome.url("/settings")).into_response()
}
