//! haimg-init: PID 1 of every haimg image. A thin binary over the library:
//! it parses the command line and hands over; see lib.rs for the boot order.

use std::io::Write;
use std::process::ExitCode;

use haimg_init::cli::{self, Command};

fn main() -> ExitCode {
    let cmd = match cli::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            haimg_init::error!("{e}");
            // A closed console must not panic the process (println! would).
            let _ = writeln!(std::io::stderr(), "{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Boot => haimg_init::boot::main(),
        Command::CheckTcp(addr) => haimg_init::boot::check_tcp(&addr),
        Command::VrrpState(s) => haimg_init::boot::vrrp_state(&s),
        Command::Supervise { file, status } => haimg_init::boot::supervise(&file, &status),
        Command::Render { root, slot, out } => {
            haimg_init::boot::render_cmd(&root, &slot, out.as_deref())
        }
        Command::BootDir { root, status } => haimg_init::boot::boot_in_dir(&root, &status),
        Command::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "haimg-init {}",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Command::Help => {
            let _ = writeln!(std::io::stdout(), "{}", cli::USAGE);
            ExitCode::SUCCESS
        }
    }
}
