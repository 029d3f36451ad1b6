//! Where a stored body's bytes live.
//!
//! A large body gets anonymous pages of its own instead of a heap block: the heap rounds a
//! block up to its size class (a 100 KiB body takes mimalloc's 112 KiB class) and keeps
//! freed blocks for reuse, while pages cost the body's length rounded up to 4 KiB and go
//! back to the OS as soon as the entry is evicted or purged and its last reader is done.

use bytes::Bytes;
use memmap2::{Mmap, MmapMut};

/// Bodies at least this large go to pages of their own: rounding up to a page adds at most a
/// sixteenth to them, and a mapping per entry stays far below the kernel's limit.
pub(super) const PAGED_BODY_MIN: usize = 64 * 1024;

/// An immutable copy of `data` to keep in the cache: in pages of its own when it is large,
/// on the heap when it is small or the OS refuses a mapping.
pub(super) fn stored_body(data: &[u8]) -> Bytes {
    if data.len() >= PAGED_BODY_MIN {
        if let Ok(pages) = paged_copy(data) {
            return Bytes::from_owner(pages);
        }
    }
    Bytes::copy_from_slice(data)
}

/// A body read back from disk, kept as [`stored_body`] would keep it; a small one is not
/// copied.
pub(super) fn restored_body(body: Bytes) -> Bytes {
    if body.len() < PAGED_BODY_MIN {
        return body;
    }
    paged_copy(&body).map_or(body, Bytes::from_owner)
}

/// `data` copied into a fresh read-only anonymous mapping, unmapped when dropped.
///
/// Each entry adds at most one mapping, and fewer in practice: the kernel places new
/// mappings next to earlier ones and merges neighbours with the same protection, so a cache
/// holds at most `max_size` / 64 KiB of them (3,200 for 200 MiB) against vm.max_map_count's
/// default of 65,530. Past that limit `mmap` fails and the body goes on the heap.
fn paged_copy(data: &[u8]) -> std::io::Result<Mmap> {
    let mut pages = MmapMut::map_anon(data.len())?;
    pages.copy_from_slice(data);
    pages.make_read_only()
}

/// Whether `bytes` lives in read-only pages (a paged body) rather than on the heap.
#[cfg(all(test, target_os = "linux"))]
pub(super) fn in_read_only_pages(bytes: &[u8]) -> bool {
    let at = bytes.as_ptr() as usize;
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            return false;
        };
        let Some((start, end)) = range.split_once('-') else {
            return false;
        };
        let parse = |hex: &str| usize::from_str_radix(hex, 16).unwrap_or(0);
        (parse(start)..parse(end)).contains(&at) && perms.starts_with("r--")
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_get_read_only_pages_and_small_ones_the_heap() {
        let large: Vec<u8> = (0..PAGED_BODY_MIN + 4321)
            .map(|i| (i % 251) as u8)
            .collect();
        let paged = stored_body(&large);
        assert_eq!(&paged[..], &large[..]);
        assert!(in_read_only_pages(&paged));
        assert!(
            in_read_only_pages(&paged.slice(4096..)),
            "slices share the pages"
        );

        let small = vec![9u8; PAGED_BODY_MIN - 1];
        let heap = stored_body(&small);
        assert_eq!(&heap[..], &small[..]);
        assert!(!in_read_only_pages(&heap));
        assert!(stored_body(b"").is_empty());

        let restored = restored_body(Bytes::from(large.clone()));
        assert_eq!(&restored[..], &large[..]);
        assert!(in_read_only_pages(&restored));
        let kept = Bytes::from(small);
        assert_eq!(
            restored_body(kept.clone()).as_ptr(),
            kept.as_ptr(),
            "not copied"
        );
    }
}
