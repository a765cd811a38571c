//! The resume token: where a session's stream stands after a batch.
//!
//! A token names the epoch and how many of its batches were delivered, plus
//! a fingerprint of everything the order depends on (dataset shards, seed,
//! shuffle settings, batch size, fields, rank and world size, the split).
//! Given back in `OpenStreamRequest.state`, a new session (new process,
//! restarted daemon) seeks: it fetches again the samples the stream held
//! (`held`: waiting for a batch, then the shuffle buffer's in slot order),
//! puts the buffer back with its random state (`rng`), and reads on from
//! `read`; its batches are byte for byte those the stream would have
//! delivered. A token without `held` (an older daemon's) replays the epoch
//! up to the batch instead.
//!
//! For a different world size, the tokens of every old rank together
//! (`OpenStreamRequest.states`) say what is left of the epoch: each carries
//! its read position and the samples read but not delivered (the shuffle
//! buffer's), see `order::reshard`. A stream made that way carries its plan
//! (`items`) in its tokens, so it resumes exactly too. JSON, so a person
//! can read a saved `state_dict`.

use serde::{Deserialize, Serialize};

use crate::order::Digest;
use crate::source::ShardRef;

/// Token format version; a newer daemon refuses what it cannot read.
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeToken {
    pub v: u32,
    /// Hex digest of the settings the order depends on.
    pub fingerprint: String,
    pub epoch: u64,
    /// Batches of `epoch` already delivered.
    pub batches: u64,
    /// Digest of the settings without rank, world size and plan: tokens
    /// of ranks of one run share it.
    #[serde(default)]
    pub base: String,
    #[serde(default)]
    pub rank: u32,
    #[serde(default)]
    pub world_size: u32,
    /// Plan item of the last sample read and its ordinal + 1.
    #[serde(default)]
    pub read: (u32, u32),
    /// Samples read, not delivered: `shard:ordinal,…;…`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub leftovers: String,
    /// The epoch's plan when it came from resharding: `shard:from:ordinals;…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// The leftovers in order, `shard:ordinal,…`: the first `rest` wait for
    /// a batch, the others fill the shuffle buffer in its slot order. With
    /// `rng`, where the buffer's random stream stands, a stream resumes by
    /// fetching these and seeking to `read`, not by replaying its epoch.
    /// Absent in tokens of older daemons (they replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    #[serde(default)]
    pub rest: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rng: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the resume state is not a stoker token ({0})")]
    Malformed(String),
    #[error("the resume state has version {0}; this daemon reads version {VERSION}")]
    Version(u32),
    #[error(
        "the resume state was made for other settings (dataset shards, seed, shuffle, batch \
         size, fields, rank or world size differ): resume with the settings of the saved run"
    )]
    OtherSettings,
    #[error("the resume state is for epoch {found}; this stream runs epochs {first}..{end}")]
    EpochOutOfRange { found: u64, first: u64, end: u64 },
    #[error("resharding needs one state from every rank of the old run: {0}")]
    IncompleteRun(String),
}

impl ResumeToken {
    pub fn new(fingerprint: &str, epoch: u64, batches: u64) -> ResumeToken {
        ResumeToken {
            v: VERSION,
            fingerprint: fingerprint.into(),
            epoch,
            batches,
            base: String::new(),
            rank: 0,
            world_size: 0,
            read: (0, 0),
            leftovers: String::new(),
            items: None,
            held: None,
            rest: 0,
            rng: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a token (any settings).
    pub fn parse(bytes: &[u8]) -> Result<ResumeToken, TokenError> {
        let token: ResumeToken =
            serde_json::from_slice(bytes).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if token.v != VERSION {
            return Err(TokenError::Version(token.v));
        }
        Ok(token)
    }

    /// Checks the token belongs to a stream with `fingerprint`.
    pub fn check(&self, fingerprint: &str) -> Result<(), TokenError> {
        if self.fingerprint == fingerprint { Ok(()) } else { Err(TokenError::OtherSettings) }
    }

    /// Reads a token and checks it belongs to a stream with `fingerprint`.
    pub fn decode(bytes: &[u8], fingerprint: &str) -> Result<ResumeToken, TokenError> {
        let token = Self::parse(bytes)?;
        token.check(fingerprint)?;
        Ok(token)
    }
}

/// What the order of a stream depends on.
#[derive(Debug, Clone, Copy)]
pub struct OrderSettings<'a> {
    pub shards: &'a [std::sync::Arc<ShardRef>],
    pub seed: u64,
    pub shuffle_shards: bool,
    pub shuffle_buffer: u32,
    pub batch_size: u32,
    pub drop_last: bool,
    pub fields: &'a [String],
    pub rank: u32,
    pub world_size: u32,
    /// How epochs are split when by samples (`even`: none, drop, pad);
    /// empty when by whole shards.
    pub split: &'a str,
    /// With `split`: every shard's sample count (from the index), to plan
    /// a resharded epoch by samples. Not part of any fingerprint.
    pub counts: Option<&'a [u32]>,
}

/// The digest shared by every rank of a run: `s` without rank and world size.
pub fn base_fingerprint(s: &OrderSettings<'_>) -> String {
    fingerprint(&OrderSettings { rank: u32::MAX, world_size: 0, ..*s }, None)
}

/// A stable digest of `s` and, for a resharded stream, its plan `items`
/// (not `DefaultHasher`: tokens outlive builds).
pub fn fingerprint(s: &OrderSettings<'_>, items: Option<&str>) -> String {
    let mut d = Digest::new(0x9e37_79b9_7f4a_7c15);
    let mut eat = |bytes: &[u8]| d.eat(bytes);
    for shard in s.shards {
        eat(shard.url.as_bytes());
    }
    for field in s.fields {
        eat(field.as_bytes());
    }
    if let Some(items) = items {
        eat(b"items");
        eat(items.as_bytes());
    }
    // Absent for a split by shards, so tokens from before splits existed
    // still resume.
    if !s.split.is_empty() {
        eat(b"split");
        eat(s.split.as_bytes());
    }
    for n in [
        s.seed,
        s.shuffle_shards as u64,
        s.shuffle_buffer as u64,
        s.batch_size as u64,
        s.drop_last as u64,
        s.rank as u64,
        s.world_size as u64,
    ] {
        eat(&n.to_le_bytes());
    }
    d.hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_stay_what_earlier_builds_made() {
        // Saved tokens carry it: a change to the digest breaks every resume.
        assert_eq!(settings(7), "a5a12cca42be695d");
    }

    fn settings(seed: u64) -> String {
        fingerprint(
            &OrderSettings {
                shards: &[],
                seed,
                shuffle_shards: true,
                shuffle_buffer: 100,
                batch_size: 8,
                drop_last: false,
                fields: &["jpg".into()],
                rank: 0,
                world_size: 2,
                split: "",
                counts: None,
            },
            None,
        )
    }

    #[test]
    fn a_token_round_trips_and_is_refused_for_other_settings() {
        let fp = settings(1);
        let token = ResumeToken::new(&fp, 3, 17);
        assert_eq!(ResumeToken::decode(&token.encode(), &fp), Ok(token.clone()));
        assert_eq!(
            ResumeToken::decode(&token.encode(), &settings(2)),
            Err(TokenError::OtherSettings)
        );
        assert!(matches!(ResumeToken::decode(b"junk", &fp), Err(TokenError::Malformed(_))));
        let mut old = token;
        old.v = 0;
        assert_eq!(ResumeToken::decode(&old.encode(), &fp), Err(TokenError::Version(0)));
    }
}
