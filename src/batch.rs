//! `batch`: collation of samples into the batch layout (see
//! [`layout`]), one buffer per batch.

pub mod collator;
pub mod layout;
pub mod spare_buffers;

pub use collator::{KEY_COLUMN, batch_bytes, collate, collate_in, collate_into};
pub use layout::{ALIGN, Batch, Column};
pub use spare_buffers::SpareBuffers;
