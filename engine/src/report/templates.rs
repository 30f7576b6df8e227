//! The report's templates (minijinja, in the repository's `templates/`),
//! embedded at build time and overridable file by file from a folder
//! (`--templates DIR`), like mdBook's themes.
//!
//! Strict: an undefined variable fails the render instead of printing
//! nothing. HTML templates escape every value unless marked `safe` (only the
//! engine's own SVG figures and script are).

use std::path::Path;

use anyhow::Context as _;
use minijinja::{Environment, UndefinedBehavior};

use crate::errors::BadInput;

/// `(name, built-in text)` of every template.
const BUILT_IN: [(&str, &str); 4] = [
    (
        "report.html",
        include_str!("../../../templates/report.html"),
    ),
    ("site.html", include_str!("../../../templates/site.html")),
    ("style.css", include_str!("../../../templates/style.css")),
    ("report.js", include_str!("../../../templates/report.js")),
];

#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    script: String,
}

impl Templates {
    /// The built-in templates, with any file of the same name in `dir`
    /// taking precedence.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Templates> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut script = String::new();
        for (name, text) in BUILT_IN {
            let text = match dir.map(|d| d.join(name)).filter(|p| p.exists()) {
                Some(path) => std::fs::read_to_string(&path).map_err(|e| {
                    BadInput(format!(
                        "cannot read the template `{}`: {e}",
                        path.display()
                    ))
                })?,
                None => text.to_string(),
            };
            if name == "report.js" {
                script = text.clone();
            }
            env.add_template_owned(name.to_string(), text)
                .map_err(|e| BadInput(format!("the template `{name}` is not valid: {e}")))?;
        }
        Ok(Templates { env, script })
    }

    fn render(&self, name: &str, context: &serde_json::Value) -> anyhow::Result<String> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(minijinja::value::Serde(context)))
            .with_context(|| format!("cannot render the template `{name}`"))
    }

    pub fn render_report(&self, context: &serde_json::Value) -> anyhow::Result<String> {
        self.render("report.html", context)
    }

    pub fn render_site(&self, context: &serde_json::Value) -> anyhow::Result<String> {
        self.render("site.html", context)
    }

    /// The explorer's script (defines `start` and `decodeBase64`), for
    /// inlining after the wasm-bindgen glue.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// The explorer as an external module next to `viewer.js`.
    pub fn script_module(&self) -> String {
        format!(
            "import init, {{ Viewer }} from \"./viewer.js\";\n{}\nstart({{ init: (bytes) => init({{ module_or_path: bytes }}), Viewer, wasmUrl: \"viewer_bg.wasm\", bundleUrl: \"{}\" }});\n",
            self.script,
            viewer::bundle::FILE_NAME
        )
    }
}
