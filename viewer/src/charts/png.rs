//! The PNG export: a figure drawn by its one chart function through
//! plotters' bitmap backend, at `scale` device pixels per CSS pixel, for
//! slide decks and journals that take no SVG.
//!
//! The chart lays out in the figure's own pixels (so the PNG shows exactly
//! the SVG's layout, line breaks and all); [`Scaled`] multiplies every
//! coordinate, stroke, radius and font size on the way to the bitmap.
//! Encoding is `png` with fixed settings, so the same figure gives the same
//! bytes.

use plotters::prelude::*;
use plotters::style::{FontDesc, RGBAColor};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use super::{draw, register_font, ChartError};
use crate::figures::Figure;

/// Device pixels per figure pixel of the report's PNGs: sharp on a
/// high-density screen and at a journal's 300 dpi for a column-wide figure.
pub const PNG_SCALE: u32 = 2;

/// Renders `figure` laid out at `width` × `height` as a PNG of
/// `scale`× those pixels.
pub fn render_png(
    figure: &Figure,
    width: u32,
    height: u32,
    scale: u32,
) -> Result<Vec<u8>, ChartError> {
    register_font()?;
    let k = scale.max(1);
    let (w, h) = (width.max(1) * k, height.max(1) * k);
    let mut pixels = vec![255u8; 3 * w as usize * h as usize];
    {
        let bitmap = BitMapBackend::with_buffer(&mut pixels, (w, h));
        let root = Scaled { inner: bitmap, k }.into_drawing_area();
        draw(&root, figure)?;
        root.present()?;
    }
    let mut png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Default);
        // 72 dpi × scale: a viewer that honours it shows the figure at the
        // SVG's size.
        let dots_per_metre = (72.0 / 0.0254 * f64::from(k)).round() as u32;
        encoder.set_pixel_dims(Some(png::PixelDimensions {
            xppu: dots_per_metre,
            yppu: dots_per_metre,
            unit: png::Unit::Meter,
        }));
        let mut writer = encoder
            .write_header()
            .map_err(|e| ChartError::Drawing(format!("PNG header: {e}")))?;
        writer
            .write_image_data(&pixels)
            .map_err(|e| ChartError::Drawing(format!("PNG data: {e}")))?;
    }
    Ok(png)
}

/// A backend of `inner`'s size divided by `k`, drawing everything `k` times
/// larger on `inner`.
struct Scaled<B> {
    inner: B,
    k: u32,
}

/// A colour with a stroke width, as the backend trait takes styles.
struct Stroke {
    color: BackendColor,
    width: u32,
}

impl BackendStyle for Stroke {
    fn color(&self) -> BackendColor {
        self.color
    }
    fn stroke_width(&self) -> u32 {
        self.width
    }
}

impl<B: DrawingBackend> Scaled<B> {
    fn k(&self) -> i32 {
        self.k as i32
    }
    /// A corner of a pixel (rectangles, text anchors).
    fn corner(&self, (x, y): BackendCoord) -> BackendCoord {
        (x * self.k(), y * self.k())
    }
    /// The centre of a pixel (lines, paths, polygons, circles).
    fn centre(&self, (x, y): BackendCoord) -> BackendCoord {
        let half = self.k() / 2;
        (x * self.k() + half, y * self.k() + half)
    }
    fn stroke<S: BackendStyle>(&self, style: &S) -> Stroke {
        Stroke {
            color: style.color(),
            width: style.stroke_width() * self.k,
        }
    }
}

impl<B: DrawingBackend> DrawingBackend for Scaled<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        let (w, h) = self.inner.get_size();
        (w / self.k, h / self.k)
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (x, y) = self.corner(point);
        let k = self.k();
        self.inner
            .draw_rect((x, y), (x + k, y + k), &Stroke { color, width: 1 }, true)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (from, to, stroke) = (self.centre(from), self.centre(to), self.stroke(style));
        self.inner.draw_line(from, to, &stroke)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (a, b) = (self.corner(upper_left), self.corner(bottom_right));
        let stroke = self.stroke(style);
        if fill {
            return self.inner.draw_rect(a, b, &stroke, true);
        }
        // An outline is four filled strips as thick as the scaled stroke
        // (the bitmap backend draws outlines one pixel thick).
        let t = stroke.width.max(1) as i32;
        let fill_with = Stroke {
            color: stroke.color,
            width: 1,
        };
        for (ul, br) in [
            (a, (b.0 + t, a.1 + t)),
            ((a.0, b.1), (b.0 + t, b.1 + t)),
            (a, (a.0 + t, b.1 + t)),
            ((b.0, a.1), (b.0 + t, b.1 + t)),
        ] {
            self.inner.draw_rect(ul, br, &fill_with, true)?;
        }
        Ok(())
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let path: Vec<BackendCoord> = path.into_iter().map(|p| self.centre(p)).collect();
        let stroke = self.stroke(style);
        self.inner.draw_path(path, &stroke)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (center, stroke) = (self.centre(center), self.stroke(style));
        self.inner
            .draw_circle(center, radius * self.k, &stroke, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let vert: Vec<BackendCoord> = vert.into_iter().map(|p| self.centre(p)).collect();
        let stroke = self.stroke(style);
        self.inner.fill_polygon(vert, &stroke)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let c = style.color();
        let scaled = FontDesc::new(
            style.family(),
            style.size() * f64::from(self.k),
            style.style(),
        )
        .transform(style.transform())
        .color(&RGBAColor(c.rgb.0, c.rgb.1, c.rgb.2, c.alpha))
        .pos(style.anchor());
        let pos = self.corner(pos);
        self.inner.draw_text(text, &scaled, pos)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        (iw, ih): (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        // Nearest neighbour: each source pixel becomes a k × k block.
        let k = self.k as usize;
        let (iw, ih) = (iw as usize, ih as usize);
        let mut big = vec![0u8; 3 * iw * k * ih * k];
        for y in 0..ih * k {
            for x in 0..iw * k {
                let from = 3 * ((y / k) * iw + x / k);
                let to = 3 * (y * iw * k + x);
                if let (Some(s), Some(d)) = (src.get(from..from + 3), big.get_mut(to..to + 3)) {
                    d.copy_from_slice(s);
                }
            }
        }
        let pos = self.corner(pos);
        self.inner
            .blit_bitmap(pos, ((iw * k) as u32, (ih * k) as u32), &big)
    }
}
