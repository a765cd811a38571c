//! `batch`: collation of samples into the batch layout (see
//! [`layout`]), one buffer per batch.

pub mod collator;
pub mod layout;

pub use collator::{KEY_COLUMN, batch_bytes, collate, collate_in, collate_into};
pub use layout::{ALIGN, Batch, Column};
