//! Where stoker keeps what it learns between runs (the tuning cache, shard
//! indexes): `$XDG_CACHE_HOME/stoker/NAME`, else `~/.cache/stoker/NAME`,
//! unless an environment variable names another place.

use std::path::PathBuf;

/// `NAME` under the user's cache directory, or what `env_override` says;
/// `None` when neither a cache directory nor a home is known.
pub fn user_cache_path(env_override: &str, name: &str) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(path) = env(env_override) {
        return Some(path);
    }
    let base = env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("stoker").join(name))
}
