fn main() -> std::process::ExitCode {
    stoker::cli::main()
}
