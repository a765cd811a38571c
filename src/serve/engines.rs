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
    /// Engines whose live part memory stays within 9/8 of
    /// `config.memory_budget_bytes` by construction: the parts' budget is
    /// the whole of it, and an eighth more is the pin allowance
    /// (`MemoryBudget::try_pin`) that pays for the HTTP client's read
    /// buffers held by parts kept without a copy; the rest are copied as
    /// they arrive. Sampling the heap and compacting above a threshold
    /// (`alloc_trim`) kept the daemon soak's RSS near the budget but not
    /// under it (1.09-1.17x of budget + rings at peaks). A larger allowance
    /// carved out of the budget (a third) halved the soak's throughput: its
    /// read-ahead is what the budget buys; an eighth on top cost 4%.
    pub fn new(config: FetchConfig) -> Engines {
        let pin = config.memory_budget_bytes / 8;
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
