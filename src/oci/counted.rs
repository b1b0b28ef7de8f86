//! Byte counting for request bodies that are streams: the HTTP client needs a `'static` body,
//! while progress is reported through a borrowed callback, so the stream sends each chunk's
//! length over a channel and [`Counter::drive`] hands the lengths to the callback while the
//! request runs. Used for uploads from files and for blobs streamed from another registry.

use std::future::Future;

use futures::{Stream, StreamExt};

/// The receiving side of a [`counted`] stream.
pub struct Counter {
    rx: tokio::sync::mpsc::UnboundedReceiver<u64>,
    total: u64,
}

/// `stream`, reporting the length of every chunk it yields to the returned [`Counter`].
pub fn counted<S, E>(stream: S) -> (impl Stream<Item = Result<bytes::Bytes, E>>, Counter)
where
    S: Stream<Item = Result<bytes::Bytes, E>>,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = stream.inspect(move |chunk| {
        if let Ok(b) = chunk {
            // The counter may be gone when the request is dropped; nothing to report then.
            let _ = tx.send(b.len() as u64);
        }
    });
    (stream, Counter { rx, total: 0 })
}

impl Counter {
    /// Runs `fut` (the request sending the stream), calling `progress` with each chunk's length
    /// as the stream hands it on.
    pub async fn drive<T>(
        &mut self,
        fut: impl Future<Output = T>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> T {
        tokio::pin!(fut);
        let out = loop {
            tokio::select! {
                out = &mut fut => break out,
                Some(n) = self.rx.recv() => {
                    self.total += n;
                    progress(n);
                }
            }
        };
        while let Ok(n) = self.rx.try_recv() {
            self.total += n;
            progress(n);
        }
        out
    }

    /// Bytes counted so far.
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_chunk_is_reported_once() {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Ok(bytes::Bytes::from_static(b"defgh")),
        ];
        let (stream, mut counter) = counted(futures::stream::iter(chunks));
        let seen = std::sync::Mutex::new(Vec::new());
        let collected = counter
            .drive(stream.collect::<Vec<_>>(), &|n| {
                seen.lock().unwrap().push(n)
            })
            .await;
        assert_eq!(collected.len(), 2);
        assert_eq!(*seen.lock().unwrap(), vec![3, 5]);
        assert_eq!(counter.total(), 8);
    }
}
