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
