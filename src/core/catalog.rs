//! Catalog search terms: `key=value` filters over name, tag, id, format, size and
//! labels. `size` also takes `<` and `>` (`size>1GiB`); a value ending in `*`
//! matches by prefix (`name=deb*`). Every term must match.

use crate::core::id::{ImageId, Name, Tag};
use crate::core::manifest::Manifest;
use crate::core::units::parse_size;
use crate::error::Error;

/// One row of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    pub name: Name,
    pub tag: Tag,
    pub id: ImageId,
    pub time_ms: u64,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    Eq(String, String),
    SizeLt(u64),
    SizeGt(u64),
}

impl Term {
    pub fn parse(s: &str) -> Result<Term, Error> {
        if let Some(v) = s.strip_prefix("size>") {
            return parse_size(v).map(Term::SizeGt).map_err(Error::Invalid);
        }
        if let Some(v) = s.strip_prefix("size<") {
            return parse_size(v).map(Term::SizeLt).map_err(Error::Invalid);
        }
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Term::Eq(k.to_string(), v.to_string())),
            _ => Err(Error::Invalid(format!(
                "search term {s:?} must be key=value (or size>N, size<N)"
            ))),
        }
    }

    pub fn matches(&self, e: &CatalogEntry) -> bool {
        let size = e.manifest.size;
        match self {
            Term::SizeLt(n) => size < *n,
            Term::SizeGt(n) => size > *n,
            Term::Eq(k, v) => {
                let actual = match k.as_str() {
                    "name" => Some(e.name.to_string()),
                    "tag" => Some(e.tag.to_string()),
                    "id" => return e.id.to_hex().starts_with(v.as_str()),
                    "format" => Some(e.manifest.source_format.clone()),
                    "size" => {
                        return parse_size(v).is_ok_and(|n| n == size);
                    }
                    label => e.manifest.labels.get(label).cloned(),
                };
                actual.is_some_and(|a| glob(v, &a))
            }
        }
    }
}

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::manifest::{Erasure, Manifest};
    use std::collections::BTreeMap;

    fn entry() -> CatalogEntry {
        CatalogEntry {
            name: "debian".parse().unwrap(),
            tag: "12".parse().unwrap(),
            id: crate::core::id::ImageId::of(b"x"),
            time_ms: 0,
            manifest: Manifest {
                format: crate::core::manifest::FORMAT.into(),
                version: 1,
                name: "debian".parse().unwrap(),
                size: 2 << 30,
                chunk_size: 1 << 30,
                erasure: Erasure { data: 1, parity: 0 },
                stores: vec!["a".into()],
                source_format: "qcow2".into(),
                labels: BTreeMap::from([("os".into(), "linux".into())]),
                chunks: vec![None, None],
                packs: Vec::new(),
            },
        }
    }

    #[test]
    fn table() {
        let e = entry();
        let id_prefix = format!("id={}", &e.id.to_hex()[..6]);
        for (term, want) in [
            ("name=debian", true),
            ("name=deb*", true),
            ("name=ubuntu", false),
            ("tag=12", true),
            ("os=linux", true),
            ("os=bsd", false),
            ("arch=x86", false),
            ("format=qcow2", true),
            ("size=2GiB", true),
            ("size>1GiB", true),
            ("size<1GiB", false),
            (id_prefix.as_str(), true),
        ] {
            assert_eq!(Term::parse(term).unwrap().matches(&e), want, "{term}");
        }
        for bad in ["novalue", "=x", "size>lots"] {
            assert!(Term::parse(bad).is_err(), "{bad}");
        }
    }
}
