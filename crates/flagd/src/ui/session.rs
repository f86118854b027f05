//! Sign-in, sessions and CSRF protection.
//!
//! Signing in presents an admin key once; the server keeps it in the session and gives the
//! browser only a random id, in a cookie scripts cannot read (`HttpOnly`), that no other site's
//! request carries (`SameSite=Strict`) and, with TLS, that only travels encrypted (`Secure`,
//! `__Host-`). The key is checked again on every request, so revoking it ends its sessions.
//!
//! Every change is a POST whose form carries the session's CSRF token (compared in constant
//! time), and a POST whose `Origin` names another site or whose `Sec-Fetch-Site` says
//! `cross-site` is refused before anything is read. Nothing changes on a GET.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use maud::html;
use subtle::ConstantTimeEq;

use super::UiState;
use super::page::{self, Flash};
use crate::admin::{Principal, authenticate_secret};

/// Sessions kept at most; signing in past this first forgets the expired ones, then the oldest.
const MAX_SESSIONS: usize = 10_000;

/// The largest form a page posts (a flag's whole JSON fits many times over).
const MAX_FORM_BYTES: usize = 4 * 1024 * 1024;

/// One signed-in browser.
pub struct Session {
    /// The admin key presented at sign-in; never sent back to the browser.
    secret: String,
    /// The token every POST of this session must carry.
    csrf: String,
    /// When it was created and when it ends.
    created: Instant,
    expires: Instant,
    /// A message for the next page shown (after a redirect).
    flash: Mutex<Option<Flash>>,
}

impl Session {
    /// The CSRF token to put in this session's forms.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Leaves a message for the next page.
    pub fn set_flash(&self, flash: Flash) {
        *self.flash.lock().unwrap_or_else(PoisonError::into_inner) = Some(flash);
    }

    /// The message left for this page, once.
    pub fn take_flash(&self) -> Option<Flash> {
        self.flash
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Every signed-in browser, by session id. Kept in memory: a restart signs everyone out.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    ttl: Duration,
}

impl Sessions {
    /// Sessions that last `ttl` from sign-in.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn create(&self, secret: &str) -> (String, Arc<Session>) {
        let now = Instant::now();
        let id = random_token();
        let session = Arc::new(Session {
            secret: secret.to_owned(),
            csrf: random_token(),
            created: now,
            expires: now + self.ttl,
            flash: Mutex::new(None),
        });
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
            while map.len() >= MAX_SESSIONS {
                let oldest = map
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(id, _)| id.clone());
                match oldest {
                    Some(id) => drop(map.remove(&id)),
                    None => break,
                }
            }
        }
        map.insert(id.clone(), Arc::clone(&session));
        (id, session)
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.lock();
        let session = Arc::clone(map.get(id)?);
        if session.expires <= Instant::now() {
            map.remove(id);
            return None;
        }
        Some(session)
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The operating system's generator failing is not something a server can go on without.
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no randomness for a session: {e}"));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The session cookie's name: with TLS, `__Host-` makes browsers refuse it unless it is
/// `Secure`, host-only and for `/`.
fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-flagd_session"
    } else {
        "flagd_session"
    }
}

