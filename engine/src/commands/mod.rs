//! One module per subcommand; each turns parsed arguments into library calls.

pub(crate) mod bench;
pub(crate) mod capture;
pub(crate) mod inspect;
pub(crate) mod report;
pub(crate) mod site;

use std::io::Write;

/// Prints to stdout; a closed pipe (`engine ... | head`) is not an error.
pub(crate) fn print(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `println!` that tolerates a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => { $crate::commands::print(format_args!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use say;
