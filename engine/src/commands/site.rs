//! `engine site [DIR]`: the index page over every report in a folder.

use crate::cli::SiteArgs;
use crate::commands::say;

pub(crate) fn run(args: &SiteArgs, quiet: bool) -> anyhow::Result<()> {
    let (path, count) = crate::report::write_site(&args.root, args.templates.as_deref())?;
    if !quiet {
        say!("wrote   {} ({count} reports)", path.display())?;
    }
    Ok(())
}
