//! The `modelbake` binary: parses arguments and hands over to [`modelbake::cli`].

fn main() -> std::process::ExitCode {
    modelbake::cli::main()
}
