//! `engine site [DIR]`: the index page over every report in a folder.

use crate::cli::SiteArgs;
use crate::commands::say;
use crate::errors::BadInput;
use crate::report::site::SiteIndex;

pub(crate) fn run(args: &SiteArgs, quiet: bool) -> anyhow::Result<()> {
    match crate::report::write_site(&args.root, args.templates.as_deref())? {
        SiteIndex::Written { path, reports } => {
            if !quiet {
                say!("wrote   {} ({reports} reports)", path.display())?;
            }
            Ok(())
        }
        SiteIndex::NotOurs { path, root } => {
            Err(BadInput(SiteIndex::why_not_ours(&path, &root)).into())
        }
    }
}
