//! What the monitor hands to programs it runs as root, and how it vets it:
//! executables are found only in fixed system directories (never through
//! PATH, whose empty or relative entries would run a file from the working
//! directory), and must belong to root and be writable by no one else;
//! children start with a clean environment; a file whose text root will run
//! (`--bpftrace-script`) must be a regular file of root or the running
//! user, writable by no one else, and is read once, so it cannot change
//! between the check and its use.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;

/// Where backend programs are looked for, in order; also the children's PATH.
pub const SYSTEM_DIRS: [&str; 7] = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/snap/bin"];

/// Group- and other-write permission bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// The executable `program` from [`SYSTEM_DIRS`], or an error with the install hint.
pub fn require_program(program: &str, hint: &str) -> Result<PathBuf, Error> {
    let found = SYSTEM_DIRS.iter().map(|dir| Path::new(dir).join(program)).find(|path| is_executable(path));
    let path = found.ok_or_else(|| {
        Error::fatal(format!("{program} not found in {}; {hint}", SYSTEM_DIRS.join(", ")))
    })?;
    let meta = std::fs::metadata(&path).map_err(|e| Error::fatal(format!("{}: {e}", path.display())))?;
    if meta.uid() != 0 || meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(Error::fatal(format!(
            "refusing to run {} as root: it must belong to root and be writable by no one else (owner uid {}, mode {:o})",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(path)
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// A command for `program` with a clean environment: only a PATH of
/// [`SYSTEM_DIRS`] and the C locale; the backend adds what it needs.
pub fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().env("PATH", SYSTEM_DIRS.join(":")).env("LC_ALL", "C");
    cmd
}

/// The text of `path`, which root will run: a regular file (after
/// symlinks) owned by root or the running user, writable by no one else,
/// at most `max_bytes`, without NUL bytes. Checked on the open file and
/// read from it once. `what` names the flag in errors.
pub fn read_vetted_text(path: &Path, max_bytes: usize, what: &str) -> Result<String, Error> {
    let refuse = |why: String| Error::fatal(format!("{what} {}: {why}", path.display()));
    let mut file = File::open(path).map_err(|e| refuse(e.to_string()))?;
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let me = crate::sys::effective_uid();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(refuse(format!("owned by uid {}: it must belong to root (or uid {me}, who runs this)", meta.uid())));
    }
    if meta.mode() & WRITABLE_BY_OTHERS != 0 {
        return Err(refuse(format!(
            "writable by group or others (mode {:o}): fix with chmod go-w",
            meta.mode() & 0o7777
        )));
    }
    // Not trusting st_size: read one byte past the limit.
    let mut bytes = Vec::new();
    let limit = u64::try_from(max_bytes).unwrap_or(u64::MAX).saturating_add(1);
    file.by_ref().take(limit).read_to_end(&mut bytes).map_err(|e| refuse(e.to_string()))?;
    if bytes.len() > max_bytes {
        return Err(refuse(format!("larger than {} KiB", max_bytes / 1024)));
    }
    if bytes.contains(&0) {
        return Err(refuse("not a text file (it holds NUL bytes)".into()));
    }
    String::from_utf8(bytes).map_err(|_| refuse("not UTF-8 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp(name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let path = std::env::temp_dir().join(format!("itm-trusted-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_private_script_is_read_and_anything_else_refused_in_one_line() {
        let good = temp("good.bt", b"BEGIN { printf(\"@attached\\n\"); }\n", 0o644);
        assert!(read_vetted_text(&good, 1024, "--bpftrace-script").unwrap().contains("@attached"));
        let open = temp("open.bt", b"BEGIN {}", 0o666);
        let group = temp("group.bt", b"BEGIN {}", 0o664);
        let big = temp("big.bt", &[b'#'; 2048], 0o644);
        let nul = temp("nul.bt", b"BEGIN {}\0", 0o644);
        for (path, why) in [
            (open.as_path(), "writable by group or others (mode 666)"),
            (group.as_path(), "writable by group or others (mode 664)"),
            (big.as_path(), "larger than 1 KiB"),
            (nul.as_path(), "NUL bytes"),
            (Path::new("/dev/zero"), "not a regular file"),
            (Path::new("/nonexistent/x.bt"), "No such file"),
        ] {
            let err = read_vetted_text(path, 1024, "--bpftrace-script").unwrap_err().to_string();
            assert!(err.contains(why) && err.starts_with("--bpftrace-script ") && !err.contains('\n'), "{err}");
        }
        for path in [good, open, group, big, nul] {
            let _ = std::fs::remove_file(path);
        }
    }

    #[test]
    fn children_get_a_clean_environment() {
        let cmd = command(Path::new("/bin/true"));
        let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
        assert!(envs.iter().any(|(k, v)| k == "PATH" && v.as_deref() == Some(std::ffi::OsStr::new(&SYSTEM_DIRS.join(":")))));
        // env_clear: nothing of the monitor's own environment is inherited.
        let out = command(Path::new("/usr/bin/env")).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        names.sort();
        assert_eq!(names, ["LC_ALL", "PATH"], "{text}");
    }
}
