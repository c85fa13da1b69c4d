//! A format view of an image version, readable at any offset: the pieces of
//! [`View::pieces`] joined, generated metadata as it is, raw ranges read
//! through the version's [`ImageReader`], zeros without any fetch. So reading
//! a view's metadata fetches nothing, and reading its data fetches just the
//! chunks under it, counted in the image's figures like any read of it.
//!
//! [`OpenFile`] is what an open file on the mount reads: the raw image or one
//! of its views.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::core::view::{Piece, View};
use crate::error::Error;
use crate::mount::image::ImageReader;

/// One view of one version.
#[derive(Debug)]
pub struct ViewReader {
    image: Arc<ImageReader>,
    view: View,
}

impl ViewReader {
    pub fn new(image: Arc<ImageReader>, view: View) -> Self {
        ViewReader { image, view }
    }

    pub fn size(&self) -> u64 {
        self.view.size()
    }

    /// Exactly `min(len, size - offset)` bytes at `offset`, as
    /// [`ImageReader::read_at`] promises.
    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, Error> {
        let pieces = self.view.pieces(offset, len);
        if let [Piece::Raw { offset, len }] = pieces[..] {
            return self.image.read_at(offset, len).await;
        }
        let total = pieces.iter().map(Piece::len).sum::<u64>();
        let mut out = BytesMut::with_capacity(total as usize);
        for p in pieces {
            match p {
                Piece::Meta(b) => out.extend_from_slice(&b),
                Piece::Raw { offset, len } => {
                    out.extend_from_slice(&self.image.read_at(offset, len).await?)
                }
                Piece::Zero(n) => out.resize(out.len() + n as usize, 0),
            }
        }
        Ok(out.freeze())
    }
}

/// What an open file of the mount reads.
#[derive(Debug, Clone)]
pub enum OpenFile {
    Raw(Arc<ImageReader>),
    View(Arc<ViewReader>),
}

impl OpenFile {
    /// The version read.
    pub fn image(&self) -> &Arc<ImageReader> {
        match self {
            OpenFile::Raw(r) => r,
            OpenFile::View(v) => &v.image,
        }
    }

