//! A registry blob as a blocking [`Read`]: streamed ([`Registry::blob_body`] resumes a cut
//! body), checked against its descriptor ([`VerifyingStream`]) and handed chunk by chunk to a
//! reader running on a blocking thread, so that tar and decompression code written for files
//! reads a registry blob without it ever being stored; memory stays at a few chunks.
//!
//! [`Registry::blob_body`]: super::registry::Registry::blob_body

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures::StreamExt;

use super::OciError;
use super::model::Descriptor;
use super::source::{RegistrySource, VerifyingStream};

/// A blocking reader over the chunks an async task sends.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// A reader of what `rx` receives; it ends when every sender is dropped.
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(b)) => self.current = b,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// How much of a blob [`read_blob`] downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Every byte, what the reader leaves included, so the digest and size are checked: a
    /// mismatch fails the read.
    Whole,
    /// What the reader reads; the download stops when it returns (nothing is checked).
    Prefix,
}

/// Runs `consume` on a blocking thread with blob `desc` of `src` as its reader; `what` names
/// the blob in errors. With [`Extent::Whole`] the bytes `consume` leaves are read too and the
/// blob is checked against `desc`.
pub async fn read_blob<T: Send + 'static>(
    src: &RegistrySource,
    desc: &Descriptor,
    what: String,
    extent: Extent,
    consume: impl FnOnce(&mut ChannelReader) -> io::Result<T> + Send + 'static,
) -> Result<T, OciError> {
    let raw = src
        .registry
        .blob_body(&src.image.repository, &desc.digest, desc.size)
        .await?;
    let mut body = VerifyingStream::new(Box::pin(raw), desc.clone(), what.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let worker = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader::new(rx);
        let out = consume(&mut reader)?;
        if extent == Extent::Whole {
            io::copy(&mut reader, &mut io::sink())?;
        }
        Ok::<T, io::Error>(out)
    });
    // The reader stops taking chunks when it is done (or failed): the download stops with it.
    while let Some(chunk) = body.next().await {
        let failed = chunk.is_err();
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    // The digest check names the blob itself: say it once.
    let read_error = |source: io::Error| {
        let text = source.to_string();
        let source = match text.strip_prefix(&format!("{what}: ")) {
            Some(rest) => io::Error::new(source.kind(), rest.to_owned()),
            None => source,
        };
        OciError::Read {
            what: what.clone(),
            source,
        }
    };
    worker
        .await
        .map_err(|e| read_error(io::Error::other(format!("the reader stopped: {e}"))))?
        .map_err(read_error)
}
