//! What both binaries (`switch`, `switch-cni`) do the same at their edge: a command line clap
//! refuses becomes one line and exit status 2, as every other usage error does.
use std::process::ExitCode;

/// Help and version go out as clap prints them; a malformed command line becomes one
/// `error:` line (clap's hint to try --help, on lines of its own, is left out) and exit 2.
pub fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let line: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .collect();
    eprintln!("{}", line.join(" "));
    ExitCode::from(2)
}
