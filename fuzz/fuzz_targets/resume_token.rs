//! Any bytes as a resume state (and as the states of a reshard): a named
//! error or a start, never a panic. JSON inputs are also tried with the
//! right version and fingerprint, so that the plan, leftovers and reshard
//! decoding behind those checks is reached.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use stoker::serve::resume_plan;
use stoker::serve::resume_token::{OrderSettings, base_fingerprint, fingerprint};
use stoker::source::ShardRef;

fuzz_target!(|data: &[u8]| {
    let shards: Vec<Arc<ShardRef>> = (0..5)
        .map(|i| {
            Arc::new(ShardRef {
                url: format!("s3://b/s{i}.tar"),
                path: format!("s{i}.tar").into(),
                size: Some(10_000),
                e_tag: None,
            })
        })
        .collect();
    let fields = Vec::new();
    let s = OrderSettings {
        shards: &shards,
        seed: 7,
        shuffle_shards: true,
        shuffle_buffer: 16,
        batch_size: 4,
        drop_last: false,
        fields: &fields,
        rank: 1,
        world_size: 3,
        split: "",
        counts: None,
    };
    let _ = resume_plan::start(data, &[], &s, 0..3);
    let Ok(mut token) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Some(fields) = token.as_object_mut() else { return };
    fields.insert("v".into(), 1.into());
    fields.insert("fingerprint".into(), fingerprint(&s, None).into());
    fields.insert("base".into(), base_fingerprint(&s).into());
    let Ok(fixed) = serde_json::to_vec(&token) else { return };
    let _ = resume_plan::start(&fixed, &[], &s, 0..3);
    let _ = resume_plan::start(&[], &[fixed.clone(), fixed], &s, 0..3);
});
