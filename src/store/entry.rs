//! One key-value entry in one heap block: `[expires_at_ms u64][value_len u32][key_len u16][pad 2]
//! [accessed_10ms u32][key][value]`. A thin 8-byte pointer to it is what both indices hold, so a key is stored once
//! and an entry costs one allocation. This is the only unsafe code in the store; the invariant
//! that makes it sound is kept by `Store`: every `EntryPtr` in an index points to a live block,
//! and a block is freed only after it has left every index.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::ptr::NonNull;

pub(crate) const HEADER_BYTES: usize = 20;
/// `expires_at_ms` of an entry that never expires.
pub(crate) const NO_EXPIRY: u64 = 0;

#[derive(Clone, Copy)]
pub(crate) struct EntryPtr(NonNull<u8>);

impl EntryPtr {
    fn layout(key_len: usize, value_len: usize) -> Layout {
        Layout::from_size_align(HEADER_BYTES + key_len + value_len, 8).expect("entry layout")
    }

    /// Allocate a block holding `key` and `value`. The key length fits u16 (KEY_BYTES_MAX) and
    /// the value length u32 (the payload limit); callers check both before calling.
    pub fn new(key: &[u8], value: &[u8], expires_at_ms: u64, now_ms: u64) -> EntryPtr {
        assert!(key.len() <= u16::MAX as usize && value.len() <= u32::MAX as usize);
        let layout = Self::layout(key.len(), value.len());
        // SAFETY: the layout has a non-zero size (the header), and every byte written below is
        // inside it.
        unsafe {
            let p = alloc(layout);
            let Some(p) = NonNull::new(p) else { handle_alloc_error(layout) };
            let base = p.as_ptr();
            (base as *mut u64).write(expires_at_ms);
            (base.add(8) as *mut u32).write(value.len() as u32);
            (base.add(12) as *mut u16).write(key.len() as u16);
            (base.add(14) as *mut u16).write(0);
            (base.add(16) as *mut u32).write(clock_10ms(now_ms));
            std::ptr::copy_nonoverlapping(key.as_ptr(), base.add(HEADER_BYTES), key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), base.add(HEADER_BYTES + key.len()), value.len());
            EntryPtr(p)
        }
    }

    /// Free the block.
    ///
    /// # Safety
    /// No index may still hold this pointer, and it is not used again.
    pub unsafe fn free(self) {
        // SAFETY: allocated by `new` with this same layout (its lengths are in the header).
        let layout = Self::layout(self.key_len(), self.value_len());
        dealloc(self.0.as_ptr(), layout);
    }

    #[inline]
    fn key_len(&self) -> usize {
        // SAFETY: live block (module invariant).
        unsafe { (self.0.as_ptr().add(12) as *const u16).read() as usize }
    }

    #[inline]
    fn value_len(&self) -> usize {
        // SAFETY: live block (module invariant); the header holds the length at offset 8.
        unsafe { (self.0.as_ptr().add(8) as *const u32).read() as usize }
    }

    #[inline]
    pub fn expires_at_ms(&self) -> u64 {
        // SAFETY: live block; its first 8 bytes are the expiry.
        unsafe { (self.0.as_ptr() as *const u64).read() }
    }

    #[inline]
    pub fn set_expires_at_ms(&self, t: u64) {
        // SAFETY: live block, owned by the store that calls this (no other reference writes it).
        unsafe { (self.0.as_ptr() as *mut u64).write(t) }
    }

    /// When the entry was last read or written, in the store's wrapping 10 ms clock.
    #[inline]
    pub fn accessed_10ms(&self) -> u32 {
        // SAFETY: live block; bytes 16..20 of the header are the access clock.
        unsafe { (self.0.as_ptr().add(16) as *const u32).read() }
    }

    /// Mark the entry used now (what approximate LRU eviction ranks by).
    #[inline]
    pub fn touch(&self, now_ms: u64) {
        // SAFETY: live block, owned by the store that calls this; the header's access clock is
        // never borrowed (views borrow only the key and value bytes).
        unsafe { (self.0.as_ptr().add(16) as *mut u32).write(clock_10ms(now_ms)) }
    }

    /// The key bytes. The lifetime is tied to `&self`, but the bytes live as long as the block.
    #[inline]
    pub fn key(&self) -> &[u8] {
        // SAFETY: live block; the key's bytes follow the header, `key_len` of them.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(HEADER_BYTES), self.key_len()) }
    }

    #[inline]
    pub fn value(&self) -> &[u8] {
        // SAFETY: live block; the value's bytes follow the key, `value_len` of them.
        unsafe {
            std::slice::from_raw_parts(self.0.as_ptr().add(HEADER_BYTES + self.key_len()), self.value_len())
        }
    }

    /// Overwrite the value in place; only for a value of exactly the current length.
    pub fn overwrite_value(&self, value: &[u8]) {
        assert_eq!(value.len(), self.value_len());
        // SAFETY: live block; exactly the value's bytes are written (checked just above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                value.as_ptr(),
                self.0.as_ptr().add(HEADER_BYTES + self.key_len()),
                value.len(),
            )
        }
    }

    /// Bytes of the block.
    pub fn block_bytes(&self) -> usize {
        HEADER_BYTES + self.key_len() + self.value_len()
    }

    /// Bytes the allocator holds for the block (`heap_bytes` of its size).
    pub fn heap_bytes(&self) -> usize {
        heap_bytes(self.block_bytes())
    }

    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }

    /// # Safety
    /// `addr` must come from `addr()` of a live entry.
    pub unsafe fn from_addr(addr: usize) -> EntryPtr {
        // SAFETY: the caller's guarantee: a live entry's address, never null.
        EntryPtr(NonNull::new_unchecked(addr as *mut u8))
    }
}

/// The access clock: 10 ms ticks, wrapping after 497 days. Fine enough to rank keys written in
/// the same second (a flood turns a cache over in seconds), wide enough that a key idle for
/// months still looks old.
#[inline]
pub(crate) fn clock_10ms(now_ms: u64) -> u32 {
    (now_ms / 10) as u32
}

/// What glibc's malloc holds for a request of `n` bytes: the chunk, with its 8-byte size field,
/// rounded up to 16 bytes and at least 32; requests of 128 KiB and more are mapped pages of
/// their own (the default mmap threshold; it may rise, which changes these by under a page).
pub fn heap_bytes(n: usize) -> usize {
    const MMAP_THRESHOLD_BYTES: usize = 128 << 10;
    if n >= MMAP_THRESHOLD_BYTES {
        (n + 16).next_multiple_of(4096)
    } else {
        (n + 8).next_multiple_of(16).max(32)
    }
}

// Identity, order and hash are those of the key, so that the ordered index can be searched
// with a `&[u8]` (Borrow) and agrees with memcmp order.
impl PartialEq for EntryPtr {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for EntryPtr {}
impl PartialOrd for EntryPtr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EntryPtr {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}
impl Hash for EntryPtr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}
impl Borrow<[u8]> for EntryPtr {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}
