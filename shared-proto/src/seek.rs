//! Deliver's `SeekInfo`, resolved the same way by the orderer and the peer.
//!
//! | position            | as start                 | as stop                          |
//! |---------------------|--------------------------|----------------------------------|
//! | oldest              | block 0                  | block 0                          |
//! | newest (or absent)  | last block at request    | last block at request            |
//! | specified(n)        | block n                  | block n                          |
//! | follow              | invalid                  | never stop: stream new blocks    |

use crate::pb::orderer::seek_position::Type;
use crate::pb::orderer::SeekInfo;
use crate::pb::orderer::SeekPosition;
use crate::pb::orderer::SeekSpecified;

/// The first and last block numbers a request asks for, given the chain height at request
/// time; `None` when the request is contradictory (start after stop, follow as start).
pub fn resolve(seek: &SeekInfo, height: u64) -> Option<(u64, u64)> {
    let start = position(seek.start.as_ref(), height, false)?;
    let stop = position(seek.stop.as_ref(), height, true)?;
    (start <= stop).then_some((start, stop))
}

fn position(pos: Option<&SeekPosition>, height: u64, is_stop: bool) -> Option<u64> {
    let newest = height.saturating_sub(1);
    match pos.and_then(|p| p.r#type.as_ref()) {
        None | Some(Type::Newest(_)) => Some(newest),
        Some(Type::Oldest(_)) => Some(0),
        Some(Type::Specified(s)) => Some(s.number),
        Some(Type::Follow(_)) if is_stop => Some(u64::MAX),
        Some(Type::Follow(_)) => None,
    }
}

/// `SeekPosition::Specified(number)`.
pub fn specified(number: u64) -> SeekPosition {
    SeekPosition {
        r#type: Some(Type::Specified(SeekSpecified { number })),
    }
}

/// `SeekPosition::Follow`: as a stop, keep streaming new blocks.
pub fn follow() -> SeekPosition {
    SeekPosition {
        r#type: Some(Type::Follow(crate::pb::orderer::SeekFollow {})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::orderer::SeekNewest;
    use crate::pb::orderer::SeekOldest;

    fn seek(start: Option<Type>, stop: Option<Type>) -> SeekInfo {
        SeekInfo {
            start: start.map(|t| SeekPosition { r#type: Some(t) }),
            stop: stop.map(|t| SeekPosition { r#type: Some(t) }),
            behavior: 0,
        }
    }

    #[test]
    fn positions_resolve_against_height() {
        let oldest = || Some(Type::Oldest(SeekOldest {}));
        let newest = || Some(Type::Newest(SeekNewest {}));
        let n = |n| Some(Type::Specified(SeekSpecified { number: n }));
        let fol = || Some(Type::Follow(crate::pb::orderer::SeekFollow {}));
        assert_eq!(resolve(&seek(oldest(), newest()), 10), Some((0, 9)));
        assert_eq!(resolve(&seek(n(3), n(5)), 10), Some((3, 5)));
        assert_eq!(resolve(&seek(n(3), fol()), 10), Some((3, u64::MAX)));
        assert_eq!(resolve(&seek(None, None), 10), Some((9, 9)));
        assert_eq!(resolve(&seek(n(6), n(5)), 10), None);
        assert_eq!(resolve(&seek(fol(), fol()), 10), None);
        assert_eq!(resolve(&seek(n(20), n(30)), 10), Some((20, 30)));
    }
}
