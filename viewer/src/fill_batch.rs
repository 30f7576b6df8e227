//! Opaque filled rectangles collected for the viewer's canvas backend
//! (`web/canvas.rs`), which draws them either as one image or, when that
//! would cost more, one `fillRect` each.
//!
//! Each call from wasm into the canvas (a colour string to format and
//! parse, then the fill) costs about a microsecond and a half in headless
//! Chromium, and an image about 10 to 20 ns per pixel (painted here, copied
//! to JavaScript, `putImageData`). So the cells of a 70B-sized similarity
//! panel (about 8,000 of 5 pixels each) are one image, and the 270 cells of
//! the default report's heatmap (1,000 pixels each) stay rectangles:
//! [`FillBatch::take`] chooses by [`PIXELS_PER_CALL`].
//!
//! An image has exactly the pixels `fillRect(x, y, w, h)` paints for the
//! integer corners plotters gives: columns `min(x0, x1)..max(x0, x1)` and
//! the same for rows, clipped to the canvas, later rectangles over earlier
//! ones. It is the smallest box holding them, as RGBA: alpha 255 where
//! painted, 0 elsewhere, so that drawing it over the canvas leaves the rest
//! as it was; and it says whether every pixel is painted (cells tiling a
//! plot), so that it can simply replace the canvas's pixels, which is
//! cheaper still.
//!
//! Pure Rust, so that it is tested natively; the canvas only sees the result.

/// The image's pixels that cost as much as one `fillRect` call: about
/// 1.5 µs a call and 15 ns a pixel in headless Chromium on a 2-core
/// machine, from its profiler on the redraw benchmark of
/// tests/report_browser.rs.
pub(crate) const PIXELS_PER_CALL: u64 = 100;

/// A filled rectangle: pixels `from.0..to.0` × `from.1..to.1`, in `rgb`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    pub from: (i32, i32),
    pub to: (i32, i32),
    pub rgb: (u8, u8, u8),
}

/// Pending rectangles as one image, to be drawn with its top-left corner at
/// (`x`, `y`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patch {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// RGBA, row-major, `width * height * 4` bytes.
    pub rgba: Vec<u8>,
    /// Whether every pixel of the box is painted, so that the patch can
    /// replace the canvas's pixels there instead of being drawn over them.
    pub opaque: bool,
}

/// How the pending rectangles are best drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pending {
    /// One `fillRect` each, in order (large rectangles: fewer calls than
    /// pixels are worth).
    Rectangles(Vec<Fill>),
    /// One image.
    Image(Patch),
}

/// Pending rectangles of one canvas (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct FillBatch {
    width: u32,
    height: u32,
    fills: Vec<Fill>,
    /// The box holding every pending pixel: `[x0, y0, x1, y1)`.
    dirty: Option<[u32; 4]>,
}

impl FillBatch {
    /// A batch for a canvas of `width` × `height` pixels.
    pub fn new(width: u32, height: u32) -> FillBatch {
        FillBatch {
            width,
            height,
            ..FillBatch::default()
        }
    }

    /// Adds the rectangle with corners `from` and `to` in `rgb`, as
    /// `fillRect(from.0, from.1, to.0 - from.0, to.1 - from.1)` paints it.
    pub fn fill(&mut self, from: (i32, i32), to: (i32, i32), rgb: (u8, u8, u8)) {
        let clip = |v: i32, max: u32| v.clamp(0, max.min(i32::MAX as u32) as i32);
        let (x0, x1) = (from.0.min(to.0), from.0.max(to.0));
        let (y0, y1) = (from.1.min(to.1), from.1.max(to.1));
        let (x0, x1) = (clip(x0, self.width), clip(x1, self.width));
        let (y0, y1) = (clip(y0, self.height), clip(y1, self.height));
        if x0 == x1 || y0 == y1 {
            return;
        }
        self.fills.push(Fill {
            from: (x0, y0),
            to: (x1, y1),
            rgb,
        });
        let [x0, y0, x1, y1] = [x0, y0, x1, y1].map(|v| v as u32);
        self.dirty = Some(match self.dirty {
            None => [x0, y0, x1, y1],
            Some([a0, b0, a1, b1]) => [a0.min(x0), b0.min(y0), a1.max(x1), b1.max(y1)],
        });
    }

