//! Structured logs on stderr, the same shape for every binary: text by default, one flat JSON object per line with `json`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","target":…,"message":…,<fields>…}`: fields at the top level, as log shippers expect.
    Json,
}

/// Installs the global subscriber; `RUST_LOG` refines the level (default `info`).
pub fn init(format: LogFormat) {
    init_with_level(format, "info");
}

/// [`init`] with another level when `RUST_LOG` is unset (`warn` for a quiet mode).
pub fn init_with_level(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber instead of aborting.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
