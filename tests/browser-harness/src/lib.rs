//! Test support for driving headless Chromium from Rust tests.
//!
//! - [`cdp`]: launch Chromium and control pages over the DevTools Protocol.
//! - [`serve`]: a static file server on 127.0.0.1 for the pages under test.
//!
//! The engine's browser tests (`tests/report_browser.rs`) depend on it.
//!
//! Tests use [`browser_or_skip`]: without Chromium they print a notice and
//! pass, unless `REQUIRE_BROWSER=1` is set, which makes them fail instead.
//! Its own tests: `REQUIRE_BROWSER=1 cargo test --release -p browser-harness`.

pub mod cdp;
pub mod serve;

pub use cdp::{
    browser_or_skip, browser_or_skip_with, chromium_available, find_chromium, Browser,
    HarnessError, LaunchOptions, Page, TempDir,
};
pub use serve::StaticServer;
