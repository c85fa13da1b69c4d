//! Reading what the stores say is published: tag records (the newest, or
//! the newest trusted one, wins), manifests (accepted only under the id their
//! bytes hash to), the catalog of every tag, and boot profiles.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use futures::future::join_all;
use futures::stream::{self, StreamExt as _};

use super::{Repo, now_ms, warn_skipped, warnings};
use crate::core::catalog::CatalogEntry;
use crate::core::id::{ImageId, ImageRef, Name, Tag};
use crate::core::key::SecretKey;
use crate::core::layout;
use crate::core::limits;
use crate::core::manifest::Manifest;
use crate::core::profile::Profile;
use crate::core::tag::TagRecord;
use crate::error::{Error, StoreError};
use crate::store::StoreExt;

/// Manifests fetched at once when many are needed (a listing, a refresh).
const MANIFEST_FETCHES: usize = 16;
/// Tags resolved at once.
const TAG_READS: usize = 64;

impl Repo {
    /// The newest tag record for `r` across the stores (with trust: the newest
    /// one signed by a trusted key).
    pub async fn resolve(&self, r: &ImageRef) -> Result<TagRecord, Error> {
        let key = layout::tag_key(&r.name, &r.tag);
        let results = join_all(
            self.stores
                .iter()
                .map(|s| s.get_opt_bounded(&key, limits::TAG_MAX)),
        )
        .await;
        let mut best: Option<TagRecord> = None;
        let mut errors = Vec::new();
        let mut refused = Vec::new();
        for (s, res) in self.stores.iter().zip(results) {
            let t = match res.map(|b| b.map(|b| TagRecord::from_bytes(&b))) {
                Ok(Some(Ok(t))) => t,
                Ok(Some(Err(e))) => {
                    errors.push(format!("store {}: {e}", s.name()));
                    continue;
                }
                Ok(None) => continue,
                Err(e) => {
                    if e.is_too_large() {
                        warnings::warn(&format!("too-large:{}", s.name()), &e);
                    }
                    errors.push(e.to_string());
                    continue;
                }
            };
            if let Some(trust) = &self.trust
                && let Err(why) = trust.check(&r.name, &r.tag, &t)
            {
                warnings::warn(
                    &format!("refused:{}", s.name()),
                    format_args!("store {}: refused: {why}", s.name()),
                );
                refused.push(format!("store {}: {why}", s.name()));
                continue;
            }
            if best.as_ref().is_none_or(|x| t.time_ms > x.time_ms) {
                best = Some(t);
            }
        }
        match best {
            Some(t) if t.removed => Err(Error::NotFound(format!("image {r} not found (removed)"))),
            Some(t) => Ok(t),
            None if !refused.is_empty() => Err(Error::Untrusted(format!(
                "image {r} refused: {}",
                refused.join("; ")
            ))),
            None if errors.len() == self.stores.len() => Err(Error::Unavailable(format!(
                "cannot read tag {r}: {}",
                errors.join("; ")
            ))),
            None => Err(Error::NotFound(format!("image {r} not found"))),
        }
    }

    /// Fetch and check the manifest `id` from the first store that has it intact.
    pub async fn manifest(&self, id: &ImageId) -> Result<Manifest, Error> {
        let key = layout::manifest_key(id);
        let mut problems = Vec::new();
        for s in &self.stores {
            match s.get_opt_bounded(&key, self.manifest_max).await {
                Ok(Some(b)) if Manifest::id_of(&b) == *id => match Manifest::from_bytes(&b) {
                    Ok(m) => return Ok(m),
                    Err(e) => problems.push(format!("store {}: {e}", s.name())),
                },
                Ok(Some(_)) => problems.push(format!(
                    "store {}: manifest bytes do not match id {}",
                    s.name(),
                    id.short()
                )),
                Ok(None) => {}
                Err(e) => {
                    if e.is_too_large() {
                        warnings::warn(&format!("too-large:{}", s.name()), &e);
                    }
                    problems.push(e.to_string())
                }
            }
        }
        if problems.is_empty() {
            Err(Error::NotFound(format!("image version {id} not found")))
        } else {
            Err(Error::Unavailable(format!(
                "manifest {}: {}",
                id.short(),
                problems.join("; ")
            )))
        }
    }

    /// Fetch many manifests, 16 at once; one result per
    /// distinct id.
    pub async fn manifests(
        &self,
        ids: impl IntoIterator<Item = ImageId>,
    ) -> HashMap<ImageId, Result<Manifest, Error>> {
        let ids: BTreeSet<ImageId> = ids.into_iter().collect();
        stream::iter(ids)
            .map(|id| async move { (id, self.manifest(&id).await) })
            .buffer_unordered(MANIFEST_FETCHES)
            .collect()
            .await
    }

    /// Resolve `name:tag` and load its manifest.
    pub async fn load(&self, r: &ImageRef) -> Result<(ImageId, Manifest), Error> {
        let t = self.resolve(r).await?;
        Ok((t.image, self.manifest(&t.image).await?))
    }

