//! The `modelbake` binary: everything lives in the library (`modelbake::cli`).

fn main() -> std::process::ExitCode {
    bounded_malloc();
    modelbake::cli::main()
}

/// glibc serves large allocations from `mmap` only until the first one is freed; then it
/// raises the threshold (up to 32 MiB) and later ones come from per-thread heaps that keep
/// their pages. Downloads free many short-lived buffers of a few hundred KiB to a few MiB on
/// several threads, and the retained pages added about 11 MiB to the peak of a 1 GiB fetch.
/// A fixed threshold keeps every allocation of 256 KiB or more in its own mapping, returned
/// when freed, so memory stays at the fetch's budget.
fn bounded_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called once, before any thread
    // starts, with a valid parameter and value.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
