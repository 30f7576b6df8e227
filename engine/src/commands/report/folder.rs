//! The report folder, and whose files are in it. The engine replaces or
//! removes only files it wrote: the run record (`run.json`) lists every file
//! of the report with its SHA-256, and a file counts as the engine's only
//! while its bytes are the ones recorded. The rules (README, "Whose files
//! are whose"):
//!
//! - A folder is a report folder when its `run.json` is the engine's run
//!   record. A missing or empty folder becomes one (the run writes its
//!   record first thing). Any other folder is refused; with `--force` the
//!   report is written beside its files.
//! - A file at a path the report writes is replaced only when the engine
//!   wrote it and it is unchanged since. Otherwise the run stops, naming the
//!   file: before any model work for the paths every report has
//!   ([`PAGES`]), before moving anything for the rest (figures, tables).
//! - A file of the previous run that this run does not write again (a
//!   figure that no longer exists) is removed when unchanged, and kept with
//!   one line when it was edited (it is the user's from then on).
//! - `cache/`, `shards/`, `.incoming/` and the lock file are the engine's
//!   own in a report folder; in someone else's folder they must not exist.
//!
//! A run stages its files under `.incoming/` and moves them into place only
//! once all are written, the pages last: a full disk or a crash on the way
//! leaves the previous report whole. While it moves them, the record lists
//! the files it replaces too, so that an interrupted move still knows both.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::lock::{ReportLock, LOCK_FILE};
use super::provenance::{RunRecord, RUN_FILE};
use crate::errors::BadInput;
use crate::fingerprint::file_sha256;

/// Path below the report folder (with `/`) → SHA-256 of the file.
pub(crate) type Files = BTreeMap<String, String>;

/// The folder under a report where a run stages its files.
pub(crate) const STAGING: &str = ".incoming";

/// The files every report writes whatever its study (render.rs and the
/// bundle); the commit checks every path again, these are only the ones
/// that can be checked before the model work.
const PAGES: [&str; 5] = [
    "index.html",
    "report.js",
    "viewer.js",
    "viewer_bg.wasm",
    viewer::bundle::FILE_NAME,
];

/// The folders of the report's own files.
const REPORT_FOLDERS: [&str; 2] = ["data", "figures"];

/// The engine's working folders in a report folder.
const WORKING: [&str; 3] = ["cache", "shards", STAGING];

/// What the folder held when the run began.
#[derive(Debug)]
enum Owner {
    /// Nothing: a new or empty folder.
    New,
    /// A report folder: the files its record lists, and (after a move that
    /// was interrupted) the files that move was replacing.
    Report { files: Files, superseded: Files },
    /// A report of an engine that did not list its files: the files at the
    /// report's paths are taken as its own, and nothing else is removed.
    Unlisted,
    /// Someone else's files, written beside with --force.
    Foreign,
}

/// Why a path the report needs cannot be written.
#[derive(Debug)]
enum Conflict {
    Theirs(String),
    Changed(String),
}

/// A report folder claimed by this run (its lock held).
#[derive(Debug)]
pub(crate) struct Folder {
    out: PathBuf,
    owner: Owner,
    _lock: ReportLock,
}

/// What a commit did beyond moving the new files into place.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// Files of an earlier run, edited since, that this run no longer
    /// writes: kept, and the user's from now on.
    pub kept: Vec<PathBuf>,
}

impl Folder {
    /// Checks that the report may be written into `out` (see the module
    /// doc; nothing is written when it may not), then creates the folder,
    /// takes its lock, and marks it as a report folder. `single_file` is
    /// the name of the single-file page, if the run writes one.
    pub(crate) fn claim(
        out: &Path,
        force: bool,
        single_file: Option<&str>,
    ) -> anyhow::Result<Self> {
        check_fixed_paths(out, &owner(out, force)?, single_file)?;
        std::fs::create_dir_all(out).map_err(|e| {
            BadInput(format!(
                "cannot create the report folder `{}`: {e} — choose another folder with --out",
                out.display()
            ))
        })?;
        let lock = ReportLock::acquire(out)?;
        // Again, now that no other run can write here.
        let owner = owner(out, force)?;
        check_fixed_paths(out, &owner, single_file)?;
        if matches!(owner, Owner::New | Owner::Foreign) {
            RunRecord::start().write(out)?;
        }
        Ok(Folder {
            out: out.to_path_buf(),
            owner,
            _lock: lock,
        })
    }

