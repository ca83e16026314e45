//! Handing freed heap memory back to the operating system.
//!
//! glibc keeps freed chunks in its arenas and only returns the top of a
//! heap; after a dissemination round (a thousand-host table encoded, every
//! stream's send queue drained) or a burst of disconnects the freed pages in
//! the middle of the heaps stay resident. `malloc_trim(0)` releases them
//! (`MADV_DONTNEED` on free pages of every arena).

/// Releases free heap pages to the OS (glibc only; a no-op elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks and only touches
    // memory that is free; it has no preconditions on the caller.
    unsafe {
        libc::malloc_trim(0);
    }
}
