//! A member's bytes as slices of the buffers they arrived in.
//!
//! A member that lies inside one part is one slice; one that spans parts is
//! a few. Nothing is copied until collation writes the batch.

use bytes::Bytes;

/// Bytes held as one or more zero-copy slices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Blob {
    pieces: Vec<Bytes>,
    len: u64,
}

impl Blob {
    pub fn new() -> Blob {
        Blob::default()
    }

    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len() as u64;
            self.pieces.push(piece);
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// Copies the bytes into `out`, which must be exactly `len()` long.
    pub fn copy_to(&self, out: &mut [u8]) {
        debug_assert_eq!(out.len() as u64, self.len);
        let mut at = 0;
        for piece in &self.pieces {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
    }

    /// The bytes in one contiguous buffer (a copy unless there is one piece).
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            _ => {
                let mut out = vec![0u8; self.len as usize];
                self.copy_to(&mut out);
                Bytes::from(out)
            }
        }
    }

    /// A compact copy that pins no part buffers.
    pub fn compacted(&self) -> Blob {
        let mut b = Blob::new();
        match self.pieces.as_slice() {
            [one] => b.push(Bytes::copy_from_slice(one)),
            // More than one piece: `to_bytes` already copies into a new buffer.
            _ => b.push(self.to_bytes()),
        }
        b
    }
}