    /// Whether the report's file `rel` is still as the engine wrote it (and
    /// so may be reused as it is).
    pub(crate) fn holds_own(&self, rel: &str) -> bool {
        match &self.owner {
            Owner::Report { files, superseded } => recorded_here(&self.out, rel, files, superseded),
            _ => false,
        }
    }

    /// A fresh staging folder (one left by an earlier run removed).
    pub(crate) fn staging(&self) -> anyhow::Result<PathBuf> {
        let staging = self.out.join(STAGING);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).with_context(|| {
                format!(
                    "cannot remove `{}` left by an earlier run",
                    staging.display()
                )
            })?;
        }
        std::fs::create_dir_all(staging.join("data"))
            .with_context(|| format!("cannot create `{}`", staging.display()))?;
        Ok(staging)
    }

    /// Moves every file of `staging` to the same place in the report (renames
    /// in one file system: no space needed, nothing half-copied), the HTML
    /// pages last, so that a reader who opens a page finds everything it
    /// refers to; records them in `record`; removes the files of the previous
    /// run that this one does not write, where unchanged. `reused` says which
    /// files of the previous run this one keeps as they are. Nothing is moved
    /// when a path it needs holds a file the engine did not write.
    pub(crate) fn commit(
        &self,
        staging: &Path,
        record: &mut RunRecord,
        reused: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Committed> {
        let mut staged = Vec::new();
        list(staging, "", &mut staged)
            .with_context(|| format!("cannot list `{}`", staging.display()))?;
        let is_page = |f: &String| !f.contains('/') && f.ends_with(".html");
        staged.sort_by(|a, b| is_page(a).cmp(&is_page(b)).then(a.cmp(b)));

        let (own, changed) = self.survey();
        let mut conflicts = Vec::new();
        for rel in &staged {
            if let Some(conflict) = self.conflict(rel, &own, &changed) {
                conflicts.push(conflict);
            }
        }
        refuse(&conflicts)?;

        let mut files = Files::new();
        for rel in &staged {
            files.insert(rel.clone(), file_sha256(&staging.join(rel))?);
        }
        for (rel, sha) in &own {
            if reused(rel) && !files.contains_key(rel) {
                files.insert(rel.clone(), sha.clone());
            }
        }
        record.files = Some(files);
        record.superseded = (!own.is_empty()).then(|| own.clone());
        record.write(&self.out)?;

        for rel in &staged {
            let target = self.out.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create `{}`", parent.display()))?;
            }
            std::fs::rename(staging.join(rel), &target).with_context(|| {
                format!("cannot move the new `{}` into place", target.display())
            })?;
        }
        let listed = record.files.as_ref();
        for rel in own.keys() {
            if !listed.is_some_and(|f| f.contains_key(rel)) {
                let path = self.out.join(rel);
                std::fs::remove_file(&path).with_context(|| {
                    format!(
                        "cannot remove `{}`, a file of the previous run",
                        path.display()
                    )
                })?;
            }
        }
        record.superseded = None;
        record.write(&self.out)?;
        std::fs::remove_dir_all(staging)
            .with_context(|| format!("cannot remove `{}`", staging.display()))?;
        Ok(Committed {
            kept: changed.iter().map(|rel| self.out.join(rel)).collect(),
        })
    }

    /// The files of the previous runs still as the engine wrote them (path →
    /// SHA-256), and those edited since.
    fn survey(&self) -> (Files, BTreeSet<String>) {
        let (mut own, mut changed) = (Files::new(), BTreeSet::new());
        if let Owner::Report { files, superseded } = &self.owner {
            for rel in files.keys().chain(superseded.keys()) {
                let path = self.out.join(rel);
                if own.contains_key(rel) || changed.contains(rel) || !is_plain_file(&path) {
                    continue;
                }
                match file_sha256(&path) {
                    Ok(sha) if [files.get(rel), superseded.get(rel)].contains(&Some(&sha)) => {
                        own.insert(rel.clone(), sha);
                    }
                    _ => {
                        changed.insert(rel.clone());
                    }
                }
            }
        }
        (own, changed)
    }

    /// Why the report cannot write `rel`, if it cannot.
    fn conflict(&self, rel: &str, own: &Files, changed: &BTreeSet<String>) -> Option<Conflict> {
        // A file where the report needs a folder.
        let mut above = PathBuf::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            above.push(part);
            let path = self.out.join(&above);
            if path.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                return Some(Conflict::Theirs(path.display().to_string()));
            }
        }
        let path = self.out.join(rel);
        let meta = path.symlink_metadata().ok()?;
        let shown = path.display().to_string();
        match &self.owner {
            _ if own.contains_key(rel) => None,
            Owner::Unlisted if meta.is_file() => None,
            _ if changed.contains(rel) => Some(Conflict::Changed(shown)),
            _ => Some(Conflict::Theirs(shown)),
        }
    }
}

