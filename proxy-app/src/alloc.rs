//! The global allocator: mimalloc 2, asked for plain blocks whenever the alignment wanted
//! is one every mimalloc block already has.
//!
//! The `mimalloc` crate passes every allocation to `mi_malloc_aligned`, and since 0.1.49
//! builds mimalloc 3 by default. Measured with callgrind on a 1 KiB cache hit:
//! - mimalloc 3's `mi_malloc_aligned` finds a block quickly only up to 1 KiB; larger ones
//!   (request futures, header maps, I/O buffers) take its over-allocating path, about 95
//!   instructions per allocation, and a hit makes about 50 allocations.
//! - mimalloc 3 also freed and re-created a page on every hit, for the 4 KiB buffer each
//!   response header is written into; mimalloc 2 keeps it.
//!
//! A hit costs 44.9k instructions this way, against 48.7k through the `mimalloc` crate with
//! mimalloc 3 and 46.5k with mimalloc 2; a proxied request 93.0k, against 96.2k and 96.5k.
//! `mi_malloc` serves small alignments from its free lists, as Rust's own `System` allocator
//! does with `malloc`.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc 2's `mi_option_purge_delay` (`mimalloc.h`; the sys crate names no constant for
/// it).
const MI_OPTION_PURGE_DELAY: mi::mi_option_t = 15;

/// Has mimalloc give memory it no longer uses back to the system when it is freed, unless
/// `MIMALLOC_PURGE_DELAY` says otherwise. Its default delays that by 10 ms, but the delayed
/// purge only runs when the thread that freed the memory allocates again, so a worker that
/// goes quiet after a burst of connections keeps their memory: 30 s after 10,000 idle
/// connections closed, RSS stayed at 4-6 times its idle value; with this, it returns to it.
pub fn return_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options, which it reads atomically.
        unsafe { mi::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

/// The alignment of every mimalloc block: sizes are whole machine words and pages start
/// on 16 bytes.
const BLOCK_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc, through its plain calls when `BLOCK_ALIGN` suffices.
pub struct Allocator;

// SAFETY: every method forwards to mimalloc's matching call, which returns null on failure,
// memory of at least the requested size, aligned to at least `BLOCK_ALIGN` from the plain
// calls (only used when that is enough) and to the requested alignment from the `_aligned`
// ones; `dealloc` and `realloc` get pointers this allocator returned, which `mi_free` and
// `mi_realloc`/`mi_realloc_aligned` accept whichever call allocated them.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = if layout.align() <= BLOCK_ALIGN {
            unsafe { mi::mi_malloc(layout.size()) }
        } else {
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()) }
        };
        block.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = if layout.align() <= BLOCK_ALIGN {
            unsafe { mi::mi_zalloc(layout.size()) }
        } else {
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()) }
        };
        block.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let block = if layout.align() <= BLOCK_ALIGN {
            unsafe { mi::mi_realloc(ptr.cast::<c_void>(), new_size) }
        } else {
            unsafe { mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()) }
        };
        block.cast()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_reads_from_its_environment_variable() {
        // mimalloc read MIMALLOC_PURGE_DELAY (unset here: its default, 10 ms) at start-up
        // into the option numbered `MI_OPTION_PURGE_DELAY`.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { mi::mi_option_get(MI_OPTION_PURGE_DELAY) }, 10);
        }
    }

    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_when_resized() {
        let a = Allocator;
        for align in [1, 2, 8, 16, 64, 4096] {
            for size in [1, 7, 8, 24, 1000, 1025, 5000, 70_000, 3 << 20] {
                let Ok(layout) = Layout::from_size_align(size.max(align), align) else {
                    continue;
                };
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xa5, layout.size());
                    let grown = a.realloc(p, layout, layout.size() * 2 + 1);
                    assert_eq!(grown as usize % align, 0);
                    assert!((0..layout.size()).all(|i| *grown.add(i) == 0xa5));
                    let grown_layout =
                        Layout::from_size_align(layout.size() * 2 + 1, align).unwrap();
                    a.dealloc(grown, grown_layout);
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..layout.size()).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
