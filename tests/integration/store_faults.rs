//! A store that fails: outages, storms, stalls and the fault matrix, through
//! a proxy in front of the S3 test server.

mod matrix;
mod outages;
