//! Where a session's stream starts: at the top of its epoch, replaying up
//! to a resume token, or with its share of what the ranks of an earlier run
//! (another world size) left (`order::reshard`); and the tokens it hands out.

use super::resume_token::{OrderSettings, ResumeToken, TokenError, base_fingerprint, fingerprint};
use crate::order::reshard::{
    PlanItem, Progress, RankState, SampleFilter, decode_items, decode_leftovers, encode_items,
    remaining, share,
};
use crate::order::{OrderConfig, plan_shards};

/// A stream's start, when it is not the top of `epoch`.
#[derive(Debug, Default)]
pub struct Start {
    pub epoch: u64,
    pub skip_batches: u64,
    /// Where to seek to instead of replaying `skip_batches` (tokens that
    /// carry the shuffle buffer's order and random state).
    pub seek: Option<crate::pipeline::Resume>,
    /// A resharded epoch split by samples: what it costs this rank.
    pub tally: Option<crate::order::EvenTally>,
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
        // The leftovers once, in order (`held`): resharding reads them there too.
        token.items = items;
        token.held = Some(encode_held(&progress.leftovers));
        token.rest = progress.rest;
        token.rng = progress.rng_word_pos.map(|p| p.to_string());
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
        let mut start = Start {
            epoch: token.epoch,
            skip_batches: token.batches,
            items: None,
            seek: seek_of(&token, s)?,
            tally: None,
        };
        if start.seek.is_some() {
            start.skip_batches = 0;
        }
        match &token.items {
            None => token.check(&maker.fingerprint)?,
            Some(text) => {
                let fp = fingerprint(s, Some(text));
                token.check(&fp)?;
                let items = decode_items(text)
                    .ok_or_else(|| TokenError::Malformed("unreadable plan".into()))?;
                maker.resharded = Some((token.epoch, text.clone(), fp));
                start.items = Some((items, text.clone()));
            }
        }
        in_range(token.epoch)?;
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
    // Split by samples: the old plans were, and the new shares are.
    let split = s
        .counts
        .filter(|_| !s.split.is_empty())
        .map(|counts| (counts, s.split.parse::<crate::order::Even>().unwrap_or_default()));
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
                match split {
                    Some((counts, even)) => crate::order::plan_samples(counts, epoch, &cfg, even),
                    None => plan_shards(s.shards.len(), epoch, &cfg)
                        .into_iter()
                        .map(|i| PlanItem { shard: i as u32, filter: SampleFilter::ALL })
                        .collect(),
                }
            }
        };
        let leftovers = match &t.held {
            Some(held) => decode_held(held),
            None => decode_leftovers(&t.leftovers),
        }
        .ok_or_else(|| TokenError::Malformed("unreadable leftovers".into()))?;
        let progress =
            Progress { item: t.read.0, next_ordinal: t.read.1, leftovers, ..Progress::default() };
        old.push(RankState { plan, progress });
    }
    let (mine, tally) = match split {
        Some((counts, even)) => {
            let cfg = OrderConfig {
                rank: s.rank as usize,
                world_size: s.world_size as usize,
                ..OrderConfig::default()
            };
            let rest = crate::order::reshard::remaining_ranges(&old, counts);
            let (items, tally) = crate::order::share_by_samples(&rest, counts, &cfg, even);
            (items, Some(tally))
        }
        None => (share(&remaining(&old), s.rank as usize, s.world_size as usize), None),
    };
    let text = encode_items(&mine);
    maker.resharded = Some((epoch, text.clone(), fingerprint(s, Some(&text))));
    let items = Some((mine, text));
    Ok((Some(Start { epoch, skip_batches: 0, items, seek: None, tally }), maker))
}

/// Leftovers in order: `shard:ordinal,…`.
fn encode_held(held: &[(u32, u32)]) -> String {
    let parts: Vec<String> = held.iter().map(|(s, o)| format!("{s}:{o}")).collect();
    parts.join(",")
}

fn decode_held(text: &str) -> Option<Vec<(u32, u32)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|p| {
            let (s, o) = p.split_once(':')?;
            Some((s.parse().ok()?, o.parse().ok()?))
        })
        .collect()
}