fn session_id(headers: &HeaderMap, secure: bool) -> Option<&str> {
    let name = cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn set_cookie(state: &UiState, id: &str, max_age: Duration) -> HeaderValue {
    let secure = if state.secure { "; Secure" } else { "" };
    let value = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        cookie_name(state.secure),
        max_age.as_secs()
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A signed-in visitor: the session and who its key is now.
pub struct Visitor {
    /// The session.
    pub session: Arc<Session>,
    /// The key's identity and scope, checked for this request.
    pub principal: Principal,
    /// The page's script is fetching the page again to show a live change
    /// (`X-Requested-With: fetch`): a message left for the next page is not this one's.
    pub refreshing: bool,
}

impl Visitor {
    /// The message left for this page, once; none for a live refresh, which would otherwise
    /// take it from the page being navigated to (in this tab or another of the session).
    pub fn take_flash(&self) -> Option<Flash> {
        if self.refreshing {
            None
        } else {
            self.session.take_flash()
        }
    }
}

impl FromRequestParts<UiState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &UiState) -> Result<Visitor, Response> {
        let reading = parts.method == Method::GET || parts.method == Method::HEAD;
        let refused = |state: &UiState| {
            if reading {
                let mut response = Redirect::to("/ui/sign-in").into_response();
                response
                    .headers_mut()
                    .insert(header::SET_COOKIE, set_cookie(state, "", Duration::ZERO));
                response
            } else {
                page::error_page(
                    StatusCode::UNAUTHORIZED,
                    "Signed out",
                    "Your session has ended; sign in again. Nothing was changed.",
                )
            }
        };
        let Some(session) =
            session_id(&parts.headers, state.secure).and_then(|id| state.sessions.get(id))
        else {
            return Err(refused(state));
        };
        match authenticate_secret(&state.admin, &session.secret).await {
            Ok(principal) => Ok(Visitor {
                session,
                principal,
                refreshing: parts
                    .headers
                    .get("x-requested-with")
                    .is_some_and(|v| v.as_bytes() == b"fetch"),
            }),
            Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE => {
                Err(page::unavailable())
            }
            Err(_) => {
                // The key was revoked: its sessions end.
                if let Some(id) = session_id(&parts.headers, state.secure) {
                    state.sessions.remove(id);
                }
                Err(refused(state))
            }
        }
    }
}

/// A change asked for by a signed-in visitor: a same-site POST with the session's CSRF token,
/// and its form.
pub struct Posted {
    /// Who asks.
    pub visitor: Visitor,
    /// The fields posted.
    pub form: Form,
}

impl FromRequest<UiState> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, state: &UiState) -> Result<Posted, Response> {
        let (mut parts, body) = request.into_parts();
        check_same_site(&parts.headers, state.secure)?;
        let visitor = Visitor::from_request_parts(&mut parts, state).await?;
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return Err(page::error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "The form is larger than 4 MB, or did not arrive whole. Nothing was changed.",
            ));
        };
        let form = Form::parse(&bytes);
        check_csrf(&visitor.session, form.get("_csrf"))?;
        Ok(Posted { visitor, form })
    }
}

/// Refuses a request another site made the browser send: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` whose host is not the one asked.
pub fn check_same_site(headers: &HeaderMap, secure: bool) -> Result<(), Response> {
    let refuse = |why: &str| {
        Err(page::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            &format!("{why} Nothing was changed."),
        ))
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return refuse("This request came from another site.");
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin = origin.to_str().unwrap_or_default();
        let scheme = if secure { "https://" } else { "http://" };
        let same = origin
            .strip_prefix(scheme)
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| !host.is_empty() && o.eq_ignore_ascii_case(host));
        if !same {
            return refuse("This request came from another origin.");
        }
    }
    Ok(())
}

/// Refuses a POST without this session's CSRF token.
pub fn check_csrf(session: &Session, token: Option<&str>) -> Result<(), Response> {
    let token = token.unwrap_or_default();
    if token.is_empty() || !bool::from(token.as_bytes().ct_eq(session.csrf.as_bytes())) {
        return Err(page::error_page(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form is out of date or did not come from this page (its CSRF token is \
             missing or wrong). Reload the page and try again. Nothing was changed.",
        ));
    }
    Ok(())
}

/// A posted `application/x-www-form-urlencoded` form, fields in order (names may repeat).
#[derive(Debug, Default, Clone)]
pub struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Reads a form body; undecodable bytes become U+FFFD.
    pub fn parse(body: &[u8]) -> Form {
        Form {
            fields: form_urlencoded_pairs(body),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every field, in the order posted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, value) = match part.iter().position(|b| *b == b'=') {
                Some(at) => (&part[..at], &part[at + 1..]),
                None => (part, &[][..]),
            };
            (decode_component(name), decode_component(value))
        })
        .collect()
}

