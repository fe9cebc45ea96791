//! Loading the cluster spec: from `--spec FILE`, `./haimg.yaml`, or the embedded default.
//!
//! Errors name the file they concern; invalid specs come back as
//! [`haimg_model::SpecError`] so the CLI can print every problem and exit 2.

use std::path::{Path, PathBuf};

use haimg_model::spec::{self, Checked};
use haimg_model::{Problem, SpecError};

/// Where the spec came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("the embedded default spec"),
        }
    }
}

/// A spec that failed to load: unreadable, or invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{source_name}: {err}")]
    Invalid { source_name: Source, err: SpecError },
}

/// A loaded, validated spec and the text it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub source: Source,
    pub text: String,
    pub checked: Checked,
}

/// `--spec FILE` if given; else `./haimg.yaml` if present; else the embedded default.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, LoadError> {
    let (source, text) = match explicit {
        Some(p) => (Source::File(p.to_path_buf()), read(p)?),
        None if Path::new("haimg.yaml").is_file() => {
            let p = PathBuf::from("haimg.yaml");
            let t = read(&p)?;
            (Source::File(p), t)
        }
        None => (Source::Embedded, haimg_model::DEFAULT_SPEC.to_string()),
    };
    match spec::parse_yaml(&text) {
        Ok(checked) => Ok(Loaded {
            source,
            text,
            checked,
        }),
        Err(err) => Err(LoadError::Invalid {
            source_name: source,
            err,
        }),
    }
}

/// Read at most one byte past the size limit: a bigger (or endless, like
/// `/dev/zero`) file is refused without being read whole.
fn read(p: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    let fail = |error| LoadError::Read {
        path: p.to_path_buf(),
        error,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| {
            f.take(spec::MAX_SPEC_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(fail)?;
    if bytes.len() > spec::MAX_SPEC_BYTES {
        return Err(LoadError::Invalid {
            source_name: Source::File(p.to_path_buf()),
            err: SpecError {
                problems: vec![Problem::error(
                    "",
                    format!(
                        "the file has more than {} bytes; a spec is at most {} bytes",
                        spec::MAX_SPEC_BYTES,
                        spec::MAX_SPEC_BYTES
                    ),
                )
                .hint("is this the right file?")],
            },
        });
    }
    String::from_utf8(bytes).map_err(|e| LoadError::Invalid {
        source_name: Source::File(p.to_path_buf()),
        err: SpecError {
            problems: vec![Problem::error(
                "",
                format!(
                    "the file is not UTF-8 text (byte {})",
                    e.utf8_error().valid_up_to()
                ),
            )
            .hint("save the spec as UTF-8")],
        },
    })
}
