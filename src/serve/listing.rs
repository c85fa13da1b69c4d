//! Listings: the JSON listing of a prefix (`GET /?list&prefix=P`) and the
//! HTML index of a directory for generic HTTP clients.

use axum::http::{StatusCode, header};
use bytes::Bytes;

use super::reply::{Reply, blocking, io_reply, store_reply};
use super::{App, TMP};
use crate::store::check_key;
use crate::wire::encoding::encode_segment;
use crate::wire::listing::ListEntry;

pub(super) async fn list(app: &App, prefix: String) -> Reply {
    if let Some(i) = prefix.rfind('/') {
        if let Err(e) = check_key("serve", &prefix[..i]) {
            return Reply::error(
                StatusCode::BAD_REQUEST,
                format!("invalid prefix: {}", e.message),
            );
        }
    }
    if prefix.starts_with(".tmp/") {
        return Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .with_body(Bytes::from_static(b"[]"));
    }
    let store = app.store.clone();
    let res = tokio::task::spawn_blocking(move || store.list_sync(&prefix)).await;
    let metas = match res {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return store_reply(&e),
        Err(e) => return Reply::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut out: Vec<ListEntry> = metas
        .into_iter()
        .filter(|m| !m.key.starts_with(".tmp/"))
        .map(|m| ListEntry::new(m.key, m.size, m.modified))
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    match serde_json::to_vec(&out) {
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
    let path = app.store.root().join(&dir);
    let res = blocking(move || {
        let mut names = Vec::new();
        for e in std::fs::read_dir(&path)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name == TMP || check_key("serve", &name).is_err() {
                continue;
            }
            let ft = e.file_type()?;
            if ft.is_dir() {
                names.push(format!("{name}/"));
            } else if ft.is_file() {
                names.push(name);
            }
        }
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
