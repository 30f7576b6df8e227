//! The viewer's drawing backend: plotters' [`CanvasBackend`] with three
//! shortcuts that keep a redraw within a frame (issue 14; the times are
//! printed by tests/report_browser.rs). The charts are the same functions
//! that draw the report's SVG; only the way their drawing reaches the
//! canvas changes, never a pixel (checked canvas for canvas against
//! plotters-canvas alone, on the browser tests' reports and the synthetic
//! default- and 70B-sized ones, when this was written).
//!
//! - **Cells as one image.** Opaque filled rectangles (heatmap and
//!   similarity cells, colour bars, bars) are collected ([`FillBatch`])
//!   until anything else is drawn, then drawn as one image when they are
//!   many and small (a 70B-sized similarity panel: 8,000 cells of a few
//!   pixels) instead of one `fillStyle` + `fillRect` call from wasm each,
//!   and as before when they are few and large (an image costs by the
//!   pixel). The image has the pixels `fillRect` paints at plotters'
//!   integer corners. Cells tile their box, so the image simply replaces
//!   the canvas's pixels there (`putImageData`); an image with gaps goes
//!   through an offscreen canvas and `drawImage`, so that its transparent
//!   pixels leave the canvas as it was.
//! - **Strokes set once.** A run of lines of one style sets the colour and
//!   width once, not once a line.
//! - **Text measured without a layout.** In the browser, plotters measures
//!   a label by adding a `<span>` to the page and reading its size, which
//!   lays out the page (about 0.3 to 1 ms, some 40 labels per redraw).
//!   Here the width comes from the canvas's `measureText`, the very
//!   measure of the text `fillText` draws, and the height, which depends
//!   on the font alone, from plotters' way once per font ([`TextHeights`]).

use std::cell::RefCell;
use std::collections::HashMap;

use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};
use plotters_canvas::CanvasBackend;
use wasm_bindgen::{Clamped, JsCast, JsValue};
use web_sys::{CanvasRenderingContext2d, Document, HtmlCanvasElement, ImageData};

use crate::fill_batch::{FillBatch, Pending};

/// A font as plotters describes it to the browser: family, style, size.
type Font = (String, String, u64);

/// The height of a line of text in each font measured so far.
#[derive(Debug, Default)]
pub(crate) struct TextHeights(RefCell<HashMap<Font, u32>>);

/// What the backend keeps between canvases: the text heights, and the
/// offscreen canvas that images with gaps go through and text is measured
/// on.
#[derive(Debug, Default)]
pub(crate) struct Reusable {
    text_heights: TextHeights,
    offscreen: Option<(HtmlCanvasElement, CanvasRenderingContext2d)>,
}

/// Why drawing on the canvas failed.
#[derive(Debug)]
pub(crate) struct CanvasError(String);

impl std::fmt::Display for CanvasError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "canvas: {}", self.0)
    }
}

impl std::error::Error for CanvasError {}

type Result<T = ()> = std::result::Result<T, DrawingErrorKind<CanvasError>>;

/// plotters-canvas's error, whose type it does not export, as ours.
fn inner<T, E: std::error::Error + Send + Sync>(
    result: std::result::Result<T, DrawingErrorKind<E>>,
) -> Result<T> {
    result.map_err(|e| match e {
        DrawingErrorKind::DrawingError(e) => {
            DrawingErrorKind::DrawingError(CanvasError(e.to_string()))
        }
        DrawingErrorKind::FontError(e) => DrawingErrorKind::FontError(e),
    })
}

fn js(what: &str) -> impl Fn(JsValue) -> DrawingErrorKind<CanvasError> + '_ {
    move |e| {
        let detail = e
            .as_string()
            .or_else(|| js_sys::JSON::stringify(&e).ok().map(String::from));
        DrawingErrorKind::DrawingError(CanvasError(format!(
            "{what} failed: {}",
            detail.unwrap_or_default()
        )))
    }
}

fn context_2d(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok()??.dyn_into().ok()
}