fn decode_component(raw: &[u8]) -> String {
    let spaced: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// `GET /ui/sign-in`.
pub async fn sign_in_page() -> Response {
    sign_in_form(StatusCode::OK, None)
}

fn sign_in_form(status: StatusCode, error: Option<&str>) -> Response {
    let main = html! {
        h1 { "Sign in" }
        @if let Some(error) = error {
            div.flash.error role="alert" { (error) }
        }
        form.sign-in method="post" action="/ui/sign-in" {
            p {
                label for="key" { "Admin key" }
                input #key type="password" name="key" autocomplete="current-password"
                    required autofocus;
            }
            p.hint { "An admin key of this flagd: the one it was started with, or one made with "
                code { "flagd key create --kind admin" } ". It stays on the server." }
            button type="submit" { "Sign in" }
        }
    };
    page::bare_page(status, "Sign in", main)
}

/// `POST /ui/sign-in`: checks the key, starts a session, sets its cookie.
pub async fn sign_in(State(state): State<UiState>, request: Request) -> Response {
    if let Err(refused) = check_same_site(request.headers(), state.secure) {
        return refused;
    }
    let Ok(bytes) = to_bytes(request.into_body(), MAX_FORM_BYTES).await else {
        return sign_in_form(
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("The form is too large, or did not arrive whole."),
        );
    };
    let form = Form::parse(&bytes);
    let key = form.get("key").unwrap_or_default().trim();
    if key.is_empty() {
        return sign_in_form(StatusCode::BAD_REQUEST, Some("Enter an admin key."));
    }
    match authenticate_secret(&state.admin, key).await {
        Ok(principal) => {
            let (id, _) = state.sessions.create(key);
            tracing::info!(actor = %principal.actor.name, "signed in to the web UI");
            let mut response = Redirect::to("/ui").into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&state, &id, state.sessions.ttl),
            );
            response
        }
        Err(problem) if problem.status == StatusCode::SERVICE_UNAVAILABLE => page::unavailable(),
        Err(problem) if problem.status == StatusCode::FORBIDDEN => sign_in_form(
            StatusCode::FORBIDDEN,
            Some("Sign-in refused: an SDK key cannot sign in; use an admin key."),
        ),
        Err(_) => sign_in_form(
            StatusCode::UNAUTHORIZED,
            Some("Sign-in refused: unknown or revoked key."),
        ),
    }
}

/// `POST /ui/sign-out`: ends the session and clears its cookie.
pub async fn sign_out(State(state): State<UiState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let posted = Posted::from_request(Request::from_parts(parts.clone(), body), &state).await;
    if let Err(refused) = posted {
        // Signed out already: nothing to end.
        if Visitor::from_request_parts(&mut parts, &state)
            .await
            .is_err()
        {
            return Redirect::to("/ui/sign-in").into_response();
        }
        return refused;
    }
    if let Some(id) = session_id(&parts.headers, state.secure) {
        state.sessions.remove(id);
    }
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&state, "", Duration::ZERO));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_repeated_and_escaped_fields() {
        let form = Form::parse(b"a=1&b=x+y%21&a=2&empty=&flag");
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), Some("x y!"));
        assert_eq!(form.get("empty"), Some(""));
        assert_eq!(form.get("flag"), Some(""));
        assert_eq!(form.get("missing"), None);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; flagd_session=abc; x=y"),
        );
        assert_eq!(session_id(&headers, false), Some("abc"));
        assert_eq!(session_id(&headers, true), None);
    }

    #[test]
    fn cross_site_requests_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("flagd.local:8080"));
        assert!(check_same_site(&headers, false).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://flagd.local:8080"),
        );
        assert!(check_same_site(&headers, false).is_ok());
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(check_same_site(&headers, false).is_err());
        headers.remove(header::ORIGIN);
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_same_site(&headers, false).is_err());
        headers.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(check_same_site(&headers, false).is_ok());
    }

    #[test]
    fn tokens_are_compared_whole() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (_, session) = sessions.create("k");
        assert!(check_csrf(&session, Some(session.csrf())).is_ok());
        assert!(check_csrf(&session, None).is_err());
        assert!(check_csrf(&session, Some("")).is_err());
        assert!(check_csrf(&session, Some(&session.csrf()[..10])).is_err());
    }
}
