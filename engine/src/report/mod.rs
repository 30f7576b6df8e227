//! Publishing: the bundle, the static HTML report with its figures, the
//! single-file report and the site index.

pub mod bundle;
pub mod render;
pub mod site;
pub mod templates;

pub use bundle::{build_bundle, read_bundle, write_bundle, Provenance};
pub use render::{render_report, RenderOptions, Rendered};
pub use site::write_site;