/// A canvas being drawn (see the module docs).
pub(crate) struct Canvas<'a> {
    inner: CanvasBackend,
    context: CanvasRenderingContext2d,
    offscreen: HtmlCanvasElement,
    offscreen_context: CanvasRenderingContext2d,
    batch: FillBatch,
    /// The stroke colour and width last set by this backend's own lines;
    /// `None` once plotters-canvas may have set others.
    stroke: Option<((u8, u8, u8), u64, u32)>,
    text_heights: &'a TextHeights,
}

impl<'a> Canvas<'a> {
    /// The backend of `canvas`, or `None` if it (or the offscreen canvas,
    /// made once from `document`) has no 2D context.
    pub fn new(
        canvas: HtmlCanvasElement,
        document: &Document,
        reusable: &'a mut Reusable,
    ) -> Option<Canvas<'a>> {
        let context = context_2d(&canvas)?;
        if reusable.offscreen.is_none() {
            let offscreen: HtmlCanvasElement =
                document.create_element("canvas").ok()?.dyn_into().ok()?;
            let offscreen_context = context_2d(&offscreen)?;
            reusable.offscreen = Some((offscreen, offscreen_context));
        }
        let (offscreen, offscreen_context) = reusable.offscreen.clone()?;
        let batch = FillBatch::new(canvas.width(), canvas.height());
        let inner = CanvasBackend::with_canvas_object(canvas)?;
        Some(Canvas {
            inner,
            context,
            offscreen,
            offscreen_context,
            batch,
            stroke: None,
            text_heights: &reusable.text_heights,
        })
    }

    /// Sets the stroke as plotters-canvas does, unless it is set already.
    fn set_stroke(&mut self, style: &impl BackendStyle) {
        let colour = style.color();
        let stroke = (colour.rgb, colour.alpha.to_bits(), style.stroke_width());
        if self.stroke == Some(stroke) {
            return;
        }
        let (r, g, b) = colour.rgb;
        self.context
            .set_stroke_style_str(&format!("rgba({r},{g},{b},{})", colour.alpha));
        self.context.set_line_width(f64::from(stroke.2));
        self.stroke = Some(stroke);
    }

    /// Draws the pending rectangles onto the canvas.
    fn flush(&mut self) -> Result {
        let patch = match self.batch.take() {
            None => return Ok(()),
            Some(Pending::Rectangles(fills)) => {
                for fill in fills {
                    let colour = BackendColor {
                        alpha: 1.0,
                        rgb: fill.rgb,
                    };
                    inner(self.inner.draw_rect(fill.from, fill.to, &colour, true))?;
                }
                return Ok(());
            }
            Some(Pending::Image(patch)) => patch,
        };
        let image = ImageData::new_with_u8_clamped_array_and_sh(
            Clamped(&patch.rgba),
            patch.width,
            patch.height,
        )
        .map_err(js("ImageData"))?;
        if patch.opaque {
            // Nothing of the canvas shows through: replace its pixels.
            return self
                .context
                .put_image_data(&image, f64::from(patch.x), f64::from(patch.y))
                .map_err(js("putImageData"));
        }
        let (offscreen, offscreen_context) = (&self.offscreen, &self.offscreen_context);
        // It only grows: resizing clears it, and every patch is put at its
        // corner and copied from there.
        if offscreen.width() < patch.width || offscreen.height() < patch.height {
            offscreen.set_width(offscreen.width().max(patch.width));
            offscreen.set_height(offscreen.height().max(patch.height));
        }
        offscreen_context
            .put_image_data(&image, 0.0, 0.0)
            .map_err(js("putImageData"))?;
        let (w, h) = (f64::from(patch.width), f64::from(patch.height));
        self.context
            .draw_image_with_html_canvas_element_and_sw_and_sh_and_dx_and_dy_and_dw_and_dh(
                offscreen,
                0.0,
                0.0,
                w,
                h,
                f64::from(patch.x),
                f64::from(patch.y),
                w,
                h,
            )
            .map_err(js("drawImage"))
    }
}

