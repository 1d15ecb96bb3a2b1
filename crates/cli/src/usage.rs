//! Usage errors: the command line (or its config) asks for something that cannot work. They
//! exit with status 2, like clap's own, and say what to change.

use std::fmt;

/// An error the user fixes by changing the command, its config file or its environment.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns early with a [`UsageError`].
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err($crate::usage::UsageError(format!($($arg)*)).into())
    };
}

/// Whether `error` (or what it wraps) is the user's to fix.
pub fn is_usage(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<UsageError>()
            || matches!(
                cause.downcast_ref::<tem_core::Error>(),
                Some(
                    tem_core::Error::DatabaseMissing(_)
                        | tem_core::Error::DatabaseFile { .. }
                        | tem_core::Error::DatabaseReadOnly(_)
                        | tem_core::Error::NotTemDatabase(_)
                        | tem_core::Error::InvalidUrl { .. }
                        | tem_core::Error::Invalid { .. }
                )
            )
    })
}
