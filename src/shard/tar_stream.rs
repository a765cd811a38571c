//! A push parser for tar streams that hands out members as slices.
//!
//! Chunks of any size go in (parts of a plain `.tar`, or decompressed
//! chunks of a `.tar.zst`); complete members come out, their data as
//! [`Blob`]s that share the input buffers. Only a header that straddles two
//! chunks is copied (512 bytes).
//!
//! ```text
//!  chunk 1 ───────────────┐ chunk 2 ─────────────────────────
//!  [hdr][data a.jpg ......][... a.jpg][pad][hdr][a.cls][pad]
//!        └──── Blob [slice of chunk 1, slice of chunk 2] ──┘
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::ShardError;
use super::blob::Blob;
use super::tar_header::{BLOCK, EntryKind, HeaderError, is_zero_block, parse_header, pax_records};

/// Largest GNU long name or PAX header we accept (a name, not data).
const MAX_META_BYTES: u64 = 1 << 20;

/// One regular file of the archive.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// Offset of the member's header in the (uncompressed) tar stream.
    pub offset: u64,
    /// Where the member's entry begins: its GNU long-name or PAX header
    /// when it has one, else `offset`. A reader that starts here parses it
    /// as it would from the top (`index`: seeking to a sample).
    pub start: u64,
    pub data: Blob,
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header; `have` bytes are in `header`.
    Header { have: usize },
    /// Collecting a member's data.
    Data { name: String, offset: u64, start: u64, remaining: u64, blob: Blob, pad: u64 },
    /// Collecting a GNU long name or PAX record payload.
    Meta { kind: EntryKind, remaining: u64, buf: Vec<u8>, pad: u64 },
    /// Skipping padding or an entry we do not use.
    Skip { remaining: u64 },
    /// After the end-of-archive marker: the rest is ignored, as tar does.
    End,
}