    /// The pending rectangles, drawn the cheaper way, or `None` when
    /// nothing is pending; afterwards nothing is.
    pub fn take(&mut self) -> Option<Pending> {
        let [x0, y0, x1, y1] = self.dirty.take()?;
        let fills = std::mem::take(&mut self.fills);
        let (width, height) = (x1 - x0, y1 - y0);
        let pixels = u64::from(width) * u64::from(height);
        if pixels > fills.len() as u64 * PIXELS_PER_CALL {
            return Some(Pending::Rectangles(fills));
        }
        let stride = width as usize * 4;
        let mut rgba = vec![0u8; stride * height as usize];
        let mut area = 0u64;
        for fill in &fills {
            let (left, top) = (
                fill.from.0 as usize - x0 as usize,
                fill.from.1 as usize - y0 as usize,
            );
            let (right, bottom) = (
                fill.to.0 as usize - x0 as usize,
                fill.to.1 as usize - y0 as usize,
            );
            area += ((right - left) * (bottom - top)) as u64;
            let (r, g, b) = fill.rgb;
            // The first row pixel by pixel, the others copies of it.
            let first = top * stride;
            for p in rgba[first + left * 4..first + right * 4].chunks_exact_mut(4) {
                p.copy_from_slice(&[r, g, b, 255]);
            }
            for row in top + 1..bottom {
                rgba.copy_within(first + left * 4..first + right * 4, row * stride + left * 4);
            }
        }
        // Overlaps count twice in `area`: look when it might be whole.
        let opaque = area >= pixels && rgba.iter().skip(3).step_by(4).all(|&a| a == 255);
        Some(Pending::Image(Patch {
            x: x0,
            y: y0,
            width,
            height,
            rgba,
            opaque,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RED: (u8, u8, u8) = (213, 94, 0);
    const BLUE: (u8, u8, u8) = (0, 114, 178);

    fn image(batch: &mut FillBatch) -> Patch {
        match batch.take() {
            Some(Pending::Image(patch)) => patch,
            other => panic!("expected an image, got {other:?}"),
        }
    }

    fn pixel(patch: &Patch, x: u32, y: u32) -> [u8; 4] {
        let i = ((y - patch.y) * patch.width + (x - patch.x)) as usize * 4;
        patch.rgba[i..i + 4].try_into().expect("four bytes")
    }

    #[test]
    fn small_rectangles_become_one_image_with_the_pixels_fill_rect_paints() {
        let mut batch = FillBatch::new(10, 8);
        assert_eq!(batch.take(), None);
        // fillRect(2, 1, 2, 2): columns 2..4, rows 1..3; corners in either order.
        batch.fill((4, 3), (2, 1), RED);
        batch.fill((5, 4), (7, 6), BLUE);
        let patch = image(&mut batch);
        assert_eq!((patch.x, patch.y, patch.width, patch.height), (2, 1, 5, 5));
        assert_eq!(patch.rgba.len(), 5 * 5 * 4);
        assert_eq!(pixel(&patch, 2, 1), [213, 94, 0, 255]);
        assert_eq!(pixel(&patch, 3, 2), [213, 94, 0, 255]);
        assert_eq!(pixel(&patch, 4, 2), [0, 0, 0, 0], "right edge excluded");
        assert_eq!(pixel(&patch, 6, 5), [0, 114, 178, 255]);
        assert_eq!(pixel(&patch, 6, 3), [0, 0, 0, 0], "between the two");
        assert!(!patch.opaque, "gaps between the rectangles");
        // A later rectangle covers an earlier one, as on the canvas.
        batch.fill((0, 0), (3, 3), RED);
        batch.fill((1, 1), (2, 2), BLUE);
        let patch = image(&mut batch);
        assert_eq!(pixel(&patch, 1, 1), [0, 114, 178, 255]);
        assert_eq!(pixel(&patch, 0, 0), [213, 94, 0, 255]);
        assert!(patch.opaque, "the second lies inside the first");
        assert_eq!(batch.take(), None, "taken once");
        // Cells that tile their box, as a heatmap's do.
        for (x, y) in [(0, 0), (3, 0), (0, 2), (3, 2)] {
            batch.fill((x, y), (x + 3, y + 2), BLUE);
        }
        let patch = image(&mut batch);
        assert!(patch.opaque && (patch.width, patch.height) == (6, 4));
    }

    #[test]
    fn rectangles_are_clipped_to_the_canvas_and_empty_ones_paint_nothing() {
        let mut batch = FillBatch::new(4, 4);
        batch.fill((2, 2), (2, 9), RED);
        batch.fill((-5, 1), (-1, 3), RED);
        assert_eq!(batch.take(), None);
        batch.fill((-3, -3), (9, 1), BLUE);
        let patch = image(&mut batch);
        assert_eq!((patch.x, patch.y, patch.width, patch.height), (0, 0, 4, 1));
    }

    #[test]
    fn large_rectangles_stay_rectangles() {
        let mut batch = FillBatch::new(800, 400);
        // A background, then a heatmap's 2 cells of 350 × 300 pixels.
        batch.fill((0, 0), (800, 400), (255, 255, 255));
        assert_eq!(
            batch.take(),
            Some(Pending::Rectangles(vec![Fill {
                from: (0, 0),
                to: (800, 400),
                rgb: (255, 255, 255)
            }]))
        );
        batch.fill((50, 50), (400, 350), RED);
        batch.fill((900, 50), (400, 350), BLUE);
        let Some(Pending::Rectangles(fills)) = batch.take() else {
            panic!("expected rectangles");
        };
        assert_eq!(fills[1].from, (400, 50), "clipped, in order");
        assert_eq!(fills[1].to, (800, 350));
    }
}
