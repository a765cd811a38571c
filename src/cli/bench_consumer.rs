//! Where `stoker bench` hands each batch: back to the pipeline's pool
//! (host memory), or into a GPU's memory (`--gpu`, in `bench_gpu`).

use crate::batch::Batch;
use crate::pipeline::Pipeline;

/// The consumer end of a bench run.
pub trait Consumer {
    type Batch: Send + 'static;
    fn epoch(b: &Self::Batch) -> u64;
    fn num_samples(b: &Self::Batch) -> usize;
    fn payload_bytes(b: &Self::Batch) -> u64;
    /// Each of the batch's sample keys, before it is taken.
    fn keys(&self, b: &Self::Batch, each: &mut dyn FnMut(&str));
    /// Takes the batch (its memory goes back when the consumer is done).
    fn take(&mut self, pipeline: &Pipeline<Self::Batch>, b: Self::Batch) -> anyhow::Result<()>;
    /// At the end of the run (`seconds` since it began): waits for work
    /// still queued and reports what only this consumer knows.
    fn finish(&mut self, seconds: f64) -> anyhow::Result<Option<super::bench_gpu::GpuReport>>;
}

/// Host memory: each batch is counted and its buffer recycled.
#[derive(Debug)]
pub struct HostConsumer;

impl Consumer for HostConsumer {
    type Batch = Batch;

    fn epoch(b: &Batch) -> u64 {
        b.epoch
    }

    fn num_samples(b: &Batch) -> usize {
        b.num_samples
    }

    fn payload_bytes(b: &Batch) -> u64 {
        b.payload_bytes()
    }

    fn keys(&self, b: &Batch, each: &mut dyn FnMut(&str)) {
        b.keys().for_each(each);
    }

    fn take(&mut self, pipeline: &Pipeline<Batch>, b: Batch) -> anyhow::Result<()> {
        pipeline.recycle(b);
        Ok(())
    }

    fn finish(&mut self, _seconds: f64) -> anyhow::Result<Option<super::bench_gpu::GpuReport>> {
        Ok(None)
    }
}
