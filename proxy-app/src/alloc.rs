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

/// Has mimalloc give back to the system the memory freed on this thread that it still
/// holds (`mi_collect(true)`). Left to itself, mimalloc purges freed memory 10 ms after the
/// free, but only when the freeing thread frees or allocates again, so a worker gone quiet
/// after a burst of connections keeps their memory: 30 s after 10,000 idle connections
/// closed, RSS stayed at 4-6 times its idle value. Purging at once on every free instead
/// (`MIMALLOC_PURGE_DELAY=0`) returns it, but a busy worker then pays a page fault and a
/// half for every proxied request, re-touching the pages of the buffers it just freed
/// (about 5% of its CPU time); so the proxy calls this a second after connections open or
/// close ([`proxy_core::EdgeServices::trim_memory_with`]).
pub fn give_back_freed_memory() {
    // SAFETY: a plain call into mimalloc, which may be made from any thread at any time.
    unsafe { mi::mi_collect(true) }
}

/// mimalloc 2's `mi_option_arena_eager_commit` (`mi_option_e` in `mimalloc.h`), which
/// `libmimalloc-sys` does not name.
#[cfg(target_os = "linux")]
const ARENA_EAGER_COMMIT: mi::mi_option_t = 4;

/// Has mimalloc commit the memory of its arenas as it is used, not all at once, unless
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment says otherwise.
///
/// On Linux mimalloc's default (`2`: at once where the OS overcommits) maps the first arena,
/// 1 GiB, read-write as it reserves it, and peak RSS was about 1.6x-2x as high that way at
/// the same CPU per request (the README's memory section has the load harness's numbers).
///
/// The first allocation reserves that arena, and Rust's runtime allocates before `main`
/// (the main thread's stack-overflow guard), so this runs as an ELF constructor
/// (`.init_array`), before the runtime starts. It only changes the option's default, which
/// works before and after mimalloc's own constructor has read the environment, and leaves a
/// value from the environment as it is.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static COMMIT_ARENAS_LAZILY: extern "C" fn() = commit_arenas_lazily;

#[cfg(target_os = "linux")]
extern "C" fn commit_arenas_lazily() {
    // SAFETY: a plain call into mimalloc, which allows it at any time, even before its own
    // initialisation; it sets a number in mimalloc's option table.
    unsafe { mi::mi_option_set_default(ARENA_EAGER_COMMIT, 0) }
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

    /// This process's resident memory, in bytes.
    fn rss() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    #[test]
    fn freed_memory_goes_back_to_the_system_when_asked() {
        const BLOCKS: usize = 16 * 1024;
        const SIZE: usize = 4096;
        let before = rss();
        let blocks: Vec<*mut u8> = (0..BLOCKS)
            .map(|_| unsafe {
                let p = mi::mi_malloc(SIZE).cast::<u8>();
                assert!(!p.is_null());
                p.write_bytes(0x5a, SIZE);
                p
            })
            .collect();
        let held = rss();
        assert!(held >= before + BLOCKS * SIZE / 2, "{before} -> {held}");
        for p in blocks {
            unsafe { mi::mi_free(p.cast()) }
        }
        give_back_freed_memory();
        let after = rss();
        assert!(
            after < before + (8 << 20),
            "RSS {before} before 64 MiB of blocks, {held} with them, {after} after"
        );
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
