//! Where a session's stream starts: at the top of its epoch, replaying up
//! to a resume token, or with its share of what the ranks of an earlier run
//! (another world size) left (`order::reshard`); and the tokens it hands out.

use super::resume_token::{OrderSettings, ResumeToken, TokenError, base_fingerprint, fingerprint};
use crate::order::reshard::{
    PlanItem, Progress, RankState, SampleFilter, decode_items, decode_leftovers, encode_items,
    encode_leftovers, remaining, share,
};
use crate::order::{OrderConfig, plan_shards};

/// A stream's start, when it is not the top of `epoch`.
#[derive(Debug, Default)]
pub struct Start {
    pub epoch: u64,
    pub skip_batches: u64,
    /// The first epoch's plan and its text, for a resharded stream.
    pub items: Option<(Vec<PlanItem>, String)>,
}

/// Makes the tokens of one stream.
#[derive(Debug, Clone)]
pub struct TokenMaker {
    fingerprint: String,
    base: String,
    rank: u32,
    world_size: u32,
    /// The first epoch, its plan's text and fingerprint, when resharded.
    resharded: Option<(u64, String, String)>,
}

impl TokenMaker {
    pub fn token(&self, epoch: u64, batches: u64, progress: &Progress) -> Vec<u8> {
        let (fingerprint, items) = match &self.resharded {
            Some((first, items, fp)) if *first == epoch => (fp.as_str(), Some(items.clone())),
            _ => (self.fingerprint.as_str(), None),
        };
        let mut token = ResumeToken::new(fingerprint, epoch, batches);
        token.base = self.base.clone();
        token.rank = self.rank;
        token.world_size = self.world_size;
        token.read = (progress.item, progress.next_ordinal);
        token.leftovers = encode_leftovers(&progress.leftovers);
        token.items = items;
        token.encode()
    }
}

/// Checks `state` / `states` against the stream's settings and works out
/// where it starts. `epochs`: the range the request runs.
pub fn start(
    state: &[u8],
    states: &[Vec<u8>],
    s: &OrderSettings<'_>,
    epochs: std::ops::Range<u64>,
) -> Result<(Option<Start>, TokenMaker), TokenError> {
    let mut maker = TokenMaker {
        fingerprint: fingerprint(s, None),
        base: base_fingerprint(s),
        rank: s.rank,
        world_size: s.world_size,
        resharded: None,
    };
    let in_range = |epoch: u64| {
        if epochs.contains(&epoch) {
            Ok(())
        } else {
            Err(TokenError::EpochOutOfRange { found: epoch, first: epochs.start, end: epochs.end })
        }
    };
    if !state.is_empty() {
        let token = ResumeToken::parse(state)?;
        in_range(token.epoch)?;
        let mut start = Start { epoch: token.epoch, skip_batches: token.batches, items: None };
        match &token.items {
            None => ResumeToken::decode(state, &maker.fingerprint).map(drop)?,
            Some(text) => {
                let fp = fingerprint(s, Some(text));
                ResumeToken::decode(state, &fp)?;
                let items = decode_items(text)
                    .ok_or_else(|| TokenError::Malformed("unreadable plan".into()))?;
                maker.resharded = Some((token.epoch, text.clone(), fp));
                start.items = Some((items, text.clone()));
            }
        }
        return Ok((Some(start), maker));
    }
    if states.is_empty() {
        return Ok((None, maker));
    }
    let tokens = states.iter().map(|b| ResumeToken::parse(b)).collect::<Result<Vec<_>, _>>()?;
    if tokens.iter().any(|t| t.base != maker.base) {
        return Err(TokenError::OtherSettings);
    }
    let epoch = tokens[0].epoch;
    in_range(epoch)?;
    if tokens.iter().any(|t| t.epoch != epoch) {
        return Err(TokenError::IncompleteRun("the states are of different epochs".into()));
    }
    let old_world = tokens[0].world_size;
    let mut ranks: Vec<u32> = tokens.iter().map(|t| t.rank).collect();
    ranks.sort_unstable();
    if old_world == 0
        || tokens.iter().any(|t| t.world_size != old_world)
        || ranks != (0..old_world).collect::<Vec<_>>()
    {
        return Err(TokenError::IncompleteRun(format!(
            "got ranks {ranks:?} of world sizes {:?}",
            tokens.iter().map(|t| t.world_size).collect::<Vec<_>>()
        )));
    }
    let mut old = Vec::new();
    for t in &tokens {
        let plan = match &t.items {
            Some(text) => {
                decode_items(text).ok_or_else(|| TokenError::Malformed("unreadable plan".into()))?
            }
            None => {
                let cfg = OrderConfig {
                    seed: s.seed,
                    epoch,
                    rank: t.rank as usize,
                    world_size: old_world as usize,
                    shuffle_shards: s.shuffle_shards,
                    shuffle_buffer: s.shuffle_buffer as usize,
                };
                plan_shards(s.shards.len(), epoch, &cfg)
                    .into_iter()
                    .map(|i| PlanItem { shard: i as u32, filter: SampleFilter::ALL })
                    .collect()
            }
        };
        let leftovers = decode_leftovers(&t.leftovers)
            .ok_or_else(|| TokenError::Malformed("unreadable leftovers".into()))?;
        let progress = Progress { item: t.read.0, next_ordinal: t.read.1, leftovers };
        old.push(RankState { plan, progress });
    }
    let mine = share(&remaining(&old), s.rank as usize, s.world_size as usize);
    let text = encode_items(&mine);
    maker.resharded = Some((epoch, text.clone(), fingerprint(s, Some(&text))));
    Ok((Some(Start { epoch, skip_batches: 0, items: Some((mine, text)) }), maker))
}
