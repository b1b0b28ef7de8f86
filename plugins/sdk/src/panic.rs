//! The panic hook that reports panics to the host before the instance traps.

use std::sync::Once;

/// Installs, once per instance, a panic hook that sends `panicked at FILE:LINE: MESSAGE` to the
/// host's log at level error.
///
/// The export macros call this at the start of every exported function, so plugins need not.
/// With `panic = "abort"` the hook runs before the trap, so the host can show why the plugin
/// died.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                s
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.as_str()
            } else {
                "(non-string panic payload)"
            };
            let text = match info.location() {
                Some(loc) => format!("panicked at {}:{}: {message}", loc.file(), loc.line()),
                None => format!("panicked: {message}"),
            };
            crate::log::error(&text);
        }));
    });
}
