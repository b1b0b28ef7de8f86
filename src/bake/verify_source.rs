//! Where `verify` reads an image from, behind one synchronous trait ([`VerifySource`]) so the
//! checker is written once: an OCI layout on disk (every blob hashed, base layers included) or
//! a registry ([`RegistryImage`]: documents fetched and checked, our layers streamed through
//! the checker as they arrive and never stored, base layers never downloaded). The checker runs
//! on a blocking thread; a registry's async reads are driven from it through a runtime handle.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::oci::OciError;
use crate::oci::model::Descriptor;
use crate::oci::source::{self, ImageSource, LayoutSource, RegistrySource, blob_path};
use crate::oci::tar_reader::BlobReader;

/// An image as the checker reads it.
pub trait VerifySource {
    /// How the image is named in messages.
    fn label(&self) -> String;
    /// The document the reference points at, and its declared media type.
    fn root(&self) -> Result<(Vec<u8>, Option<String>), OciError>;
    /// A document or config by descriptor, checked against it.
    fn small_blob(&self, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>, OciError>;
    /// One of our layers, from its start (`Err`: why it cannot be read, the layer's verdict).
    fn open_layer(&self, desc: &Descriptor) -> Result<BlobReader, String>;
    /// The verdict on a base layer.
    fn base_layer(&self, desc: &Descriptor) -> Result<(), String>;
}

impl VerifySource for LayoutSource {
    fn label(&self) -> String {
        ImageSource::label(self)
    }

    fn root(&self) -> Result<(Vec<u8>, Option<String>), OciError> {
        // A layout source does no network I/O: its futures complete on first poll.
        futures::executor::block_on(ImageSource::root(self))
    }

    fn small_blob(&self, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>, OciError> {
        futures::executor::block_on(ImageSource::small_blob(self, desc, limit, what))
    }

    /// Opened as the base reader opens a blob: never through a symlink, a regular file only.
    fn open_layer(&self, desc: &Descriptor) -> Result<BlobReader, String> {
        source::open_blob(&blob_path(&self.dir, &desc.digest))
            .map(|f| Box::new(f) as BlobReader)
            .map_err(|e| e.to_string())
    }

    /// Hashed against its digest.
    fn base_layer(&self, desc: &Descriptor) -> Result<(), String> {
        self.verified_blob(desc)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// An image in a registry, read for `verify --image`.
pub struct RegistryImage {
    /// The image.
    pub src: RegistrySource,
    /// The runtime the registry client runs on.
    pub handle: tokio::runtime::Handle,
    /// Told of every layer byte read (progress).
    pub on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
}

impl VerifySource for RegistryImage {
    fn label(&self) -> String {
        ImageSource::label(&self.src)
    }

    fn root(&self) -> Result<(Vec<u8>, Option<String>), OciError> {
        self.handle.block_on(ImageSource::root(&self.src))
    }

    fn small_blob(&self, desc: &Descriptor, limit: u64, what: &str) -> Result<Vec<u8>, OciError> {
        self.handle
            .block_on(ImageSource::small_blob(&self.src, desc, limit, what))
    }

    /// The blob streamed (resumed after cuts), capped at its descriptor's size.
    fn open_layer(&self, desc: &Descriptor) -> Result<BlobReader, String> {
        let repo = self.src.image.repository.clone();
        let stream = self
            .handle
            .block_on(self.src.registry.blob_body(&repo, &desc.digest, desc.size))
            .map_err(|e| e.to_string())?;
        Ok(Box::new(StreamRead {
            stream: Box::pin(stream),
            handle: self.handle.clone(),
            buf: Bytes::new(),
            left: desc.size,
            done: false,
            on_bytes: self.on_bytes.clone(),
        }))
    }

    /// Never downloaded: the base is not what the lock pins.
    fn base_layer(&self, _desc: &Descriptor) -> Result<(), String> {
        Ok(())
    }
}

/// A blocking reader over a registry blob's byte stream.
struct StreamRead {
    stream: Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    handle: tokio::runtime::Handle,
    buf: Bytes,
    /// Bytes the descriptor still allows.
    left: u64,
    /// The stream ended (it must not be polled again).
    done: bool,
    on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Read for StreamRead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.handle.block_on(self.stream.next()) {
                None => {
                    self.done = true;
                    return Ok(0);
                }
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => {
                    let n = chunk.len() as u64;
                    if n > self.left {
                        return Err(io::Error::other(
                            "the registry sent more bytes than the layer's descriptor says",
                        ));
                    }
                    self.left -= n;
                    (self.on_bytes)(n);
                    self.buf = chunk;
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}
