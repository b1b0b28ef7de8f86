//! The blocking end of a download: receives pieces of one blob (possibly out of order when
//! chunks run in parallel), appends them to the store's [`Partial`] strictly in order — so the
//! hash is computed while streaming and the temp file is always a resumable prefix — and frees
//! each chunk's memory budget as soon as it is written.

use std::collections::BTreeMap;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::buffers::Buffer;
use crate::store::{Partial, StoreError};

/// A message to the sink.
pub(super) enum Msg {
    /// Bytes at `offset` of the blob, in a pooled buffer that returns to the pool (freeing
    /// its share of the memory budget) once written.
    Data { offset: u64, data: Buffer },
    /// Start over from byte 0 (the server ignored a `Range` request).
    Reset,
}

/// A running sink.
pub(super) struct BlobWriter {
    /// Where the network side sends pieces.
    pub tx: mpsc::Sender<Msg>,
    handle: JoinHandle<Result<Partial, StoreError>>,
}

impl BlobWriter {
    /// Starts the sink on a blocking thread.
    pub fn spawn(partial: Partial) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let handle = tokio::task::spawn_blocking(move || run(partial, rx));
        BlobWriter { tx, handle }
    }

    /// Waits until everything sent was written; returns the partial (or the write error).
    pub async fn finish(self) -> Result<Partial, StoreError> {
        drop(self.tx);
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(StoreError::Io {
                what: "writing (the writer thread failed)",
                path: Default::default(),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

fn run(mut partial: Partial, mut rx: mpsc::Receiver<Msg>) -> Result<Partial, StoreError> {
    let mut pending: BTreeMap<u64, Buffer> = BTreeMap::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Reset => {
                pending.clear();
                partial.reset()?;
            }
            Msg::Data { offset, data } => {
                pending.insert(offset, data);
                // Write every piece that continues the prefix; skip bytes already written (a
                // retried request may overlap what arrived before the connection dropped).
                while let Some(entry) = pending.first_entry() {
                    let start = *entry.key();
                    let len = partial.len();
                    if start > len {
                        break;
                    }
                    let data = entry.remove();
                    let skip = (len - start) as usize;
                    if skip < data.len() {
                        partial.append(&data.as_slice()[skip..])?;
                    }
                }
            }
        }
    }
    Ok(partial)
}
