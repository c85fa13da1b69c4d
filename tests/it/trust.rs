//! Signed images through the real binary: `keygen`, `push --sign-key`, hosts with
//! `[trust] keys`; stores whose files are edited on disk (tags, manifests,
//! shards) and an attacker with a key of their own. Whatever a store does, a
//! trusting host serves the signed bytes or refuses with one clear error line.

use std::path::{Path, PathBuf};

use crate::harness::mount::{Daemon, mountpoint};
use crate::harness::{Cluster, same_file, write_image};

const MNT_ROOT: &str = "/tmp/vmifs-trust-tests";

/// Every file under `dir` whose path contains `part`.
fn files(dir: &Path, part: &str) -> Vec<PathBuf> {
    crate::harness::files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(part))
        .collect()
}

fn tag_file(c: &Cluster, store: usize, name: &str, tag: &str) -> PathBuf {
    c.servers[store].root.join("tags").join(name).join(tag)
}

fn fails(c: &Cluster, args: &[&str], want: &str) -> String {
    let o = c.vmifs(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "vmifs {args:?} succeeded");
    let line = err.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("vmifs: error:") && line.contains(want),
        "vmifs {args:?}: want {want:?} in {err}"
    );
    err
}

#[test]
fn a_trusting_host_serves_only_signed_bytes_whatever_the_stores_do() {
    let c = Cluster::start(3, 0, 2, 1, 256 * 1024);
    let key = c.path("publisher.key");
    let evil_key = c.path("attacker.key");
    let public = c.ok(&["keygen", key.to_str().unwrap()]);
    c.ok(&["keygen", evil_key.to_str().unwrap()]);
    fails(&c, &["keygen", key.to_str().unwrap()], "exists");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let good = c.path("good.raw");
    let evil = c.path("evil.raw");
    write_image(&good, 8);
    std::fs::write(&evil, vec![0xeeu8; 3 << 20]).unwrap();
    c.ok(&[
        "push",
        good.to_str().unwrap(),
        "--name",
        "app",
        "--tag",
        "1",
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    c.ok(&[
        "push",
        evil.to_str().unwrap(),
        "--name",
        "evil",
        "--tag",
        "1",
    ]);

    // The host trusts the publisher's key from here on.
    c.add_config(&format!("[trust]\nkeys = [\"{}\"]", public.trim()));

    let out = c.path("out.raw");
    let get = |what: &str| {
        let _ = std::fs::remove_file(&out);
        c.vmifs(&["get", what, out.to_str().unwrap()])
    };
    assert!(get("app:1").status.success());
    assert!(same_file(&good, &out));
    std::fs::remove_file(&out).unwrap();
    fails(
        &c,
        &["get", "evil:1", out.to_str().unwrap()],
        "evil:1 is not signed",
    );
    assert!(!out.exists(), "nothing written for a refused image");
    let ls = c.ok(&["ls"]);
    assert!(ls.contains("app") && !ls.contains("evil"), "{ls}");

    // A warning, not silence, when pushing unsigned to a trusting config.
    let o = c.vmifs(&[
        "push",
        evil.to_str().unwrap(),
        "--name",
        "evil",
        "--tag",
        "2",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unsigned"));

    let app_tag: Vec<Vec<u8>> = (0..3)
        .map(|s| std::fs::read(tag_file(&c, s, "app", "1")).unwrap())
        .collect();
    let evil_tag = std::fs::read(tag_file(&c, 0, "evil", "1")).unwrap();
    let restore = || {
        for (s, b) in app_tag.iter().enumerate() {
            std::fs::write(tag_file(&c, s, "app", "1"), b).unwrap();
        }
    };

    // 1. One store points app:1 at the attacker's image (unsigned): ignored.
    std::fs::write(tag_file(&c, 0, "app", "1"), &evil_tag).unwrap();
    assert!(get("app:1").status.success());
    assert!(same_file(&good, &out));
    // ... every store: refused.
    for s in 0..3 {
        std::fs::write(tag_file(&c, s, "app", "1"), &evil_tag).unwrap();
    }
    fails(
        &c,
        &["get", "app:1", out.to_str().unwrap()],
        "app:1 is not signed",
    );
    restore();

    // 2. The signed record with its image id swapped (signature kept), newer.
    let mut v: serde_json::Value = serde_json::from_slice(&app_tag[0]).unwrap();
    let evil_id = serde_json::from_slice::<serde_json::Value>(&evil_tag).unwrap()["image"].clone();
    v["image"] = evil_id.clone();
    v["time_ms"] = (v["time_ms"].as_u64().unwrap() + 1000).into();
    for s in 0..3 {
        std::fs::write(tag_file(&c, s, "app", "1"), serde_json::to_vec(&v).unwrap()).unwrap();
    }
    fails(
        &c,
        &["get", "app:1", out.to_str().unwrap()],
        "bad signature",
    );
    restore();

    // 3. The attacker signs with their own key: not trusted. Their record is
    //    made by pushing with their key and moving it under app:1.
    c.ok(&[
        "push",
        evil.to_str().unwrap(),
        "--name",
        "app",
        "--tag",
        "1",
        "--sign-key",
        evil_key.to_str().unwrap(),
    ]);
    fails(&c, &["get", "app:1", out.to_str().unwrap()], "not trusted");
    restore();
    // A record signed by the trusted key for another tag, moved to app:1.
    c.ok(&[
        "push",
        evil.to_str().unwrap(),
        "--name",
        "other",
        "--tag",
        "1",
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    let other = std::fs::read(tag_file(&c, 0, "other", "1")).unwrap();
    for s in 0..3 {
        std::fs::write(tag_file(&c, s, "app", "1"), &other).unwrap();
    }
    fails(
        &c,
        &["get", "app:1", out.to_str().unwrap()],
        "bad signature",
    );
    restore();
    assert!(get("app:1").status.success());
    assert!(same_file(&good, &out));

    // 4. Manifests and shards rewritten on one store: hashes catch them.
    for m in files(&c.servers[0].root, "manifests") {
        std::fs::write(&m, br#"{"format":"vmifs-manifest"}"#).unwrap();
    }
    assert!(c.servers[0].corrupt_every_shard() > 0);
    assert!(get("app:1").status.success());
    assert!(same_file(&good, &out));

    // 5. The mount shows only what is signed, and reads the signed bytes.
    let mnt = mountpoint(MNT_ROOT, "signed");
    let _d = Daemon::start(&c, &mnt);
    assert!(mnt.join("app/1.raw").exists());
    assert!(!mnt.join("evil/1.raw").exists());
    assert!(!mnt.join("evil").exists());
    assert!(same_file(&good, &mnt.join("app/1.raw")));

    // 6. A trusting host refuses to write an unsigned removal; a signed one works.
    fails(&c, &["rm", "app:1"], "--sign-key");
    assert!(get("app:1").status.success());
    c.ok(&["rm", "app:1", "--sign-key", key.to_str().unwrap()]);
    fails(&c, &["get", "app:1", out.to_str().unwrap()], "removed");
}

#[test]
fn bad_keys_and_trust_config_get_one_clear_error() {
    let c = Cluster::start(1, 0, 1, 0, 64 * 1024);
    let img = c.path("img.raw");
    std::fs::write(&img, b"data").unwrap();
    let junk = c.path("junk.key");
    std::fs::write(&junk, "not a key\n").unwrap();
    fails(
        &c,
        &[
            "push",
            img.to_str().unwrap(),
            "--name",
            "a",
            "--sign-key",
            junk.to_str().unwrap(),
        ],
        "not a vmifs secret key",
    );
    fails(
        &c,
        &[
            "push",
            img.to_str().unwrap(),
            "--name",
            "a",
            "--sign-key",
            "/nonexistent/key",
        ],
        "sign key",
    );
    c.add_config("[trust]\nkeys = [\"ed25519:1234\"]");
    fails(&c, &["ls"], "not a public key");
    assert!(
        c.ok(&["keygen", c.path("k").to_str().unwrap()])
            .starts_with("ed25519:")
    );
}

mod hostile {
    //! A store run by an attacker, in process: it answers every tag with a
    //! newer record for the attacker's image (unsigned or signed with the
    //! attacker's key), every manifest with the attacker's manifest, and every
    //! shard with its last byte flipped.

    use std::collections::BTreeMap;
    use std::ops::Range;
    use std::sync::Arc;

    use async_trait::async_trait;
    use bytes::Bytes;
    use vmifs::config::ErasureConfig;
    use vmifs::core::id::{ImageId, ImageRef};
    use vmifs::core::key::SecretKey;
    use vmifs::core::sign::Trust;
    use vmifs::core::tag::TagRecord;
    use vmifs::error::{Error, StoreError};
    use vmifs::fetch::Fetcher;
    use vmifs::repo::Repo;
    use vmifs::repo::publish::{PushRequest, push};
    use vmifs::store::memory::MemoryStore;
    use vmifs::store::{DynStore, ObjectMeta, Store, StoreExt};

    #[derive(Debug)]
    struct Hostile {
        inner: Arc<MemoryStore>,
        tag: Bytes,
        manifest: Bytes,
    }

    #[async_trait]
    impl Store for Hostile {
        fn name(&self) -> &str {
            "hostile"
        }
        async fn get_range(
            &self,
            key: &str,
            range: Option<Range<u64>>,
        ) -> Result<Bytes, StoreError> {
            if key.starts_with("tags/") {
                return Ok(self.tag.clone());
            }
            if key.starts_with("manifests/") {
                return Ok(self.manifest.clone());
            }
            let b = self.inner.get_range(key, range).await?;
            let mut v = b.to_vec();
            if let Some(x) = v.last_mut() {
                *x ^= 0xff;
            }
            Ok(Bytes::from(v))
        }
        async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
            self.inner.put(key, data).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
            self.inner.head(key).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(prefix).await
        }
    }

    async fn publish(
        repo: &Repo,
        dir: &std::path::Path,
        name: &str,
        data: &[u8],
        key: Option<SecretKey>,
    ) -> ImageId {
        let f = dir.join(format!("{name}.raw"));
        std::fs::write(&f, data).unwrap();
        let req = PushRequest {
            layout: Default::default(),
            file: f,
            name: name.parse().unwrap(),
            tag: "1".parse().unwrap(),
            labels: BTreeMap::new(),
            erasure: ErasureConfig {
                data: 2,
                parity: 1,
                chunk_size: 4096,
            },
            parallel: 4,
            sign_key: key.map(Arc::new),
        };
        push(repo, req, None).await.unwrap().id
    }

    async fn read(repo: &Repo, dir: &std::path::Path) -> Result<Vec<u8>, Error> {
        let r: ImageRef = "app:1".parse().unwrap();
        let (id, m) = repo.load(&r).await?;
        let out = dir.join("out.raw");
        let fetcher = Fetcher::new(repo.stores().to_vec(), None);
        vmifs::repo::download::download(&fetcher, id, m, &out, 4, None).await?;
        Ok(std::fs::read(out).unwrap())
    }

    #[tokio::test]
    async fn one_hostile_store_cannot_change_a_byte_and_three_cannot_either() {
        let dir = tempfile::tempdir().unwrap();
        let mem: Vec<Arc<MemoryStore>> = (0..3)
            .map(|i| Arc::new(MemoryStore::new(format!("m{i}"))))
            .collect();
        let plain = Repo::from_stores(mem.iter().map(|s| s.clone() as DynStore).collect());
        let publisher = SecretKey::generate().unwrap();
        let attacker = SecretKey::generate().unwrap();
        let trust = Trust::new(vec![publisher.public()]);
        let good: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        publish(
            &plain,
            dir.path(),
            "app",
            &good,
            Some(SecretKey::from_text(&publisher.to_text()).unwrap()),
        )
        .await;
        let evil_id = publish(&plain, dir.path(), "evil", &vec![0xee; 40_000], None).await;
        let evil_manifest = mem[0]
            .get(&vmifs::core::layout::manifest_key(&evil_id))
            .await
            .unwrap();
        let forged = TagRecord {
            image: evil_id,
            time_ms: u64::MAX / 2,
            removed: false,
            signature: None,
        };
        let (app, one) = ("app".parse().unwrap(), "1".parse().unwrap());
        for tag in [forged.clone(), attacker.sign(&app, &one, &forged)] {
            let hostile = |i: usize| -> DynStore {
                Arc::new(Hostile {
                    inner: mem[i].clone(),
                    tag: Bytes::from(tag.to_bytes()),
                    manifest: evil_manifest.clone(),
                })
            };
            // One hostile store among honest ones: the signed bytes.
            let stores: Vec<DynStore> = vec![hostile(0), mem[1].clone(), mem[2].clone()];
            let repo = Repo::from_stores(stores).with_trust(trust.clone());
            assert_eq!(read(&repo, dir.path()).await.unwrap(), good);
            // Without trust the same store wins with its newer record: this is
            // what signing prevents.
            let naive = Repo::from_stores(vec![hostile(0), mem[1].clone(), mem[2].clone()]);
            assert_ne!(read(&naive, dir.path()).await.ok(), Some(good.clone()));
            // Every store hostile: refused, never the attacker's bytes.
            let all = Repo::from_stores((0..3).map(hostile).collect()).with_trust(trust.clone());
            let e = read(&all, dir.path()).await.unwrap_err();
            assert!(matches!(e, Error::Untrusted(_)), "{e}");
        }
    }
}
