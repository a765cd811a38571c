//! CUDA when the machine has it, host mode when it does not.
//!
//! ```text
//!  probe (once) ─ libcuda? cuInit? devices? ─▶ Ok(n)  ─▶ driver: Device, Stream, Event, DeviceBuffer, HostRegistration
//!                                             └─ Err(NoCuda) ─▶ "no CUDA: host mode" logged once; batches stay in host memory
//!  telemetry (NVML, once a second) · stall (what the consumer waited) · ipc_handle (handles on the wire)
//! ```
//!
//! The driver library is loaded at run time (cudarc's `dynamic-loading`), so
//! one binary runs on machines with and without NVIDIA drivers. cudarc
//! panics when it cannot load the library or a symbol, so nothing here calls
//! it before [`probe`] has found `libcuda` and initialised it. All `unsafe`
//! CUDA calls live in `driver`.

pub mod driver;
pub mod ipc_handle;
pub mod stall;
pub mod telemetry;

use std::sync::OnceLock;

/// Why the CUDA path is not available, or a driver call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// No usable CUDA driver: host mode.
    #[error("no CUDA: {why}")]
    NoCuda { why: String },
    #[error("no CUDA device {ordinal}: this machine has {count}")]
    NoSuchDevice { ordinal: usize, count: usize },
    #[error("CUDA {call} failed: {error}")]
    Driver { call: &'static str, error: String },
}

impl GpuError {
    pub(crate) fn driver(call: &'static str, e: cudarc::driver::DriverError) -> GpuError {
        GpuError::Driver { call, error: format!("{e:?}") }
    }
}

/// Setting this (to anything) makes [`probe`] report no CUDA: host mode on
/// a machine that has a GPU, e.g. to compare the two on one host.
pub const NO_CUDA_ENV: &str = "STOKER_NO_CUDA";

/// The number of CUDA devices, probing the driver once per process; the
/// first caller to find none logs "no CUDA: host mode" (once).
pub fn probe() -> Result<usize, GpuError> {
    static PROBE: OnceLock<Result<usize, GpuError>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let found = probe_driver();
            match &found {
                Ok(n) => tracing::info!(devices = n, "CUDA driver found"),
                Err(e) => tracing::info!("{e}: host mode"),
            }
            found
        })
        .clone()
}

#[allow(unsafe_code)] // one dlopen probe; the driver calls live in `driver`
fn probe_driver() -> Result<usize, GpuError> {
    if std::env::var_os(NO_CUDA_ENV).is_some() {
        return Err(GpuError::NoCuda { why: format!("{NO_CUDA_ENV} is set") });
    }
    // SAFETY: only tries to open the library by its usual names (dlopen),
    // and drops it; no symbol is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::NoCuda {
            why: "libcuda.so not found (no NVIDIA driver on this machine)".into(),
        });
    }
    // cudarc panics when a symbol is missing from an old driver: caught
    // here, once, so the process carries on in host mode.
    let init = std::panic::catch_unwind(|| {
        cudarc::driver::result::init()?;
        cudarc::driver::result::device::get_count()
    });
    match init {
        Ok(Ok(n)) if n > 0 => Ok(n as usize),
        Ok(Ok(_)) => Err(GpuError::NoCuda { why: "the driver sees no CUDA device".into() }),
        Ok(Err(e)) => Err(GpuError::NoCuda { why: format!("cuInit failed: {e:?}") }),
        Err(_) => Err(GpuError::NoCuda { why: "the CUDA driver lacks a needed call".into() }),
    }
}

/// Parses `--gpus`: `all`, `none`, or comma-separated ordinals (`0,1,3`).
pub fn parse_gpus(s: &str) -> Result<GpuSelection, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") {
        return Ok(GpuSelection::All);
    }
    if s.eq_ignore_ascii_case("none") {
        return Ok(GpuSelection::Some(Vec::new()));
    }
    let mut ordinals = Vec::new();
    for part in s.split(',') {
        let n: usize = part
            .trim()
            .parse()
            .map_err(|_| format!("`{part}` is not a GPU ordinal (use `all` or e.g. `0,1`)"))?;
        if n >= 1024 {
            return Err(format!("GPU ordinal {n} is out of range"));
        }
        if !ordinals.contains(&n) {
            ordinals.push(n);
        }
    }
    Ok(GpuSelection::Some(ordinals))
}

/// Which GPUs a daemon may drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    All,
    Some(Vec<usize>),
}

impl GpuSelection {
    /// The ordinals on a machine with `count` devices; an ordinal past the
    /// last device is an error.
    pub fn resolve(&self, count: usize) -> Result<Vec<usize>, GpuError> {
        match self {
            GpuSelection::All => Ok((0..count).collect()),
            GpuSelection::Some(v) => {
                if let Some(&bad) = v.iter().find(|&&o| o >= count) {
                    return Err(GpuError::NoSuchDevice { ordinal: bad, count });
                }
                Ok(v.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_parse_all_and_lists() {
        assert_eq!(parse_gpus("all"), Ok(GpuSelection::All));
        assert_eq!(parse_gpus("none"), Ok(GpuSelection::Some(vec![])));
        assert_eq!(parse_gpus("0, 1,1,3"), Ok(GpuSelection::Some(vec![0, 1, 3])));
        assert!(parse_gpus("0,x").unwrap_err().contains("`x`"));
        assert!(parse_gpus("-1").is_err());
        assert!(parse_gpus("99999").is_err());
    }

    #[test]
    fn a_missing_ordinal_is_named() {
        let sel = GpuSelection::Some(vec![0, 2]);
        assert_eq!(sel.resolve(2), Err(GpuError::NoSuchDevice { ordinal: 2, count: 2 }));
        assert_eq!(GpuSelection::All.resolve(3), Ok(vec![0, 1, 2]));
    }

    /// On a machine without a driver (CI) the probe says so, once, and
    /// never panics; on a GPU host it finds at least one device.
    #[test]
    fn the_probe_answers_without_panicking() {
        match probe() {
            Ok(n) => assert!(n > 0),
            Err(GpuError::NoCuda { why }) => assert!(!why.is_empty()),
            Err(e) => panic!("unexpected {e}"),
        }
        assert_eq!(probe(), probe(), "probed once");
    }
}
