//! Per-GPU telemetry from NVML, sampled once a second on its own thread:
//! utilisation, memory used, PCIe receive throughput (host → device bytes,
//! what feeding the GPU costs the bus). Without a driver `Nvml::init`
//! fails and [`Telemetry::start`] says why; nothing else changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::PcieUtilCounter;

use super::GpuError;

/// One GPU at one instant.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GpuSample {
    pub index: u32,
    pub name: String,
    /// Share of the last sample period a kernel ran (0–1).
    pub utilization: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// Host → device over PCIe (NVML samples it over ~20 ms).
    pub pcie_rx_bytes_per_s: f64,
}

/// Per-GPU figures over a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GpuSummary {
    pub index: u32,
    pub name: String,
    pub samples: u64,
    pub utilization_mean: f64,
    pub utilization_max: f64,
    pub memory_used_max_bytes: u64,
    pub pcie_rx_mean_bytes_per_s: f64,
    pub pcie_rx_max_bytes_per_s: f64,
}

impl GpuSummary {
    fn first(s: &GpuSample) -> GpuSummary {
        GpuSummary {
            index: s.index,
            name: s.name.clone(),
            samples: 0,
            utilization_mean: 0.0,
            utilization_max: 0.0,
            memory_used_max_bytes: 0,
            pcie_rx_mean_bytes_per_s: 0.0,
            pcie_rx_max_bytes_per_s: 0.0,
        }
    }

    /// Folds one more sample into the running means and maxima.
    fn add(&mut self, s: &GpuSample) {
        let n = self.samples as f64;
        self.utilization_mean = (self.utilization_mean * n + s.utilization) / (n + 1.0);
        self.pcie_rx_mean_bytes_per_s =
            (self.pcie_rx_mean_bytes_per_s * n + s.pcie_rx_bytes_per_s) / (n + 1.0);
        self.utilization_max = self.utilization_max.max(s.utilization);
        self.pcie_rx_max_bytes_per_s = self.pcie_rx_max_bytes_per_s.max(s.pcie_rx_bytes_per_s);
        self.memory_used_max_bytes = self.memory_used_max_bytes.max(s.memory_used_bytes);
        self.samples += 1;
    }
}

/// Folds a round of samples (one per GPU) into per-GPU summaries.
pub fn summarize(summaries: &mut Vec<GpuSummary>, round: &[GpuSample]) {
    for s in round {
        let at = match summaries.iter().position(|x| x.index == s.index) {
            Some(i) => i,
            None => {
                summaries.push(GpuSummary::first(s));
                summaries.len() - 1
            }
        };
        summaries[at].add(s);
    }
}

#[derive(Debug, Default)]
struct Shared {
    latest: Vec<GpuSample>,
    summary: Vec<GpuSummary>,
}

/// The sampler thread; stops when dropped.
#[derive(Debug)]
pub struct Telemetry {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Loads NVML by the names drivers install (the unversioned name is only
/// there with the development package).
fn open_nvml() -> Result<Nvml, GpuError> {
    if std::env::var_os(super::NO_CUDA_ENV).is_some() {
        return Err(GpuError::NoCuda { why: format!("{} is set", super::NO_CUDA_ENV) });
    }
    let mut last = String::new();
    for name in ["libnvidia-ml.so.1", "libnvidia-ml.so"] {
        match Nvml::builder().lib_path(std::ffi::OsStr::new(name)).init() {
            Ok(nvml) => return Ok(nvml),
            Err(e) => last = e.to_string(),
        }
    }
    Err(GpuError::NoCuda { why: format!("NVML unavailable: {last}") })
}

fn sample(nvml: &Nvml) -> Vec<GpuSample> {
    let count = nvml.device_count().unwrap_or(0);
    (0..count)
        .filter_map(|i| {
            let d = nvml.device_by_index(i).ok()?;
            let mem = d.memory_info().ok();
            Some(GpuSample {
                index: i,
                name: d.name().unwrap_or_default(),
                utilization: d.utilization_rates().map_or(0.0, |u| u.gpu as f64 / 100.0),
                memory_used_bytes: mem.as_ref().map_or(0, |m| m.used),
                memory_total_bytes: mem.as_ref().map_or(0, |m| m.total),
                // KB/s in NVML's units (1024 bytes).
                pcie_rx_bytes_per_s: d
                    .pcie_throughput(PcieUtilCounter::Receive)
                    .map_or(0.0, |kb| kb as f64 * 1024.0),
            })
        })
        .collect()
}

impl Telemetry {
    /// Starts sampling every `period`; an error when NVML cannot be
    /// loaded (no driver) — the caller logs it once and carries on.
    pub fn start(period: Duration) -> Result<Telemetry, GpuError> {
        let nvml = open_nvml()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("stoker-nvml".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    let round = sample(&nvml);
                    {
                        let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                        summarize(&mut g.summary, &round);
                        g.latest = round;
                    }
                    // Sleep in short steps so drop does not wait a period.
                    let until = std::time::Instant::now() + period;
                    while !st.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
            .map_err(|e| GpuError::Driver {
                call: "spawning the NVML thread",
                error: e.to_string(),
            })?;
        Ok(Telemetry { shared, stop, thread: Some(thread) })
    }

    pub fn latest(&self) -> Vec<GpuSample> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).latest.clone()
    }

    pub fn summary(&self) -> Vec<GpuSummary> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).summary.clone()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(index: u32, util: f64, mem: u64, rx: f64) -> GpuSample {
        GpuSample {
            index,
            name: format!("gpu{index}"),
            utilization: util,
            memory_used_bytes: mem,
            memory_total_bytes: 100,
            pcie_rx_bytes_per_s: rx,
        }
    }

    #[test]
    fn summaries_keep_means_and_maxima_per_gpu() {
        let mut sum = Vec::new();
        summarize(&mut sum, &[s(0, 0.2, 10, 1e9), s(1, 1.0, 50, 0.0)]);
        summarize(&mut sum, &[s(0, 0.6, 30, 3e9), s(1, 0.0, 40, 0.0)]);
        assert_eq!(sum.len(), 2);
        let g0 = &sum[0];
        assert_eq!((g0.index, g0.samples), (0, 2));
        assert!((g0.utilization_mean - 0.4).abs() < 1e-12);
        assert!((g0.utilization_max - 0.6).abs() < 1e-12);
        assert_eq!(g0.memory_used_max_bytes, 30);
        assert!((g0.pcie_rx_mean_bytes_per_s - 2e9).abs() < 1.0);
        assert!((g0.pcie_rx_max_bytes_per_s - 3e9).abs() < 1.0);
        assert_eq!(sum[1].memory_used_max_bytes, 50);
        assert!((sum[1].utilization_mean - 0.5).abs() < 1e-12);
    }

    /// Without a driver (CI) NVML fails to load with a named error and no
    /// panic; with one, the sampler produces a round within a second.
    #[test]
    fn telemetry_starts_or_says_why() {
        match Telemetry::start(Duration::from_millis(100)) {
            Ok(t) => {
                std::thread::sleep(Duration::from_millis(300));
                assert!(!t.summary().is_empty(), "a driver with no GPU sample");
            }
            Err(GpuError::NoCuda { why }) => assert!(!why.is_empty()),
            Err(e) => panic!("unexpected {e}"),
        }
    }
}
