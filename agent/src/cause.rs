//! Which error of a chain of wrapped ones a one-line reason names: the TLS failure with its fix, else the innermost
//! cause (refused, DNS, reset), which is the one that says what went wrong.

use std::error::Error;

/// The innermost cause of `error`: `error` itself when it wraps nothing.
pub fn innermost<'a>(error: &'a (dyn Error + 'static)) -> &'a (dyn Error + 'static) {
    let mut innermost = error;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    innermost
}

/// The TLS explanation when the failure is TLS, else the innermost cause's message.
pub fn explained(error: &(dyn Error + 'static)) -> String {
    crate::tls::explain(error).unwrap_or_else(|| innermost(error).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn the_innermost_cause_is_named_and_an_unwrapped_error_is_its_own_cause() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(explained(&Wrapper(refused)), "connection refused");
        let alone = std::io::Error::other("reset");
        assert_eq!(explained(&alone), "reset");
    }
}
