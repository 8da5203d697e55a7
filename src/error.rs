//! The one error type: a single line for the user and the exit code that
//! goes with it (2 for a bad command line, 1 for everything else).

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// A bad flag or flag value: exit code 2.
    Usage(String),
    /// Anything that stops the monitor from starting or running: exit code 1.
    Fatal(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    pub fn fatal(msg: impl Into<String>) -> Self {
        Error::Fatal(msg.into())
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Fatal(_) => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) | Error::Fatal(msg) => f.write_str(msg),
        }
    }
}