/// Every drawing call but an opaque fill draws what is pending first, so
/// that the order of the drawing is kept. Lines are drawn here rather than
/// by plotters-canvas only to set their stroke once for a run of lines of
/// one style (the axes' ticks, a curve's segments) instead of for each:
/// every setting is a colour string from wasm for the canvas to parse.
impl DrawingBackend for Canvas<'_> {
    type ErrorType = CanvasError;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result {
        inner(self.inner.ensure_prepared())
    }

    fn present(&mut self) -> Result {
        self.flush()?;
        inner(self.inner.present())
    }

    fn draw_pixel(&mut self, point: BackendCoord, colour: BackendColor) -> Result {
        if colour.alpha >= 1.0 {
            self.batch
                .fill(point, (point.0 + 1, point.1 + 1), colour.rgb);
            return Ok(());
        }
        self.flush()?;
        inner(self.inner.draw_pixel(point, colour))
    }

    /// As plotters-canvas draws a line (horizontal and vertical ones moved
    /// half a pixel, so that a 1-pixel line covers whole pixels), setting
    /// the stroke only when it changes.
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result {
        if style.color().alpha == 0.0 {
            return Ok(());
        }
        self.flush()?;
        let (mut from, mut to) = (
            (f64::from(from.0), f64::from(from.1)),
            (f64::from(to.0), f64::from(to.1)),
        );
        if from.0 == to.0 {
            from.0 -= 0.5;
            to.0 -= 0.5;
        }
        if from.1 == to.1 {
            from.1 -= 0.5;
            to.1 -= 0.5;
        }
        self.set_stroke(style);
        self.context.begin_path();
        self.context.move_to(from.0, from.1);
        self.context.line_to(to.0, to.1);
        self.context.stroke();
        Ok(())
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result {
        let colour = style.color();
        if fill && colour.alpha >= 1.0 {
            self.batch.fill(upper_left, bottom_right, colour.rgb);
            return Ok(());
        }
        self.flush()?;
        if !fill {
            self.stroke = None;
        }
        inner(self.inner.draw_rect(upper_left, bottom_right, style, fill))
    }

    /// As plotters-canvas draws a path, setting the stroke only when it
    /// changes.
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result {
        if style.color().alpha == 0.0 {
            return Ok(());
        }
        self.flush()?;
        let mut path = path.into_iter();
        self.context.begin_path();
        if let Some(start) = path.next() {
            self.set_stroke(style);
            self.context.move_to(f64::from(start.0), f64::from(start.1));
            for next in path {
                self.context.line_to(f64::from(next.0), f64::from(next.1));
            }
        }
        self.context.stroke();
        Ok(())
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result {
        self.flush()?;
        if !fill {
            self.stroke = None;
        }
        inner(self.inner.draw_circle(center, radius, style, fill))
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result {
        self.flush()?;
        inner(self.inner.fill_polygon(vert, style))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result {
        self.flush()?;
        inner(self.inner.draw_text(text, style, pos))
    }

    fn estimate_text_size<S: BackendTextStyle>(&self, text: &str, style: &S) -> Result<(u32, u32)> {
        // An empty span has no line, so no height.
        if text.is_empty() {
            return Ok((0, 0));
        }
        let family = style.family().as_str().to_string();
        let font_style = style.style().as_str().to_string();
        // The font as plotters-canvas sets it for `fillText`.
        let css = format!("{font_style} {}px {family}", style.size());
        let font = (family, font_style, style.size().to_bits());
        let known = self.text_heights.0.borrow().get(&font).copied();
        let height = match known {
            Some(height) => height,
            None => {
                let (_, height) = inner(self.inner.estimate_text_size(text, style))?;
                self.text_heights.0.borrow_mut().insert(font, height);
                height
            }
        };
        self.offscreen_context.set_font(&css);
        let width = self
            .offscreen_context
            .measure_text(text)
            .map_err(js("measureText"))?
            .width();
        // What the span's offsetWidth would read: the width in Chromium's
        // layout units (1/64 px, rounded up), rounded to whole pixels. The
        // same as the span on 160 labels × 8 sizes in headless Chromium.
        let width = ((width * 64.0).ceil() / 64.0).round();
        Ok((width.max(0.0) as u32, height))
    }
}
