//! What a `[[store]] url` points at: `file://`, `http(s)://` or `s3://`.

/// Where a store URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(std::path::PathBuf),
    Http(String),
    S3 { bucket: String, prefix: String },
}

/// Parse a store URL: `file:///abs/path`, `http(s)://host[:port][/prefix]`,
/// `s3://bucket[/prefix]`.
pub fn scheme_of(url: &str) -> Result<Location, String> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!(
                "file URL {url:?} must hold an absolute path (file:///dir)"
            ));
        }
        return Ok(Location::File(path.into()));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("URL {url:?} has no host"));
        }
        return Ok(Location::Http(url.trim_end_matches('/').to_string()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("s3 URL {url:?} has no bucket"));
        }
        return Ok(Location::S3 {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
        });
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or(url);
    Err(format!(
        "unknown URL scheme {scheme:?} in {url:?} (use file://, http://, https:// or s3://)"
    ))
}
