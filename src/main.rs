use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;
use nodeprep::cli::{Cli, Format};
use nodeprep::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on usage errors; 2 means "drift" here, so bad
            // command lines get EX_USAGE instead.
            let _ = e.print();
            // clap's own printing ignores a closed stdout or stderr.
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Exit::Ok,
                _ => Exit::Usage,
            }
            .into();
        }
    };
    let format = cli.format;
    let command = cli.command.name();
    match nodeprep::app::run(cli) {
        Ok(exit) => exit.into(),
        Err(fatal) => {
            nodeprep::output::warn(&fatal);
            if format == Format::Json {
                // Scripts parsing stdout still get one document, saying why.
                nodeprep::output::fatal(command, &fatal);
            }
            fatal.exit.into()
        }
    }
}
