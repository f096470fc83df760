fn main() -> std::process::ExitCode {
    // Everything created in the data directory is the owner's only (see `perms`).
    enclave::perms::restrict_umask();
    enclave::cli::main()
}
