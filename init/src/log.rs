//! Console logging: one plain line per event, `haimg-init[LEVEL]: message`.
//!
//! PID 1's stderr is the container console. Lines are written whole with a
//! single `write` so concurrent writers (the join thread, children) do not
//! interleave inside a line. Messages are single-line: newlines are replaced.

use std::fmt;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// The exact console line for a message.
pub fn line(level: Level, msg: &str) -> String {
    let one: String = msg
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!("haimg-init[{level}]: {one}\n")
}

/// Write one line to stderr; errors writing the console are ignored (nowhere to report them).
pub fn emit(level: Level, msg: &str) {
    let l = line(level, msg);
    let _ = std::io::stderr().lock().write_all(l.as_bytes());
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Info, &format!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Warn, &format!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Error, &format!($($t)*)) } }

#[cfg(test)]
mod tests {
    #[test]
    fn one_line() {
        assert_eq!(
            super::line(super::Level::Info, "nginx started pid 42"),
            "haimg-init[info]: nginx started pid 42\n"
        );
        assert_eq!(
            super::line(super::Level::Error, "a\nb"),
            "haimg-init[error]: a b\n"
        );
    }
}
