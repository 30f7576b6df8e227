//! The browser surface (wasm-bindgen): a [`Viewer`] holds a decoded bundle
//! and the reader's selection, and redraws the figures on canvases with the
//! same chart functions the engine uses for its SVG files, through the
//! backend in `web/canvas.rs` that keeps a redraw within a frame.
//!
//! The page's script (templates/report.js) builds the controls from
//! [`Viewer::manifest_json`], passes every change as a URL fragment, and
//! shows the numbers [`Viewer::draw`] returns.

mod canvas;

use plotters::prelude::IntoDrawingArea;
use wasm_bindgen::prelude::*;

use crate::bundle::Bundle;
use crate::view::{figures, numbers, Derived, Selection};

#[wasm_bindgen]
#[derive(Debug)]
pub struct Viewer {
    bundle: Bundle,
    selection: Selection,
    derived: Option<Derived>,
    /// What each canvas shows now: a figure whose data did not change is not
    /// redrawn (a layer change leaves the behaviour figure as it is).
    drawn: std::collections::HashMap<String, crate::figures::Figure>,
    /// What the canvas backend keeps from one redraw to the next.
    canvas: canvas::Reusable,
}

#[wasm_bindgen]
impl Viewer {
    /// Decodes a compressed bundle; a damaged or future-version file is an
    /// error whose message the page shows to the reader.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<Viewer, JsError> {
        let bundle = Bundle::decode(bytes).map_err(|e| JsError::new(&e.to_string()))?;
        let selection = Selection::default().clamp(&bundle);
        Ok(Viewer {
            bundle,
            selection,
            derived: None,
            drawn: std::collections::HashMap::new(),
            canvas: canvas::Reusable::default(),
        })
    }

    /// The manifest as JSON, for building the controls.
    pub fn manifest_json(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.bundle.manifest).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Applies a URL fragment (or a partial one such as `layer=12`) and
    /// returns the complete, clamped fragment of the new selection.
    pub fn set_fragment(&mut self, fragment: &str) -> String {
        self.selection = Selection::from_fragment(fragment, &self.selection).clamp(&self.bundle);
        self.selection.to_fragment()
    }

    /// The names of task `task`'s patching measures as the figures write
    /// them (empty when the task was not patched), for the measure control.
    pub fn patching_measure_labels(&self, task: usize) -> Vec<String> {
        let Some(task) = self.bundle.manifest.tasks.get(task) else {
            return Vec::new();
        };
        task.patching.as_ref().map_or_else(Vec::new, |p| {
            p.measures
                .iter()
                .map(|m| crate::view::measure_label(m, &task.behavior.metric))
                .collect()
        })
    }

    /// The current selection as JSON (indices), for setting the controls.
    pub fn selection_json(&self) -> Result<String, JsError> {
        serde_json::to_string(&self.selection).map_err(|e| JsError::new(&e.to_string()))
    }

    /// Redraws every figure of the selection onto the canvases with ids
    /// `{prefix}{figure}` (missing canvases are skipped) and returns the
    /// key numbers and the list of figures drawn as JSON.
    pub fn draw(&mut self, prefix: &str) -> Result<String, JsError> {
        let derived = Derived::for_selection(&self.bundle, &self.selection, self.derived.take())
            .map_err(|e| JsError::new(&e.to_string()))?;
        let drawn = figures(&self.bundle, &derived, &self.selection)
            .map_err(|e| JsError::new(&e.to_string()))?;
        let document = web_sys::window()
            .and_then(|w| w.document())
            .ok_or_else(|| JsError::new("no document to draw in"))?;
        let mut names = Vec::new();
        for (name, figure) in &drawn {
            let id = format!("{prefix}{name}");
            names.push(*name);
            if self.drawn.get(&id) == Some(figure) {
                continue;
            }
            let Some(element) = document.get_element_by_id(&id) else {
                continue;
            };
            let canvas: web_sys::HtmlCanvasElement = element
                .dyn_into()
                .map_err(|_| JsError::new(&format!("`{prefix}{name}` is not a canvas")))?;
            let (width, height) = crate::charts::figure_size(figure);
            // Setting a size clears the canvas even when it is the same, and
            // marks the page for a new layout; the figure fills its whole
            // area first anyway.
            if (canvas.width(), canvas.height()) != (width, height) {
                canvas.set_width(width);
                canvas.set_height(height);
            }
            let backend = canvas::Canvas::new(canvas, &document, &mut self.canvas)
                .ok_or_else(|| JsError::new("the canvas has no 2D context"))?;
            let area = backend.into_drawing_area();
            crate::charts::draw(&area, figure).map_err(|e| JsError::new(&e.to_string()))?;
            area.present().map_err(|e| JsError::new(&e.to_string()))?;
            self.drawn.insert(id, figure.clone());
        }
        let numbers = numbers(&self.bundle, &derived, &self.selection)
            .map_err(|e| JsError::new(&e.to_string()))?;
        self.derived = Some(derived);
        serde_json::to_string(&serde_json::json!({ "numbers": numbers, "figures": names }))
            .map_err(|e| JsError::new(&e.to_string()))
    }
}
