//! Part 4: start-up, from before the exec of `passkeyd` to the daemon being ready (measured in
//! [`crate::overbus`]).

pub struct StartupResult {
    pub starts: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// What "ready" means in this run.
    pub ready: &'static str,
}
