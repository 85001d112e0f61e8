//! Pagination of the list answers (`ListResources`, `ListVariants`): a
//! page holds at most [`LIST_PAGE_SIZE_MAX`] names in name order, and
//! `next_page_token` is the last name of the page (empty after the last
//! page), so a page boundary is stable while entries are added or removed.

use std::collections::BTreeMap;
use std::ops::Bound;

use tonic::Status;

/// Entries one list answer carries at most (and by default): far below
/// the message limit for the largest entries.
pub const LIST_PAGE_SIZE_MAX: u32 = 1_000;
/// Longest page token: a name of the longest kind.
const PAGE_TOKEN_BYTES_MAX: usize = shadowstore_base::limits::VARIANT_NAME_BYTES_MAX;

/// The page of `map` after `token` with up to `page_size` entries (0: the
/// maximum; more is clamped to it), and the token of the next page.
pub fn page<'a, V>(
    map: &'a BTreeMap<String, V>,
    page_size: u32,
    token: &str,
) -> Result<(Vec<(&'a String, &'a V)>, String), Status> {
    if token.len() > PAGE_TOKEN_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "page_token of {} bytes; a token is a name of at most {PAGE_TOKEN_BYTES_MAX}",
            token.len()
        )));
    }
    let size = if page_size == 0 { LIST_PAGE_SIZE_MAX } else { page_size.min(LIST_PAGE_SIZE_MAX) } as usize;
    let start = if token.is_empty() { Bound::Unbounded } else { Bound::Excluded(token.to_string()) };
    let mut items: Vec<(&String, &V)> = map.range((start, Bound::Unbounded)).take(size + 1).collect();
    let next = if items.len() > size {
        items.truncate(size);
        items.last().map(|(k, _)| (*k).clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok((items, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_cover_every_entry_once_in_order() {
        let map: BTreeMap<String, u32> = (0..7).map(|i| (format!("r{i}"), i)).collect();
        let (mut token, mut seen) = (String::new(), Vec::new());
        loop {
            let (items, next) = page(&map, 3, &token).unwrap();
            assert!(items.len() <= 3);
            seen.extend(items.iter().map(|(_, v)| **v));
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        let (all, next) = page(&map, 0, "").unwrap();
        assert_eq!((all.len(), next.as_str()), (7, ""), "0 means the maximum");
        let (exact, next) = page(&map, 7, "").unwrap();
        assert_eq!((exact.len(), next.as_str()), (7, ""), "no empty last page");
        assert_eq!(page(&map, 1, &"x".repeat(10_000)).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
