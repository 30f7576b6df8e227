//! The `engine` binary: parse, dispatch to the library, report errors once.

use clap::Parser;

fn main() {
    let cli = engine::cli::Cli::parse();
    engine::cli::init_logging(cli.verbose, cli.quiet);
    if let Err(error) = engine::cli::run(cli) {
        let message = error
            .chain()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("error: {message}");
        std::process::exit(engine::cli::exit_code(&error));
    }
}
