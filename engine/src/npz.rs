//! A minimal, deterministic writer for NumPy `.npz` archives.
//!
//! An `.npz` file is a zip archive of `.npy` files (NumPy's format
//! specification, version 1.0). We store entries uncompressed and with a fixed
//! timestamp so that the same arrays always give the same bytes, and we mark an
//! entry as zip64 when it is over 4 GiB (a full capture of a 70B model is).

use std::io::{Seek, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

/// One array of an `.npz` archive, borrowed from its owner.
#[derive(Debug, Clone, Copy)]
pub enum NpyArray<'a> {
    F32 {
        shape: &'a [usize],
        data: &'a [f32],
    },
    I32 {
        shape: &'a [usize],
        data: &'a [i32],
    },
    /// A 1-D array of strings, stored as NumPy's fixed-width UTF-32 (`<U{n}`).
    Str {
        data: &'a [String],
    },
}

impl NpyArray<'_> {
    fn header(&self) -> String {
        let (descr, shape) = match self {
            NpyArray::F32 { shape, .. } => ("<f4".to_string(), shape.to_vec()),
            NpyArray::I32 { shape, .. } => ("<i4".to_string(), shape.to_vec()),
            NpyArray::Str { data } => (format!("<U{}", max_chars(data)), vec![data.len()]),
        };
        let shape = match shape.as_slice() {
            [n] => format!("({n},)"),
            dims => format!(
                "({})",
                dims.iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // Magic (6) + version (2) + header length (2) + header + '\n' must be a
        // multiple of 64, padded with spaces (format spec, version 1.0).
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        header.push('\n');
        header
    }

    fn payload_len(&self) -> u64 {
        match self {
            NpyArray::F32 { data, .. } => 4 * data.len() as u64,
            NpyArray::I32 { data, .. } => 4 * data.len() as u64,
            NpyArray::Str { data } => 4 * (max_chars(data) * data.len()) as u64,
        }
    }

    fn check_shape(&self, name: &str) -> std::io::Result<()> {
        let (shape, len) = match self {
            NpyArray::F32 { shape, data } => (*shape, data.len()),
            NpyArray::I32 { shape, data } => (*shape, data.len()),
            NpyArray::Str { .. } => return Ok(()),
        };
        if shape.iter().product::<usize>() == len {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "array `{name}` has {len} values but its shape {shape:?} needs {}",
                    shape.iter().product::<usize>()
                ),
            ))
        }
    }

    fn write_npy(&self, out: &mut impl Write) -> std::io::Result<()> {
        let header = self.header();
        out.write_all(b"\x93NUMPY\x01\x00")?;
        let header_len = u16::try_from(header.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "npy header over 64 KiB")
        })?;
        out.write_all(&header_len.to_le_bytes())?;
        out.write_all(header.as_bytes())?;
        // Write in chunks: one `write_all` per value is slow, one giant buffer
        // would double the memory of a full capture.
        const CHUNK: usize = 1 << 16;
        let mut buf = Vec::with_capacity(CHUNK * 4);
        match self {
            NpyArray::F32 { data, .. } => {
                for chunk in data.chunks(CHUNK) {
                    buf.clear();
                    chunk
                        .iter()
                        .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
                    out.write_all(&buf)?;
                }
            }
            NpyArray::I32 { data, .. } => {
                for chunk in data.chunks(CHUNK) {
                    buf.clear();
                    chunk
                        .iter()
                        .for_each(|v| buf.extend_from_slice(&v.to_le_bytes()));
                    out.write_all(&buf)?;
                }
            }
            NpyArray::Str { data } => {
                let width = max_chars(data);
                for s in data.iter() {
                    buf.clear();
                    let mut n = 0;
                    for c in s.chars() {
                        buf.extend_from_slice(&(c as u32).to_le_bytes());
                        n += 1;
                    }
                    buf.resize(buf.len() + 4 * (width - n), 0);
                    out.write_all(&buf)?;
                }
            }
        }
        Ok(())
    }
}

fn max_chars(data: &[String]) -> usize {
    data.iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        .max(1)
}

/// Writes `arrays` as an `.npz` archive to `out`, in the order given.
pub fn write_npz<W: Write + Seek>(out: W, arrays: &[(&str, NpyArray<'_>)]) -> std::io::Result<W> {
    let mut zip = ZipWriter::new(out);
    for (name, array) in arrays {
        array.check_shape(name)?;
        let size = array.payload_len() + 4096;
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .last_modified_time(DateTime::default())
            .unix_permissions(0o644)
            .large_file(size >= u64::from(u32::MAX));
        zip.start_file(format!("{name}.npy"), options)?;
        array.write_npy(&mut zip)?;
    }
    zip.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_padded_to_64_bytes() {
        let shape = [2, 3];
        let data = [0.0f32; 6];
        let header = NpyArray::F32 {
            shape: &shape,
            data: &data,
        }
        .header();
        assert_eq!((10 + header.len()) % 64, 0);
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(header.ends_with('\n'));
    }

    #[test]
    fn one_dimensional_shape_has_trailing_comma() {
        let header = NpyArray::I32 {
            shape: &[4],
            data: &[1, 2, 3, 4],
        }
        .header();
        assert!(header.contains("'shape': (4,)"));
    }

    #[test]
    fn same_arrays_give_same_bytes() {
        let strings = vec!["a".to_string(), "héllo".to_string()];
        let write = || {
            let arrays = [
                (
                    "x",
                    NpyArray::F32 {
                        shape: &[2],
                        data: &[1.5, -2.0],
                    },
                ),
                ("s", NpyArray::Str { data: &strings }),
            ];
            write_npz(std::io::Cursor::new(Vec::new()), &arrays).map(std::io::Cursor::into_inner)
        };
        let (a, b) = (write().expect("write npz"), write().expect("write npz"));
        assert_eq!(a, b);
    }

    #[test]
    fn a_shape_that_does_not_fit_the_data_is_refused() {
        let arrays = [(
            "x",
            NpyArray::F32 {
                shape: &[3],
                data: &[1.0, 2.0],
            },
        )];
        let err = write_npz(std::io::Cursor::new(Vec::new()), &arrays).expect_err("must refuse");
        assert!(err.to_string().contains("array `x`"));
    }
}
