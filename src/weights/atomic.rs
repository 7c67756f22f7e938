//! Atomic file installation: write to a temporary file beside the target, then rename.
//!
//! A rename within one directory is atomic on POSIX file systems, so readers see either the old
//! file or the complete new one. A [`TempFile`] that is dropped without being persisted is
//! deleted, so an error anywhere leaves nothing behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files created by one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file in the target's directory, removed on drop unless [`TempFile::persist`]ed.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Reserves a unique temporary path `<target name>.tmp-<pid>-<n>` next to `target`
    /// (matched by `model/*.tmp*` in `.gitignore`). The file itself is created by the caller.
    pub fn beside(target: &Path) -> Self {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_name = format!("{name}.tmp-{}-{n}", std::process::id());
        Self {
            path: target.with_file_name(tmp_name),
            persisted: false,
        }
    }

    /// Path of the temporary file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file readable by everyone (`0644` on Unix: the model is read by whichever user
    /// the function runs as), flushes it to disk and renames it to `target`, replacing any
    /// existing file.
    pub fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let file = File::open(&self.path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        file.sync_all()?;
        std::fs::rename(&self.path, target)?;
        self.persisted = true;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; not all platforms allow opening a directory.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_temp_file_is_removed_and_persisted_one_replaces_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        std::fs::write(&target, b"old").unwrap();

        let dropped = TempFile::beside(&target);
        std::fs::write(dropped.path(), b"partial").unwrap();
        let dropped_path = dropped.path().to_path_buf();
        drop(dropped);
        assert!(!dropped_path.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"old");

        let kept = TempFile::beside(&target);
        let kept_path = kept.path().to_path_buf();
        assert_ne!(kept_path, dropped_path);
        std::fs::write(kept.path(), b"new").unwrap();
        kept.persist(&target).unwrap();
        assert!(!kept_path.exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }
}
