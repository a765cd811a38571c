//! `serve`: the node daemon. Trainer ranks open sessions over a Unix socket
//! (gRPC, `proto/stoker/v1`); each session gets its own sealed memfd ring,
//! fetched once over the ring socket, and a stream of batch descriptors.
//! One fetch engine per endpoint and one memory budget serve every session.
//!
//! ```text
//!  client ──gRPC OpenStream──▶ service ──▶ pipeline ──RingWriter──▶ ring slot ──descriptor──▶ client (mmap, read-only)
//!         ◀─ring socket: memfd (SCM_RIGHTS)                             ▲
//!         ──gRPC Release (slot, generation)─────────────────────────────┘
//! ```

mod daemon;
mod daemon_metrics;
mod dataset_cache;
pub mod device_ring;
mod engines;
pub mod resume_plan;
pub mod resume_token;
mod ring_socket;
pub mod ring_writer;
pub mod service;
mod session;
mod url_policy;
mod user_quota;

pub use daemon::{ServeConfig, ring_socket_path, run};
pub use service::SessionDefaults;
pub use url_policy::UrlPolicy;
pub use user_quota::{UserLimits, UserQuotas};

/// Code generated from `proto/stoker/v1/stoker.proto` by build.rs.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("stoker.v1");
}