/// The tar parser for one shard.
#[derive(Debug)]
pub struct TarStream {
    shard: Arc<str>,
    max_member_bytes: u64,
    state: State,
    header: [u8; BLOCK],
    /// Bytes of the stream consumed so far.
    offset: u64,
    /// Name and size from a preceding GNU `L` or PAX `x` entry.
    next_name: Option<String>,
    next_size: Option<u64>,
    /// Offset of the first long-name/PAX header of the entry being read.
    entry_start: Option<u64>,
    ready: VecDeque<Member>,
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl TarStream {
    /// A parser for `shard` (named in errors) that rejects members larger
    /// than `max_member_bytes`.
    pub fn new(shard: Arc<str>, max_member_bytes: u64) -> TarStream {
        TarStream {
            shard,
            max_member_bytes,
            state: State::Header { have: 0 },
            header: [0; BLOCK],
            offset: 0,
            next_name: None,
            next_size: None,
            entry_start: None,
            ready: VecDeque::new(),
        }
    }

    /// A parser for a stream entered at `offset` of the archive (an entry's
    /// first header, from the index): offsets and errors count from the
    /// archive's start.
    pub fn starting_at(mut self, offset: u64) -> TarStream {
        self.offset = offset;
        self
    }

    /// Whether the bytes so far end between two entries (or at the end
    /// marker): where a read of a range of samples may stop.
    pub fn at_entry_boundary(&self) -> bool {
        matches!(self.state, State::Header { have: 0 } | State::End)
    }

    /// The next complete member, if any.
    pub fn next_member(&mut self) -> Option<Member> {
        self.ready.pop_front()
    }

    /// Whether the end-of-archive marker was seen.
    pub fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// Feeds the next chunk of the stream.
    pub fn push(&mut self, mut chunk: Bytes) -> Result<(), ShardError> {
        while !chunk.is_empty() {
            match &mut self.state {
                State::End => {
                    self.offset += chunk.len() as u64;
                    return Ok(());
                }
                State::Header { have } => {
                    let take = (BLOCK - *have).min(chunk.len());
                    self.header[*have..*have + take].copy_from_slice(&chunk[..take]);
                    *have += take;
                    let complete = *have == BLOCK;
                    let _ = chunk.split_to(take);
                    if complete {
                        let at = self.offset;
                        self.offset += BLOCK as u64;
                        self.on_header(at)?;
                    }
                }
                State::Data { remaining, blob, .. } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    blob.push(chunk.split_to(take));
                    *remaining -= take as u64;
                    self.offset += take as u64;
                    if *remaining == 0 {
                        let State::Data { name, offset, start, blob, pad, .. } =
                            std::mem::replace(&mut self.state, State::Skip { remaining: 0 })
                        else {
                            unreachable!("matched Data above")
                        };
                        self.ready.push_back(Member { name, offset, start, data: blob });
                        self.state = State::Skip { remaining: pad };
                    }
                }
                State::Meta { remaining, buf, .. } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    buf.extend_from_slice(&chunk.split_to(take));
                    *remaining -= take as u64;
                    self.offset += take as u64;
                    if *remaining == 0 {
                        let State::Meta { kind, buf, pad, .. } =
                            std::mem::replace(&mut self.state, State::Skip { remaining: 0 })
                        else {
                            unreachable!("matched Meta above")
                        };
                        self.on_meta(kind, &buf);
                        self.state = State::Skip { remaining: pad };
                    }
                }
                State::Skip { remaining } => {
                    let take = (*remaining).min(chunk.len() as u64) as usize;
                    let _ = chunk.split_to(take);
                    *remaining -= take as u64;
                    self.offset += take as u64;
                    if *remaining == 0 {
                        self.state = State::Header { have: 0 };
                    }
                }
            }
        }
        // Skipping zero bytes (no padding) ends at a header boundary too.
        if matches!(self.state, State::Skip { remaining: 0 }) {
            self.state = State::Header { have: 0 };
        }
        Ok(())
    }

    fn on_header(&mut self, at: u64) -> Result<(), ShardError> {
        if is_zero_block(&self.header) {
            self.state = State::End;
            return Ok(());
        }
        let header = parse_header(&self.header).map_err(|e| self.header_error(at, e))?;
        let size = self.next_size.take().unwrap_or(header.size);
        let pad = padding(size);
        self.state = match header.kind {
            EntryKind::File => {
                let name = self.next_name.take().unwrap_or(header.name);
                let start = self.entry_start.take().unwrap_or(at);
                if size > self.max_member_bytes {
                    return Err(ShardError::MemberTooLarge {
                        shard: self.shard.to_string(),
                        member: name,
                        offset: at,
                        size,
                        limit: self.max_member_bytes,
                    });
                }
                if size == 0 {
                    self.ready.push_back(Member { name, offset: at, start, data: Blob::new() });
                    State::Skip { remaining: pad }
                } else {
                    State::Data { name, offset: at, start, remaining: size, blob: Blob::new(), pad }
                }
            }
            EntryKind::GnuLongName | EntryKind::PaxLocal => {
                if size > MAX_META_BYTES {
                    return Err(self.corrupt(at, format!("{size}-byte long-name/PAX record")));
                }
                self.entry_start.get_or_insert(at);
                State::Meta {
                    kind: header.kind,
                    remaining: size,
                    buf: Vec::with_capacity(size as usize),
                    pad,
                }
            }
            EntryKind::Other => {
                self.next_name = None;
                self.next_size = None;
                self.entry_start = None;
                State::Skip { remaining: size + pad }
            }
        };
        if matches!(self.state, State::Meta { remaining: 0, .. }) {
            self.state = State::Skip { remaining: pad };
        }
        Ok(())
    }

    fn on_meta(&mut self, kind: EntryKind, payload: &[u8]) {
        match kind {
            EntryKind::GnuLongName => {
                self.next_name = Some(super::tar_header::field_str(payload));
            }
            _ => {
                let (path, size) = pax_records(payload);
                if path.is_some() {
                    self.next_name = path;
                }
                self.next_size = size;
            }
        }
    }

    fn header_error(&self, at: u64, e: HeaderError) -> ShardError {
        if at == 0 {
            ShardError::NotTar { shard: self.shard.to_string(), detail: e.to_string() }
        } else {
            self.corrupt(at, format!("invalid tar header: {e}"))
        }
    }

    fn corrupt(&self, offset: u64, detail: String) -> ShardError {
        ShardError::Corrupt { shard: self.shard.to_string(), offset, detail }
    }

    /// Checks that the stream ended cleanly: at the end-of-archive marker.
    pub fn finish(&self) -> Result<(), ShardError> {
        let truncated = |detail: String| ShardError::Truncated {
            shard: self.shard.to_string(),
            offset: self.offset,
            detail,
        };
        match &self.state {
            State::End => Ok(()),
            State::Header { have: 0 } if self.offset == 0 => {
                Err(ShardError::Empty { shard: self.shard.to_string() })
            }
            State::Header { have: 0 } => Err(truncated("no end-of-archive marker".into())),
            State::Header { have } => {
                Err(truncated(format!("header cut short ({have} of {BLOCK} bytes)")))
            }
            State::Data { name, remaining, .. } => {
                Err(truncated(format!("member '{name}' is missing its last {remaining} bytes")))
            }
            State::Meta { remaining, .. } => {
                Err(truncated(format!("extended header is missing {remaining} bytes")))
            }
            State::Skip { remaining } => {
                Err(truncated(format!("{remaining} bytes of padding or skipped entry missing")))
            }
        }
    }
}
