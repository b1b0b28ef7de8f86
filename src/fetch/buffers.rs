//! A pool of fixed-size download buffers under one memory budget. Bytes are copied once from
//! the network into a pooled buffer, hashed and written from there, and the buffer is reused:
//! peak memory stays at the budget whatever the file sizes, and no fresh pages are faulted in
//! for every chunk.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The pool.
pub(super) struct Buffers {
    size: usize,
    free: Mutex<Vec<Vec<u8>>>,
    budget: Arc<Semaphore>,
}

/// A buffer taken from the pool; it goes back when dropped.
pub(super) struct Buffer {
    data: Vec<u8>,
    pool: Arc<Buffers>,
    _permit: OwnedSemaphorePermit,
}

impl Buffers {
    /// A pool of buffers of `size` bytes, at most `budget` bytes of them at once (at least one).
    pub fn new(size: usize, budget: u64) -> Arc<Self> {
        let count = (budget / size.max(1) as u64).max(1) as usize;
        Arc::new(Buffers {
            size,
            free: Mutex::new(Vec::new()),
            budget: Arc::new(Semaphore::new(count)),
        })
    }

    /// Capacity of each buffer.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Waits for a free buffer.
    pub async fn take(self: &Arc<Self>) -> Option<Buffer> {
        let permit = self.budget.clone().acquire_owned().await.ok()?;
        let data = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .unwrap_or_else(|| Vec::with_capacity(self.size));
        Some(Buffer {
            data,
            pool: self.clone(),
            _permit: permit,
        })
    }
}

impl Buffer {
    /// The bytes held.
    pub fn as_slice(&self) -> &[u8] {
        &self.data
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Room left before the buffer is full.
    pub fn room(&self) -> usize {
        self.pool.size.saturating_sub(self.data.len())
    }

    /// Appends bytes (the caller keeps within [`Buffer::room`]).
    pub fn extend(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut data = std::mem::take(&mut self.data);
        data.clear();
        if let Ok(mut free) = self.pool.free.lock() {
            free.push(data);
        }
    }
}
