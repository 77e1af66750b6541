//! The `wcbuild` binary: parses arguments, sets up logging, runs one command and maps its
//! outcome to an exit code (0 ok, 1 failed, 2 usage).

fn main() -> std::process::ExitCode {
    wcbuild::cli::main()
}