/// Where a token's stream seeks to, if the token says enough for that.
fn seek_of(
    t: &ResumeToken,
    s: &OrderSettings<'_>,
) -> Result<Option<crate::pipeline::Resume>, TokenError> {
    let Some(text) = &t.held else {
        return Ok(None);
    };
    let bad = |why: &str| TokenError::Malformed(why.into());
    let held = decode_held(text).ok_or_else(|| bad("unreadable held samples"))?;
    // At most a buffer and a batch: more is not a token of these settings.
    let most = u64::from(s.shuffle_buffer) + u64::from(s.batch_size);
    if held.len() as u64 > most || t.rest as usize > held.len() {
        return Err(bad("more held samples than the settings allow"));
    }
    if held.iter().any(|&(shard, _)| shard as usize >= s.shards.len()) {
        return Err(bad("a held sample of a shard the dataset does not have"));
    }
    let rng_word_pos = match &t.rng {
        None => None,
        Some(p) => Some(p.parse::<u128>().map_err(|_| bad("unreadable random state"))?),
    };
    Ok(Some(crate::pipeline::Resume {
        item: t.read.0,
        ordinal: t.read.1,
        held,
        rest: t.rest,
        rng_word_pos,
        batches: t.batches,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ShardRef;
    use std::sync::Arc;

    fn shards(n: usize) -> Vec<Arc<ShardRef>> {
        (0..n)
            .map(|i| {
                let url = format!("s3://b/shard-{i}.tar");
                Arc::new(ShardRef { path: url.as_str().into(), url, size: None, e_tag: None })
            })
            .collect()
    }

    fn settings(shards: &[Arc<ShardRef>], rank: u32, world_size: u32) -> OrderSettings<'_> {
        OrderSettings {
            shards,
            seed: 7,
            shuffle_shards: true,
            shuffle_buffer: 10,
            batch_size: 4,
            drop_last: false,
            fields: &[],
            rank,
            world_size,
            split: "",
            counts: None,
        }
    }

    fn token_of(s: &OrderSettings<'_>, epoch: u64, batches: u64, read: (u32, u32)) -> Vec<u8> {
        let (_, maker) = start(&[], &[], s, 0..10).unwrap();
        let progress = Progress {
            item: read.0,
            next_ordinal: read.1,
            leftovers: vec![(1, 2)],
            ..Progress::default()
        };
        maker.token(epoch, batches, &progress)
    }

    #[test]
    fn a_token_resumes_its_own_stream_and_nothing_else() {
        let all = shards(8);
        let mine = settings(&all, 1, 2);
        let token = token_of(&mine, 3, 5, (1, 4));
        let (start_at, _) = start(&token, &[], &mine, 0..10).unwrap();
        let s = start_at.unwrap();
        // It seeks: no batch replayed.
        assert_eq!((s.epoch, s.skip_batches, s.items.is_none()), (3, 0, true));
        let seek = s.seek.unwrap();
        assert_eq!((seek.item, seek.ordinal, seek.batches), (1, 4, 5));
        assert_eq!((seek.held, seek.rest), (vec![(1, 2)], 0));
        // A token of a daemon from before seeking replays its epoch.
        let mut old = ResumeToken::parse(&token).unwrap();
        old.held = None;
        let (start_at, _) = start(&old.encode(), &[], &mine, 0..10).unwrap();
        let s = start_at.unwrap();
        assert_eq!((s.skip_batches, s.seek.is_none()), (5, true));
        // Held samples past what a buffer and a batch hold are refused.
        let mut big = ResumeToken::parse(&token).unwrap();
        big.held = Some(vec!["1:2"; 100].join(","));
        assert!(matches!(start(&big.encode(), &[], &mine, 0..10), Err(TokenError::Malformed(_))));
        let other_rank = settings(&all, 0, 2);
        assert_eq!(start(&token, &[], &other_rank, 0..10).err(), Some(TokenError::OtherSettings));
        assert!(matches!(
            start(&token, &[], &mine, 4..6).err(),
            Some(TokenError::EpochOutOfRange { found: 3, .. })
        ));
    }

    #[test]
    fn resharding_checks_the_old_run_and_its_streams_resume_exactly() {
        let all = shards(8);
        let old: Vec<Vec<u8>> =
            (0..2).map(|r| token_of(&settings(&all, r, 2), 1, 2, (1, 3))).collect();
        let new = settings(&all, 0, 3);
        let (s, maker) = start(&[], &old, &new, 0..5).unwrap();
        let s = s.unwrap();
        let (items, _) = s.items.clone().unwrap();
        assert_eq!((s.epoch, s.skip_batches), (1, 0));
        assert!(!items.is_empty());
        // The resharded stream's own token carries its plan and replays it.
        let token = maker.token(1, 2, &Progress::default());
        let (again, _) = start(&token, &[], &new, 0..5).unwrap();
        assert_eq!(again.unwrap().items.map(|(i, _)| i), Some(items));
        // Incomplete or mixed runs are refused.
        let err = start(&[], &old[..1], &new, 0..5).err();
        assert!(matches!(err, Some(TokenError::IncompleteRun(_))), "{err:?}");
        let later = token_of(&settings(&all, 1, 2), 2, 1, (0, 1));
        let err = start(&[], &[old[0].clone(), later], &new, 0..5).err();
        assert!(matches!(err, Some(TokenError::IncompleteRun(_))), "{err:?}");
        let other_seed = OrderSettings { seed: 8, ..new };
        assert_eq!(start(&[], &old, &other_seed, 0..5).err(), Some(TokenError::OtherSettings));
    }
}
