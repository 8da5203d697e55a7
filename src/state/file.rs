//! The state file on disk: read whole at start; written atomically (a
//! temporary file beside it, mode 0600, fsync, rename over the old one,
//! fsync of the directory), so a crash or a power cut at any moment leaves
//! either the old state or the new one, never a mix. The file lists who the
//! host talks to: only its owner may read it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::State;
use crate::error::Error;

/// The state at `path`; `None` if there is none yet (a first start). A file
/// that cannot be read or is not a whole state is an error naming the file
/// and what to do; the file is left as it is.
pub fn load(path: &Path) -> Result<Option<State>, Error> {
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(Error::fatal(format!("--state {}: cannot read it: {err}", path.display()))),
    };
    let refuse = |what: String| {
        Error::fatal(format!(
            "--state {}: {what}; it was left unchanged: move it away to start from zero, or give another --state",
            path.display()
        ))
    };
    let text = String::from_utf8(text).map_err(|_| refuse("it is not a state file of ip_traffic_monitor_cli".into()))?;
    State::from_text(&text).map(Some).map_err(refuse)
}

/// Writes `state` to `path` atomically, readable by its owner only.
pub fn save(path: &Path, state: &State) -> io::Result<()> {
    write_atomically(path, state.to_text().as_bytes())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let temporary = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    // A leftover of a crash mid-write goes first; a new file is created
    // exclusively (a link planted in its place is not followed).
    match fs::remove_file(&temporary) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(err) = written.and_then(|()| fs::rename(&temporary, path)) {
        let _ = fs::remove_file(&temporary);
        return Err(err);
    }
    File::open(&dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("itm-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_saved_state_is_private_whole_and_alone() {
        let dir = scratch_dir("save");
        let path = dir.join("state");
        fs::write(dir.join(".state.tmp"), "a crash's leftover").unwrap();
        let state = State { saved_at: 7, ..State::default() };
        save(&path, &state).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(load(&path).unwrap(), Some(state));
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state"], "no temporary file left");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_file_is_a_first_start_and_a_bad_one_is_refused_untouched() {
        let dir = scratch_dir("load");
        assert_eq!(load(&dir.join("none")).unwrap(), None);
        let bad = dir.join("bad");
        fs::write(&bad, b"\xff\xfe not text").unwrap();
        let err = load(&bad).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains(&bad.display().to_string()) && err.to_string().contains("move it away"), "{err}");
        assert_eq!(fs::read(&bad).unwrap(), b"\xff\xfe not text");
        let _ = fs::remove_dir_all(&dir);
    }
}
