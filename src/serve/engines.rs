//! One fetch engine per endpoint, all drawing on one memory budget and one
//! buffer pool: every session of the daemon shares them (FIFO permits, so
//! sessions on one endpoint share its connections fairly).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::fetch::{FetchConfig, FetchEngine, MemoryBudget, PartPool};
use crate::source::Dataset;

#[derive(Debug)]
pub struct Engines {
    config: FetchConfig,
    pub budget: Arc<MemoryBudget>,
    pool: Arc<PartPool>,
    by_endpoint: Mutex<HashMap<String, Arc<FetchEngine>>>,
}

impl Engines {
    /// Engines within `config.memory_budget_bytes` of live part memory:
    /// a third of it is the pin allowance (`MemoryBudget::try_pin`), and
    /// the parts' budget, with every bound derived from it (the largest
    /// member, a batch's samples, bytes in flight), is the other two
    /// thirds. Sampling the heap and compacting above a threshold kept
    /// the daemon soak's RSS near the budget but not under it (1.09-1.17x
    /// of budget + rings at peaks): this holds by construction.
    pub fn new(mut config: FetchConfig) -> Engines {
        let memory = config.memory_budget_bytes;
        let pin = memory / 3;
        config.memory_budget_bytes = memory - pin;
        Engines {
            budget: MemoryBudget::with_pin_allowance(config.memory_budget_bytes, pin),
            pool: PartPool::new(config.memory_budget_bytes / 4),
            config,
            by_endpoint: Mutex::default(),
        }
    }

    /// The fetch settings every engine starts from (retries included).
    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Gives pooled part buffers back to the allocator (no session left).
    pub fn trim(&self) {
        self.pool.clear();
    }

    /// Every engine made so far.
    pub fn all(&self) -> Vec<Arc<FetchEngine>> {
        self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    /// Every engine made so far, with its endpoint.
    pub fn all_named(&self) -> Vec<(String, Arc<FetchEngine>)> {
        let map = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// The engine for `dataset`'s endpoint (scheme and bucket/host).
    pub fn for_dataset(&self, dataset: &Dataset) -> Arc<FetchEngine> {
        let endpoint = dataset.url.endpoint();
        let mut map = self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(endpoint.clone())
            .or_insert_with(|| {
                FetchEngine::sharing(
                    dataset.store.clone(),
                    self.config.clone(),
                    &endpoint,
                    self.budget.clone(),
                    self.pool.clone(),
                )
            })
            .clone()
    }
}
