//! Readiness as a marker file, so a test can flip it with `kubectl exec … healthbridge-demo rm-ready`.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReadyFileError {
    #[error(
        "cannot create the ready file {path}: {source} (mount a writable volume such as an emptyDir there, or pick another path with --ready-file)"
    )]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot remove the ready file {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

/// True when the marker exists.
pub fn is_ready(path: &Path) -> bool {
    path.exists()
}

/// Creates the marker (and nothing else: its parent must exist, as an emptyDir mount does).
pub fn set_ready(path: &Path) -> Result<(), ReadyFileError> {
    std::fs::write(path, b"ready\n").map_err(|source| ReadyFileError::Create {
        path: path.to_owned(),
        source,
    })
}

/// Removes the marker; removing an absent marker is fine (the app is unready either way).
pub fn set_unready(path: &Path) -> Result<(), ReadyFileError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ReadyFileError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_directory_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_ready(&dir.path().join("ready")));
    }

    #[test]
    fn set_ready_then_rm_ready_flips_readiness() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ready");
        set_ready(&marker).unwrap();
        assert!(is_ready(&marker));
        set_unready(&marker).unwrap();
        assert!(!is_ready(&marker));
    }

    #[test]
    fn removing_an_absent_marker_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        set_unready(&dir.path().join("ready")).unwrap();
    }

    #[test]
    fn a_missing_directory_gives_an_error_that_says_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("no-such-dir").join("ready");
        let message = set_ready(&marker).unwrap_err().to_string();
        assert!(message.contains("no-such-dir"), "{message}");
        assert!(message.contains("emptyDir"), "{message}");
    }
}
