//! Reorder buffer: blocks that arrived ahead of the ledger wait here, bounded by count and
//! bytes, until the blocks before them are committed.

use std::collections::BTreeMap;

use prost::Message as _;
use shared_proto::hash::Hash;
use shared_proto::pb::common::Block;

/// How a block reached this peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Push,
    Pull,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Push => "push",
            Source::Pull => "pull",
        }
    }
}

/// A block from a fellow peer, not yet verified.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub block: Block,
    pub source: Source,
    /// SHA-256 of the sender's TLS certificate (whom to blame if the block is refused).
    pub sender: Hash,
}

impl Incoming {
    pub fn number(&self) -> u64 {
        self.block.header.as_ref().map_or(0, |h| h.number)
    }
}

/// Why a block was not buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Already committed.
    Stale,
    /// Too far ahead of the ledger.
    TooFar,
    /// A block with this number already waits.
    Duplicate,
    /// The byte budget is spent.
    Full,
}

impl Rejected {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Stale => "stale_block",
            Rejected::TooFar => "block_too_far_ahead",
            Rejected::Duplicate => "duplicate_block",
            Rejected::Full => "reorder_buffer_full",
        }
    }
}

#[derive(Debug)]
pub struct ReorderBuffer {
    max_blocks: u64,
    max_bytes: usize,
    bytes: usize,
    blocks: BTreeMap<u64, (Incoming, usize)>,
}

impl ReorderBuffer {
    pub fn new(max_blocks: u64, max_bytes: usize) -> Self {
        ReorderBuffer {
            max_blocks,
            max_bytes,
            bytes: 0,
            blocks: BTreeMap::new(),
        }
    }

    /// Buffers `incoming` if it lies within `[height, height + max_blocks)`.
    pub fn insert(&mut self, incoming: Incoming, height: u64) -> Result<(), Rejected> {
        let number = incoming.number();
        if number < height {
            return Err(Rejected::Stale);
        }
        if number - height >= self.max_blocks {
            return Err(Rejected::TooFar);
        }
        if self.blocks.contains_key(&number) {
            return Err(Rejected::Duplicate);
        }
        let size = incoming.block.encoded_len();
        if self.bytes + size > self.max_bytes && !self.blocks.is_empty() {
            return Err(Rejected::Full);
        }
        self.bytes += size;
        self.blocks.insert(number, (incoming, size));
        Ok(())
    }

    /// Drops what is below `height`, then takes block `height` if it waits here.
    pub fn take_next(&mut self, height: u64) -> Option<Incoming> {
        let keep = self.blocks.split_off(&height);
        for (_, (_, size)) in std::mem::replace(&mut self.blocks, keep) {
            self.bytes -= size;
        }
        let (incoming, size) = self.blocks.remove(&height)?;
        self.bytes -= size;
        Some(incoming)
    }

    /// Drops every block `sender` sent (it was cut off); returns how many.
    pub fn remove_sender(&mut self, sender: &Hash) -> usize {
        let before = self.blocks.len();
        let mut freed = 0;
        self.blocks.retain(|_, (incoming, size)| {
            let keep = incoming.sender != *sender;
            if !keep {
                freed += *size;
            }
            keep
        });
        self.bytes -= freed;
        before - self.blocks.len()
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use shared_proto::pb::common::BlockData;
    use shared_proto::pb::common::BlockHeader;

    fn incoming(number: u64, payload: usize) -> Incoming {
        Incoming {
            block: Block {
                header: Some(BlockHeader {
                    number,
                    ..Default::default()
                }),
                data: Some(BlockData {
                    data: vec![vec![0; payload]],
                }),
                metadata: None,
            },
            source: Source::Push,
            sender: [0; 32],
        }
    }

    #[test]
    fn out_of_order_blocks_come_out_in_order() {
        let mut b = ReorderBuffer::new(10, 1 << 20);
        b.insert(incoming(7, 10), 5).unwrap();
        b.insert(incoming(6, 10), 5).unwrap();
        assert!(b.take_next(5).is_none());
        b.insert(incoming(5, 10), 5).unwrap();
        let order: Vec<u64> = (5..8).map(|h| b.take_next(h).unwrap().number()).collect();
        assert_eq!(order, vec![5, 6, 7]);
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
    }

    #[test]
    fn bounds_refuse_stale_far_duplicate_and_oversize() {
        let mut b = ReorderBuffer::new(4, 100);
        assert_eq!(b.insert(incoming(4, 10), 5), Err(Rejected::Stale));
        assert_eq!(b.insert(incoming(9, 10), 5), Err(Rejected::TooFar));
        b.insert(incoming(6, 10), 5).unwrap();
        assert_eq!(b.insert(incoming(6, 10), 5), Err(Rejected::Duplicate));
        assert_eq!(b.insert(incoming(7, 200), 5), Err(Rejected::Full));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn blocks_of_a_cut_off_sender_are_removed() {
        let mut b = ReorderBuffer::new(10, 1 << 20);
        let mut bad = incoming(6, 10);
        bad.sender = [1; 32];
        b.insert(bad, 5).unwrap();
        b.insert(incoming(7, 10), 5).unwrap();
        assert_eq!(b.remove_sender(&[1; 32]), 1);
        assert_eq!(b.len(), 1);
        assert_eq!(b.bytes(), incoming(7, 10).block.encoded_len());
        assert!(b.take_next(6).is_none());
    }

    #[test]
    fn blocks_committed_by_another_path_are_dropped() {
        let mut b = ReorderBuffer::new(10, 1 << 20);
        b.insert(incoming(6, 10), 5).unwrap();
        b.insert(incoming(8, 10), 5).unwrap();
        assert!(b.take_next(7).is_none());
        assert_eq!(b.len(), 1);
        assert_eq!(b.take_next(8).unwrap().number(), 8);
        assert_eq!(b.bytes(), 0);
    }
}
