//! The sandbox every plugin call runs in: an engine with fuel metering, a fresh `Store` per
//! call with capped memory, a linker that grants only `host.log`, and the state that records
//! what the plugin logged and why it stopped.

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder,
};

use super::bindings::Level;
use super::bindings::mirror::modelbake::plugin::{host, types};

/// Linear memory one plugin instance may use (it may have one memory).
pub const MEMORY_LIMIT: usize = 64 << 20;
/// Instances alive at once, over all plugins of a command (calls run one at a time per
/// thread; this leaves room for every worker thread).
const POOL_SLOTS: u32 = 16;
/// Fuel every call gets (roughly one unit per wasm instruction): ~0.1 s of compiled code.
pub const FUEL_BASE: u64 = 1_000_000_000;
/// Extra fuel per input item (file, revision), so big repos get proportionally more.
pub const FUEL_PER_ITEM: u64 = 1_000_000;
/// No call gets more than this, whatever its input size.
pub const FUEL_MAX: u64 = 20_000_000_000;
/// Bytes of plugin log kept per call; more is dropped (and says so).
const LOG_LIMIT: usize = 64 << 10;

/// The engine settings: fuel for deterministic CPU limits, canonical NaNs and deterministic
/// relaxed SIMD so results never depend on the machine.
pub fn engine() -> wasmtime::Result<Engine> {
    let mut c = Config::new();
    c.consume_fuel(true);
    c.max_wasm_stack(512 << 10);
    c.cranelift_nan_canonicalization(true);
    c.relaxed_simd_deterministic(true);
    // Reserve only what a plugin may use, not wasmtime's multi-GiB default per memory: the
    // pool below stays a few hundred MiB of address space, fine under `ulimit -v` too.
    c.memory_reservation(MEMORY_LIMIT as u64);
    c.memory_guard_size(64 << 10);
    c.memory_reservation_for_growth(0);
    // Plugins' data segments are a few KiB: copying them into a pooled slot is cheaper than
    // mapping a copy-on-write image per instance and unmapping it after (measured).
    c.memory_init_cow(false);
    if pooling() {
        // Instances come from a few pre-reserved slots that are reset, not unmapped, between
        // calls: a fresh instance per call then costs no mmap/munmap, which otherwise
        // dominated a call (94 µs → 31–54 µs on the 2-core VM; see scripts/bench-plugins).
        // Tables are kept resident (wiped in place), memories are decommitted.
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 8)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS * 8)
            .max_memories_per_component(1)
            .max_memory_size(MEMORY_LIMIT)
            .table_keep_resident(256 << 10);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&c)
}

/// Whether instances come from the pooling allocator (`MODELBAKE_PLUGIN_POOLING=0` turns it
/// off, for comparisons).
fn pooling() -> bool {
    std::env::var("MODELBAKE_PLUGIN_POOLING").map_or(true, |v| v != "0")
}

/// One line a plugin logged.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// The text.
    pub message: String,
}

/// Per-call state: limits, logs, and whether a memory grow was refused.
pub struct HostState {
    limits: StoreLimits,
    /// What the plugin logged during the call.
    pub logs: Vec<LogLine>,
    log_bytes: usize,
    /// `(had, asked)` bytes when the memory cap refused a grow.
    pub refused_grow: Option<(usize, usize)>,
    plugin: String,
}

impl HostState {
    fn new(plugin: &str) -> Self {
        HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(MEMORY_LIMIT)
                .memories(1)
                .tables(16)
                .table_elements(200_000)
                .instances(64)
                .trap_on_grow_failure(true)
                .build(),
            logs: Vec::new(),
            log_bytes: 0,
            refused_grow: None,
            plugin: plugin.to_owned(),
        }
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MEMORY_LIMIT {
            self.refused_grow = Some((current, desired));
        }
        self.limits.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }
    fn tables(&self) -> usize {
        self.limits.tables()
    }
    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_bytes >= LOG_LIMIT {
            return;
        }
        self.log_bytes += message.len();
        let message = crate::ui::clean(&message);
        let message = if self.log_bytes >= LOG_LIMIT {
            format!(
                "{}… (log truncated: plugins may log {LOG_LIMIT} bytes per call)",
                truncate(&message, 200)
            )
        } else {
            message
        };
        let plugin = &self.plugin;
        match level {
            Level::Error | Level::Warn => tracing::warn!("plugin `{plugin}`: {message}"),
            Level::Info => tracing::info!("plugin `{plugin}`: {message}"),
            Level::Debug => tracing::debug!("plugin `{plugin}`: {message}"),
        }
        self.logs.push(LogLine { level, message });
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A fresh store for one call, with `items` sizing its fuel.
pub fn store(engine: &Engine, plugin: &str, items: usize) -> wasmtime::Result<Store<HostState>> {
    let mut store = Store::new(engine, HostState::new(plugin));
    store.limiter(|s| s as &mut dyn ResourceLimiter);
    store.set_fuel(fuel_for(items))?;
    Ok(store)
}

/// The fuel a call over `items` inputs gets.
pub fn fuel_for(items: usize) -> u64 {
    FUEL_BASE
        .saturating_add(FUEL_PER_ITEM.saturating_mul(items as u64))
        .min(FUEL_MAX)
}
