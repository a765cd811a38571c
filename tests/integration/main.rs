//! The integration tests, one binary: each test binary links the whole
//! crate and compiles the test support (an S3 server, a proxy) again, so
//! one binary instead of nine takes minutes off a fresh build. One concept
//! per file. The autotuner's loopback tests, which measure throughput, and
//! its grid stay binaries of their own (`tests/autotune_*.rs`), so nothing
//! else runs beside them.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod cli;
mod conformance;
mod even_split;
mod faults;
mod hostile_shards;
mod open_pace;
mod resume_seek;
mod store_faults;
mod streaming_s3;
