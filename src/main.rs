fn main() -> std::process::ExitCode {
    enclave::cli::main()
}
