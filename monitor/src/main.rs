use std::process::ExitCode;

fn main() -> ExitCode {
    fimd::cli::main()
}
