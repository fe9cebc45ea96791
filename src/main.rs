//! The `haimg` binary: a thin shell over the library (see `haimg::cli`).
fn main() {
    std::process::exit(haimg::cli::main());
}