/// What `out` holds: a report folder, nothing, or someone else's files
/// (refused without `force`).
fn owner(out: &Path, force: bool) -> anyhow::Result<Owner> {
    match std::fs::metadata(out) {
        // Missing, or not reachable: creating it says why, if it cannot be.
        Err(_) => return Ok(Owner::New),
        Ok(meta) if !meta.is_dir() => {
            return Err(BadInput(format!(
                "`{}` is a file, not a folder: pass --out the folder the report should go into (it is made if missing)",
                out.display()
            ))
            .into())
        }
        Ok(_) => {}
    }
    if let Some(record) = RunRecord::read(out) {
        return Ok(match record.files {
            Some(files) => Owner::Report {
                files,
                superseded: record.superseded.unwrap_or_default(),
            },
            None => Owner::Unlisted,
        });
    }
    let mut theirs: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| {
            BadInput(format!(
                "cannot read the report folder `{}`: {e} — choose another folder with --out",
                out.display()
            ))
        })?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != LOCK_FILE)
        .collect();
    theirs.sort();
    if theirs.is_empty() {
        Ok(Owner::New)
    } else if force {
        Ok(Owner::Foreign)
    } else {
        Err(BadInput(format!(
            "`{}` already holds files the engine did not write ({}): choose another folder with --out, or pass --force to write the report beside them (the engine never replaces or deletes a file it did not write)",
            out.display(),
            some_of(&theirs)
        ))
        .into())
    }
}

/// Refuses a run that would have to replace a file the engine did not write
/// at one of the paths every report has.
fn check_fixed_paths(out: &Path, owner: &Owner, single_file: Option<&str>) -> anyhow::Result<()> {
    let theirs = |path: PathBuf| Conflict::Theirs(path.display().to_string());
    let mut conflicts = Vec::new();
    for rel in PAGES.into_iter().chain(single_file) {
        let path = out.join(rel);
        if path.symlink_metadata().is_err() {
            continue;
        }
        match owner {
            Owner::Unlisted if is_plain_file(&path) => {}
            Owner::Report { files, superseded }
                if files.contains_key(rel) || superseded.contains_key(rel) =>
            {
                if !recorded_here(out, rel, files, superseded) {
                    conflicts.push(Conflict::Changed(path.display().to_string()));
                }
            }
            _ => conflicts.push(theirs(path)),
        }
    }
    for rel in REPORT_FOLDERS {
        let path = out.join(rel);
        if path.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            conflicts.push(theirs(path));
        }
    }
    if matches!(owner, Owner::Foreign) {
        for rel in WORKING.into_iter().chain([RUN_FILE]) {
            let path = out.join(rel);
            if path.symlink_metadata().is_ok() {
                conflicts.push(theirs(path));
            }
        }
    }
    refuse(&conflicts)
}

/// The refusal of a run whose report needs paths that hold files the
/// engine did not write (or edited since it wrote them).
fn refuse(conflicts: &[Conflict]) -> anyhow::Result<()> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = conflicts
        .iter()
        .map(|c| match c {
            Conflict::Theirs(path) => format!("`{path}` (not written by the engine)"),
            Conflict::Changed(path) => format!("`{path}` (written by the engine, changed since)"),
        })
        .collect();
    let (is, it) = if conflicts.len() == 1 {
        ("it is", "it")
    } else {
        ("they are", "them")
    };
    Err(BadInput(format!(
        "the report would have to replace {}, and {is} not the engine's to replace: move {it} elsewhere and run again, or choose another folder with --out (the engine never replaces a file it did not write, even with --force; nothing of the report was changed)",
        some_of(&named)
    ))
    .into())
}

/// Whether the file `rel` below `out` holds the bytes a record lists for it.
fn recorded_here(out: &Path, rel: &str, files: &Files, superseded: &Files) -> bool {
    let path = out.join(rel);
    is_plain_file(&path)
        && file_sha256(&path)
            .is_ok_and(|sha| [files.get(rel), superseded.get(rel)].contains(&Some(&sha)))
}