    /// Every tag with its newest record, across all reachable stores.
    pub async fn tags(&self) -> Result<BTreeMap<(Name, Tag), TagRecord>, Error> {
        let listings = join_all(self.stores.iter().map(|s| s.list(layout::TAGS))).await;
        let mut keys = BTreeSet::new();
        let mut failures = Vec::new();
        for l in listings {
            match l {
                Ok(objs) => keys.extend(objs.iter().filter_map(|o| layout::parse_tag_key(&o.key))),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.len() == self.stores.len() {
            return Err(Error::Unavailable(failures.join("; ")));
        }
        // Resolve all tags at once: each is one small read per store.
        let refs: Vec<ImageRef> = keys
            .into_iter()
            .map(|(name, tag)| ImageRef { name, tag })
            .collect();
        let records: Vec<_> = stream::iter(refs.iter().map(|r| self.resolve(r)))
            .buffered(TAG_READS)
            .collect()
            .await;
        let mut out = BTreeMap::new();
        for (r, rec) in refs.into_iter().zip(records) {
            match rec {
                Ok(t) => {
                    out.insert((r.name, r.tag), t);
                }
                Err(Error::NotFound(_)) => {}
                // Already logged; the other tags are still usable.
                Err(Error::Untrusted(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The catalog: every tag with its manifest. A tag whose manifest is
    /// missing on every store (dangling) or unreadable is left out, with one
    /// warning for all of them ([`warnings`]).
    pub async fn catalog(&self) -> Result<Vec<CatalogEntry>, Error> {
        let tags = self.tags().await?;
        let manifests = self.manifests(tags.values().map(|t| t.image)).await;
        let mut out = Vec::new();
        let (mut dangling, mut unreadable) = (Vec::new(), Vec::new());
        for ((name, tag), rec) in tags {
            let m = match &manifests[&rec.image] {
                Ok(m) => m.clone(),
                Err(Error::NotFound(_)) => {
                    dangling.push(format!("{name}:{tag}"));
                    continue;
                }
                Err(e) => {
                    unreadable.push(format!("{name}:{tag} ({e})"));
                    continue;
                }
            };
            out.push(CatalogEntry {
                name,
                tag,
                id: rec.image,
                time_ms: rec.time_ms,
                manifest: m,
            });
        }
        warn_skipped(&dangling, &unreadable);
        Ok(out)
    }

    /// Remove a tag: write a tombstone, newer than any record of the tag, to
    /// every store. One store that accepts it is enough to hide the tag (the
    /// newest record wins); a store that was down keeps its older record, which
    /// loses to the tombstone when it comes back. Returns the image the tag
    /// pointed at and the errors of the stores that could not be written.
    pub async fn untag(
        &self,
        r: &ImageRef,
        sign_key: Option<&SecretKey>,
    ) -> Result<(ImageId, Vec<StoreError>), Error> {
        let t = self.resolve(r).await?;
        let mut tomb = TagRecord {
            image: t.image,
            time_ms: now_ms().max(t.time_ms + 1),
            removed: true,
            signature: None,
        };
        if let Some(k) = sign_key {
            tomb = k.sign(&r.name, &r.tag, &tomb);
        }
        let key = layout::tag_key(&r.name, &r.tag);
        let failed = self.put_some(&key, Bytes::from(tomb.to_bytes())).await?;
        Ok((t.image, failed))
    }

    /// Write a boot profile to every store. A profile is a hint, so stores that
    /// are down are skipped; it fails only if no store took it. Returns how
    /// many did and the errors of the others.
    pub async fn put_profile(&self, p: &Profile) -> Result<(usize, Vec<StoreError>), Error> {
        let key = layout::profile_key(&p.image);
        let failed = self.put_some(&key, Bytes::from(p.to_bytes())).await?;
        Ok((self.stores.len() - failed.len(), failed))
    }

    /// The boot profile of version `id` from the first store that has a
    /// readable one for exactly that version (with trust: signed by a trusted
    /// key); `None` if there is none. Never an error: a profile only steers
    /// prefetch. A profile refused (for another image, unreadable, not signed
    /// or badly signed under trust) is named in one warning and counted
    /// ([`Repo::profiles_refused`]); the next store is asked.
    pub async fn profile(&self, id: &ImageId) -> Option<Profile> {
        let key = layout::profile_key(id);
        for s in &self.stores {
            // A profile is smaller than the manifest of its image.
            let refused = match s.get_opt_bounded(&key, self.manifest_max).await {
                Ok(Some(b)) => match Profile::from_bytes(&b) {
                    Ok(p) if p.image != *id => {
                        format!("boot profile {} is for another image", id.short())
                    }
                    Ok(p) => match &self.trust {
                        Some(t) => match t.check_profile(&p) {
                            Ok(()) => return Some(p),
                            Err(why) => why,
                        },
                        None => return Some(p),
                    },
                    Err(e) => e.to_string(),
                },
                Ok(None) => continue,
                Err(e) => {
                    tracing::debug!("boot profile {}: {e}", id.short());
                    continue;
                }
            };
            self.profiles_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(store = s.name(), "ignoring a boot profile: {refused}");
        }
        None
    }
}
