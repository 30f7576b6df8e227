//! One writer per report folder: a lock file holding the writer's process
//! id. A second run on the same folder is refused with a clear message; a
//! lock left by a process that no longer exists (a crash, a killed job) is
//! taken over.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::errors::BadInput;

pub(crate) const LOCK_FILE: &str = ".engine-report.lock";

#[derive(Debug)]
pub(crate) struct ReportLock {
    path: PathBuf,
}

impl ReportLock {
    pub(crate) fn acquire(dir: &Path) -> anyhow::Result<ReportLock> {
        let path = dir.join(LOCK_FILE);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    writeln!(file, "{}", std::process::id())?;
                    return Ok(ReportLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if process_exists(pid) => {
                            return Err(BadInput(format!(
                                "another `engine report` (process {pid}) is writing to `{}`; wait for it to finish, or write elsewhere with --out",
                                dir.display()
                            ))
                            .into())
                        }
                        // Left behind by a process that is gone: take it over.
                        _ => {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => {
                    return Err(BadInput(format!(
                        "cannot write to the report folder `{}`: {e} — choose another folder with --out",
                        dir.display()
                    ))
                    .into())
                }
            }
        }
        Err(BadInput(format!(
            "cannot take the lock `{}`; remove it if no other run is writing there",
            path.display()
        ))
        .into())
    }
}

impl Drop for ReportLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a process with this id is running (Linux: /proc; elsewhere we
/// cannot tell, so assume it is, and let the user remove the lock).
fn process_exists(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}