    pub async fn read_at(&self, offset: u64, len: u64) -> Result<Bytes, Error> {
        match self {
            OpenFile::Raw(r) => r.read_at(offset, len).await,
            OpenFile::View(v) => v.read_at(offset, len).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::cache::Cache;
    use crate::config::ErasureConfig;
    use crate::core::view::{Kind, Shape, Views};
    use crate::fetch::Fetcher;
    use crate::fetch::scheduler::{Chunks, Limits};
    use crate::repo::Repo;
    use crate::repo::publish::{PushRequest, push};
    use crate::store::DynStore;
    use crate::store::memory::MemoryStore;

    const CS: u64 = 64 * 1024;

    /// An image of 16 chunks of 64 KiB, chunks 1, 2 and 9 all zero, pushed
    /// to three memory stores (2+1); a reader over it with an empty cache.
    async fn fixture() -> (Vec<u8>, Arc<ImageReader>, Arc<Chunks>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut data = crate::core::sample::random(16 * CS as usize, 3);
        for zero in [1, 2, 9] {
            data[zero * CS as usize..(zero + 1) * CS as usize].fill(0);
        }
        let file = dir.path().join("img.raw");
        std::fs::write(&file, &data).unwrap();
        let stores: Vec<DynStore> = (0..3)
            .map(|i| Arc::new(MemoryStore::new(format!("m{i}"))) as DynStore)
            .collect();
        let repo = Repo::from_stores(stores.clone());
        let req = PushRequest {
            layout: Default::default(),
            file,
            name: "img".parse().unwrap(),
            tag: "1".parse().unwrap(),
            labels: Default::default(),
            erasure: ErasureConfig {
                data: 2,
                parity: 1,
                chunk_size: CS,
            },
            parallel: 4,
            sign_key: None,
        };
        let report = push(&repo, req, None).await.unwrap();
        let manifest = repo.manifest(&report.id).await.unwrap();
        let fetcher = Fetcher::new(stores, None);
        let plan = fetcher.plan(manifest).unwrap();
        let cache = Arc::new(Cache::open(&dir.path().join("cache"), 1 << 30).unwrap());
        let chunks = Chunks::new(fetcher, cache, Limits::default());
        let reader = ImageReader::new(report.id, plan, chunks.clone(), 0);
        (data, reader, chunks, dir)
    }

    fn fetched(chunks: &Chunks) -> u64 {
        let s = chunks.fetcher().stats();
        s.chunks_fetched.load(Relaxed) + s.pieces_fetched.load(Relaxed)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metadata_fetches_nothing_and_data_only_the_chunks_under_it() {
        let (data, reader, chunks, _dir) = fixture().await;
        let views = Views::new(Shape::of(reader.id(), reader.manifest()));
        for kind in Kind::ALL {
            let view = views.get(kind, "1.raw");
            let meta: Vec<(u64, u64)> = view
                .extents()
                .iter()
                .filter(|e| e.source == crate::core::view::Source::Meta)
                .map(|e| (e.at, e.len))
                .collect();
            let v = ViewReader::new(reader.clone(), view.clone());
            let before = fetched(&chunks);
            for (at, len) in meta {
                let got = v.read_at(at, len).await.unwrap();
                assert_eq!(got.len() as u64, len, "{kind}");
            }
            assert_eq!(fetched(&chunks), before, "{kind}: metadata fetched chunks");
        }
        // The qcow2's data: raw chunk 3 is the second allocated chunk (after
        // chunk 0; 1 and 2 are zero), so its data sits one chunk into the
        // data region. Reading 4 KiB of it fetches that chunk alone.
        let view = views.get(Kind::Qcow2, "");
        let View::Qcow2(q) = &view else { panic!() };
        let v = ViewReader::new(reader.clone(), view.clone());
        let at = q.data_offset() + CS + 100;
        let got = v.read_at(at, 4096).await.unwrap();
        assert!(got[..] == data[3 * CS as usize + 100..3 * CS as usize + 4196]);
        assert_eq!(fetched(&chunks), 1);
        // A read straddling metadata, data and the end: all of it, in order.
        let whole = v.read_at(0, view.size() + 10).await.unwrap();
        assert_eq!(whole.len() as u64, view.size());
        let mid = v.read_at(q.data_offset() - 7, CS + 14).await.unwrap();
        assert!(mid[..] == whole[(q.data_offset() - 7) as usize..][..(CS + 14) as usize]);
        // 13 data chunks in all, each fetched whole once; zero chunks never.
        assert_eq!(chunks.fetcher().stats().chunks_fetched.load(Relaxed), 13);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_file_reads_raw_or_its_view() {
        let (data, reader, _chunks, _dir) = fixture().await;
        let views = Views::new(Shape::of(reader.id(), reader.manifest()));
        let raw = OpenFile::Raw(reader.clone());
        let vhd = OpenFile::View(Arc::new(ViewReader::new(
            reader.clone(),
            views.get(Kind::Vhd, ""),
        )));
        let size = data.len() as u64;
        assert!(raw.read_at(0, size).await.unwrap()[..] == data[..]);
        // The VHD: the raw bytes (a whole MiB: no padding), then the footer.
        assert_eq!(size, 1 << 20);
        let got = vhd.read_at(size - 10, 20).await.unwrap();
        assert!(got[..10] == data[size as usize - 10..]);
        assert_eq!(&got[10..18], b"conectix");
        let footer = vhd.read_at(1 << 20, 1000).await.unwrap();
        assert_eq!(footer.len(), 512);
        assert_eq!(&footer[..8], b"conectix");
        assert_eq!(vhd.image().id(), reader.id());
    }
}
