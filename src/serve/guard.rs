//! The check in front of every request when `vmifs serve` has a token file:
//! `Authorization: Bearer TOKEN` must name a known token, and `PUT`/`DELETE`
//! (any method but `GET`/`HEAD`) need a `write` token.
//!
//! No or an unknown token is `401` with `WWW-Authenticate: Bearer`; a read
//! token on a write is `403`. The bodies say `unauthorized` / `forbidden` and
//! nothing more: the answer must not help someone guess what exists.
//! Without a token file every request passes (loopback only, see
//! [`super::ServeOptions`]).

use axum::http::{HeaderMap, Method, StatusCode, header};

use super::reply::Reply;
use super::tokens::{Access, Tokens};

/// What the request needs.
fn needs(method: &Method) -> Access {
    if matches!(*method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    }
}

/// The bearer token of `Authorization`, if it holds one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `None` when the request may go on, else the answer refusing it.
pub(super) fn check(
    tokens: Option<&Tokens>,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Reply> {
    let tokens = tokens?;
    match bearer(headers).and_then(|t| tokens.check(t)) {
        None => Some(
            Reply::error(StatusCode::UNAUTHORIZED, "unauthorized")
                .header(header::WWW_AUTHENTICATE, "Bearer realm=\"vmifs\""),
        ),
        Some(have) if have < needs(method) => {
            Some(Reply::error(StatusCode::FORBIDDEN, "forbidden"))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const R: &str = "reader-token-0123456789";
    const W: &str = "writer-token-0123456789";

    fn status(tokens: Option<&Tokens>, method: Method, auth: Option<&str>) -> u16 {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        check(tokens, &method, &h).map_or(200, |r| r.status.as_u16())
    }

    #[test]
    fn tokens_decide() {
        let t = Tokens::parse(&format!("read {R}\nwrite {W}\n"), "t").unwrap();
        let t = Some(&t);
        let r = format!("Bearer {R}");
        let w = format!("bearer  {W} ");
        assert_eq!(status(t, Method::GET, None), 401);
        assert_eq!(status(t, Method::PUT, None), 401);
        assert_eq!(
            status(t, Method::GET, Some("Bearer wrong-token-0123456789")),
            401
        );
        assert_eq!(status(t, Method::GET, Some(&format!("Basic {R}"))), 401);
        assert_eq!(status(t, Method::GET, Some("Bearer ")), 401);
        assert_eq!(status(t, Method::GET, Some(&r)), 200);
        assert_eq!(status(t, Method::HEAD, Some(&r)), 200);
        assert_eq!(status(t, Method::PUT, Some(&r)), 403);
        assert_eq!(status(t, Method::DELETE, Some(&r)), 403);
        assert_eq!(status(t, Method::POST, Some(&r)), 403);
        assert_eq!(status(t, Method::PUT, Some(&w)), 200);
        assert_eq!(status(t, Method::GET, Some(&w)), 200);
        assert_eq!(status(None, Method::PUT, None), 200);
        let mut h = HeaderMap::new();
        let refused = check(t, &Method::GET, &h).unwrap();
        assert!(refused.headers.contains_key(header::WWW_AUTHENTICATE));
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(&r).unwrap());
        assert!(check(t, &Method::GET, &h).is_none());
    }
}
