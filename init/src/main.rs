//! haimg-init: PID 1 of every haimg image (skeleton; see issue 4).
fn main() {
    eprintln!("haimg-init[error]: not implemented yet");
    std::process::exit(1);
}
