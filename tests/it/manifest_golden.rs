//! Every manifest version ever written must stay loadable.

use vmifs::core::manifest::Manifest;

#[test]
fn manifest_v1_fixture_loads() {
    let bytes = include_bytes!("../fixtures/manifest-v1.json");
    let m = Manifest::from_bytes(bytes).expect("v1 manifest loads");
    assert_eq!(m.version, 1);
    assert_eq!(m.name.as_str(), "debian");
    assert_eq!(m.size, 600_000);
    assert_eq!(m.chunk_count(), 3);
    assert_eq!(m.chunk_len(2), 600_000 - 2 * 262_144);
    assert!(m.chunks[1].is_none());
    assert_eq!(m.erasure.data + m.erasure.parity, 6);
    assert_eq!(m.labels["os"], "debian");
    // The id is the hash of the stored bytes, not of a re-serialisation.
    assert_eq!(Manifest::id_of(bytes), vmifs::core::id::ImageId::of(bytes));
    // Re-serialising a v1 manifest gives the same bytes (ids stay stable).
    assert_eq!(m.to_bytes(), bytes.to_vec());
}

#[test]
fn manifest_v2_fixture_loads() {
    let bytes = include_bytes!("../fixtures/manifest-v2.json");
    let m = Manifest::from_bytes(bytes).expect("v2 manifest loads");
    assert_eq!(m.version, 2);
    assert!(m.packed());
    assert_eq!(m.name.as_str(), "fixture");
    assert_eq!(m.chunk_count(), 17);
    assert_eq!(m.packs.len(), 3);
    let p = &m.packs[0];
    assert_eq!(p.store, "a");
    assert_eq!(
        p.id.to_hex(),
        "f11c000cb9f9a82ca12d479a6592ca06b2d54b9a33ceba08b4e7d9fa85600cfd"
    );
    assert_eq!((p.index_offset, p.index_len), (296_172, 812));
    assert_eq!(
        Manifest::id_of(bytes).to_hex(),
        "a717582c77c6cd6c323fada09299095d5f57056121897f17aaf778aa369bb091"
    );
    assert_eq!(m.to_bytes(), bytes.to_vec());
}
