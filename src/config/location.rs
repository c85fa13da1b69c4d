//! What a `[[store]] url` points at: `file://`, `http(s)://`, `s3://`, `gs://`
//! or `az://`.

/// Where a store URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    File(std::path::PathBuf),
    Http(String),
    S3 {
        bucket: String,
        prefix: String,
    },
    /// A Google Cloud Storage bucket.
    Gcs {
        bucket: String,
        prefix: String,
    },
    /// An Azure Blob container.
    Azure {
        container: String,
        prefix: String,
    },
}

/// Parse a store URL: `file:///abs/path`, `http(s)://host[:port][/prefix]`,
/// `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]`.
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
    for (scheme, what) in [("s3", "bucket"), ("gs", "bucket"), ("az", "container")] {
        let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
            continue;
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{scheme} URL {url:?} has no {what}"));
        }
        let (bucket, prefix) = (bucket.to_string(), prefix.trim_matches('/').to_string());
        return Ok(match scheme {
            "s3" => Location::S3 { bucket, prefix },
            "gs" => Location::Gcs { bucket, prefix },
            _ => Location::Azure {
                container: bucket,
                prefix,
            },
        });
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or(url);
    Err(format!(
        "unknown URL scheme {scheme:?} in {url:?} (use file://, http://, https://, s3://, gs:// or az://)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloud_urls() {
        let loc = |u| scheme_of(u).unwrap();
        assert_eq!(
            loc("s3://b/p/q/"),
            Location::S3 {
                bucket: "b".into(),
                prefix: "p/q".into()
            }
        );
        assert_eq!(
            loc("gs://b"),
            Location::Gcs {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            loc("az://c/images"),
            Location::Azure {
                container: "c".into(),
                prefix: "images".into()
            }
        );
        for (bad, want) in [
            ("gs://", "has no bucket"),
            ("gs:///p", "has no bucket"),
            ("az://", "has no container"),
            ("s3:///x", "has no bucket"),
            ("gcs://b", "unknown URL scheme \"gcs\""),
        ] {
            let e = scheme_of(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
