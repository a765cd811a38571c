//! A store that fails: outages, storms, stalls and the fault matrix, through
//! a proxy in front of the S3 test server. One test binary (each links the
//! whole crate: one link instead of two keeps CI shorter), one concept per
//! file.

#[path = "../support/mod.rs"]
mod support;

mod matrix;
mod outages;
