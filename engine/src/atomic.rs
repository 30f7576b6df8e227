//! Writing files so that a reader never sees half of one: write to a
//! temporary file in the same folder, flush it to disk, then rename.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// Writes `path` through `write`; on any error the old file (if any) is left
/// untouched, the temporary file is removed, and the error names `path`.
pub fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&temporary)?);
        let value = write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        Ok(value)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        explain(path, e)
    })
}

/// The error of a failed write, naming the file, and for a full disk (or a
/// file-size or quota limit) what to do.
fn explain(path: &Path, e: std::io::Error) -> std::io::Error {
    // ENOSPC, EFBIG, EDQUOT on Linux.
    let full = matches!(e.raw_os_error(), Some(28 | 27 | 122));
    let hint = if full {
        " — the disk is full (or a file-size or quota limit was reached): free some space and run the same command again; nothing already written was lost"
    } else {
        ""
    };
    std::io::Error::new(
        e.kind(),
        format!("cannot write `{}`: {e}{hint}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = std::env::temp_dir().join(format!("engine-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("out.txt");
        std::fs::write(&path, "old").expect("seed file");
        let result = write_atomically(&path, |w| {
            w.write_all(b"new, but")?;
            Err::<(), _>(std::io::Error::other("disk full"))
        });
        assert!(result.is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "old");
        assert_eq!(
            std::fs::read_dir(&dir).expect("list").count(),
            1,
            "no temporary file is left behind"
        );
        write_atomically(&path, |w| w.write_all(b"new")).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
