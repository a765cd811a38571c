//! Collation straight into a session's ring: the pipeline's batch thread
//! writes each batch into a free slot and hands out the lease.

use std::sync::Arc;

use crate::batch::{Column, batch_bytes, collate_into};
use crate::order::reshard::Progress;
use crate::pipeline::BatchWriter;
use crate::ring::{Lease, SessionRing};
use crate::shard::Sample;
use crate::{Error, Result};

/// A [`BatchWriter`] over a session's ring.
#[derive(Debug)]
pub struct RingWriter {
    ring: Arc<SessionRing>,
}

impl RingWriter {
    pub fn new(ring: Arc<SessionRing>) -> RingWriter {
        RingWriter { ring }
    }
}

/// A batch in a leased slot: what its descriptor says.
#[derive(Debug, Clone)]
pub struct RingBatch {
    pub lease: Lease,
    pub num_samples: usize,
    pub keys: Column,
    pub columns: Vec<Column>,
    pub epoch: u64,
    pub index: u64,
    pub payload_bytes: u64,
    /// The stream's progress after this batch (for the resume token).
    pub progress: Progress,
}

impl BatchWriter for RingWriter {
    type Out = RingBatch;

    fn write(
        &mut self,
        samples: &[Sample],
        epoch: u64,
        index: u64,
        progress: Option<Progress>,
    ) -> Result<Option<RingBatch>> {
        let need = batch_bytes(samples);
        let slot_bytes = self.ring.slot_bytes() as u64;
        if need > slot_bytes {
            return Err(Error::RingSlotTooSmall { epoch, index, batch_bytes: need, slot_bytes });
        }
        // Waits while the client holds every slot: back-pressure.
        let Some(mut filling) = self.ring.wait_fill() else {
            return Ok(None);
        };
        let (keys, columns, _) = collate_into(samples, filling.bytes_mut());
        let payload_bytes = columns.iter().map(|c| c.values_len).sum();
        let lease = filling
            .publish(need as usize)
            .map_err(|e| Error::Internal(format!("publishing a ring slot: {e}")))?;
        Ok(Some(RingBatch {
            lease,
            num_samples: samples.len(),
            keys,
            columns,
            epoch,
            index,
            payload_bytes,
            progress: progress.unwrap_or_default(),
        }))
    }
}