/// A regular file, not a link (the engine writes no links: replacing one
/// would replace the link, not the file).
fn is_plain_file(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_file())
}

/// The first few names, and how many more.
fn some_of(names: &[String]) -> String {
    const SHOWN: usize = 4;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Every file below `dir`, as paths below it with `/`.
fn list(dir: &Path, prefix: &str, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let rel = format!("{prefix}{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            list(&entry.path(), &format!("{rel}/"), files)?;
        } else {
            files.push(rel);
        }
    }
    Ok(())
}

/// Where a file written under the staging folder ends up.
pub(crate) fn committed(staged: &Path) -> PathBuf {
    let mut parts = Vec::new();
    let mut found = false;
    for part in staged.components() {
        if part.as_os_str() == STAGING {
            found = true;
        } else {
            parts.push(part);
        }
    }
    if found {
        parts.iter().collect()
    } else {
        staged.to_path_buf()
    }
}

/// Removes a folder when dropped, whatever happened before.
#[derive(Debug)]
pub(crate) struct RemoveOnDrop<'a>(pub &'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("engine-folder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn stage(folder: &Folder, files: &[(&str, &str)]) -> PathBuf {
        let staging = folder.staging().expect("staging");
        for (rel, text) in files {
            let path = staging.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("create");
            std::fs::write(path, text).expect("write");
        }
        staging
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn a_commit_replaces_and_removes_only_unchanged_files_of_its_own() {
        let out = scratch("commit");
        let commit = |files: &[(&str, &str)]| {
            let folder = Folder::claim(&out, false, None).expect("claim");
            let staging = stage(&folder, files);
            folder.commit(&staging, &mut RunRecord::start(), |_| false)
        };
        commit(&[
            ("index.html", "one"),
            ("figures/a.svg", "a"),
            ("figures/b.svg", "b"),
        ])
        .expect("first");
        std::fs::write(out.join("notes.txt"), "mine").expect("write");
        std::fs::write(out.join("figures/b.svg"), "edited").expect("write");
        let done = commit(&[("index.html", "two")]).expect("second");
        assert_eq!(read(&out.join("index.html")), "two");
        assert!(
            !out.join("figures/a.svg").exists(),
            "stale and unchanged: removed"
        );
        assert_eq!(
            read(&out.join("figures/b.svg")),
            "edited",
            "stale but edited: kept"
        );
        assert_eq!(done.kept, [out.join("figures/b.svg")]);
        assert_eq!(read(&out.join("notes.txt")), "mine");
        let record = RunRecord::read(&out).expect("record");
        assert_eq!(
            record.files.expect("files").keys().collect::<Vec<_>>(),
            ["index.html"]
        );
        assert!(record.superseded.is_none());

        // The edited figure is the user's now: a run that needs its path
        // moves nothing.
        let refused = commit(&[("index.html", "three"), ("figures/b.svg", "new")]);
        assert!(refused.is_err());
        assert_eq!(read(&out.join("index.html")), "two");
        assert_eq!(read(&out.join("figures/b.svg")), "edited");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_move_interrupted_half_way_still_knows_both_runs_files() {
        let out = scratch("interrupted");
        let folder = Folder::claim(&out, false, None).expect("claim");
        let staging = stage(&folder, &[("index.html", "old"), ("data/t.csv", "old")]);
        folder
            .commit(&staging, &mut RunRecord::start(), |_| false)
            .expect("first");
        drop(folder);
        // The next run recorded its files and moved one before it stopped.
        let mut record = RunRecord::read(&out).expect("record");
        let before = record.files.clone();
        record.files = Some(Files::from([
            ("index.html".into(), crate::fingerprint::sha256_hex(b"new")),
            ("data/t.csv".into(), crate::fingerprint::sha256_hex(b"new")),
        ]));
        record.superseded = before;
        record.write(&out).expect("write");
        std::fs::write(out.join("data/t.csv"), "new").expect("write");
        let folder = Folder::claim(&out, false, None).expect("claim again");
        let staging = stage(&folder, &[("index.html", "newer"), ("data/t.csv", "newer")]);
        folder
            .commit(&staging, &mut RunRecord::start(), |_| false)
            .expect("both files are the engine's");
        assert_eq!(read(&out.join("data/t.csv")), "newer");
        let _ = std::fs::remove_dir_all(&out);
    }
}
