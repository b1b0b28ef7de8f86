//! Logging to the host (`host.log`).
//!
//! The host buffers and caps these messages; they never change a result. The last ones are shown
//! when the plugin fails. Outside wasm32 (unit tests on the build machine) messages go to stderr.

/// The severity of a log message (`host.level`).
pub use crate::bindings::mirror::modelbake::plugin::host::Level;

/// Sends `message` to the host's log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::mirror::modelbake::plugin::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Logs `message` at level debug.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs `message` at level info.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs `message` at level warn.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs `message` at level error.
pub fn error(message: &str) {
    log(Level::Error, message)
}
