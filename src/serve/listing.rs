//! Listings: the JSON listing of a prefix, page by page
//! (`GET /?list&prefix=P&after=K&limit=N`, [`crate::wire::listing`]), and the
//! HTML index of a directory for generic HTTP clients.

use axum::http::{StatusCode, header};
use bytes::Bytes;

use super::App;
use super::reply::{Reply, blocking, io_reply};
use crate::store::check_key;
use crate::store::file::beneath::Kind;
use crate::store::file::{Page, in_tmp};
use crate::wire::encoding::encode_segment;
use crate::wire::listing::{ListEntry, ListPage, MAX_PAGE, PAGE};

pub(super) async fn list(app: &App, params: &[(String, String)]) -> Reply {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let prefix = param("prefix").unwrap_or_default();
    let after = param("after");
    let limit = match param("limit").map(|l| l.parse::<usize>()) {
        None => PAGE,
        Some(Ok(n)) if n > 0 => n.min(MAX_PAGE),
        Some(_) => return Reply::error(StatusCode::BAD_REQUEST, "limit must be a positive number"),
    };
    if let Some(i) = prefix.rfind('/') {
        if let Err(e) = check_key("serve", &prefix[..i]) {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                format!("invalid prefix: {}", e.message),
            );
        }
    }
    let page = if in_tmp(&prefix) {
        Ok(Page::default())
    } else {
        let store = app.store.clone();
        blocking(move || store.list_page(&prefix, after.as_deref(), limit)).await
    };
    let page = match page {
        Ok(p) => p,
        Err(e) => return io_reply("listing", &e),
    };
    let answer = ListPage {
        entries: page
            .entries
            .into_iter()
            .map(|m| ListEntry::new(m.key, m.size, m.modified))
            .collect(),
        next: page.next,
    };
    match serde_json::to_vec(&answer) {
        Ok(json) => Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .with_body(Bytes::from(json)),
        Err(e) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// An HTML index of one directory (`dir` empty for the root): one link per
/// entry, directories with a trailing `/`, as a plain web server's directory
/// listing, so generic HTTP clients (rclone's and httpdirfs's http backends,
/// `wget -r`) can browse what is served.
pub(super) async fn index(app: &App, dir: String, head_only: bool) -> Reply {
    // `dir` is a checked key (never `.tmp`), or empty for the root.
    let store = app.store.clone();
    let d = dir.clone();
    let res = blocking(move || {
        let mut names: Vec<String> = store
            .dir_entries(&d)?
            .into_iter()
            .filter(|e| check_key("serve", &e.name).is_ok())
            .map(|e| match e.kind {
                Kind::Dir => format!("{}/", e.name),
                _ => e.name,
            })
            .collect();
        names.sort();
        Ok(names)
    })
    .await;
    let names = match res {
        Ok(n) => n,
        Err(e) => return io_reply(&format!("{dir}/"), &e),
    };
    let title = html_escape(&format!("/{dir}{}", if dir.is_empty() { "" } else { "/" }));
    let mut html = format!(
        "<!DOCTYPE html>\n<html><head><title>Index of {title}</title></head><body>\n<h1>Index of {title}</h1>\n<ul>\n"
    );
    for n in &names {
        let href = encode_segment(n);
        html.push_str(&format!(
            "<li><a href=\"{href}\">{}</a></li>\n",
            html_escape(n)
        ));
    }
    html.push_str("</ul>\n</body></html>\n");
    let len = html.len();
    let r = Reply::new(StatusCode::OK).header(header::CONTENT_TYPE, "text/html; charset=utf-8");
    if head_only {
        r.header(header::CONTENT_LENGTH, len)
    } else {
        r.with_body(Bytes::from(html))
    }
}

pub(super) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
