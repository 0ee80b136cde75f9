//! Fuzzes the contract's duration parser: no input panics, and a parsed duration shown by `format_duration` (as
//! messages and `--help` print it) reads back as the same duration, to the microsecond it shows.
#![no_main]

use std::time::Duration;

use healthbridge_contract::duration::{format_duration, parse_duration, parse_positive_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let parsed = parse_duration(input);
    match parse_positive_duration(input) {
        Ok(positive) => assert_eq!(parsed.as_ref(), Ok(&positive)),
        Err(_) => assert!(parsed.as_ref().is_err() || parsed.as_ref().is_ok_and(Duration::is_zero)),
    }
    let Ok(duration) = parsed else { return };
    let shown = format_duration(duration);
    let back = parse_duration(&shown)
        .unwrap_or_else(|e| panic!("{input:?} shows as {shown:?}, which does not parse: {e}"));
    // The parser scales by f64: a microsecond, or its 53-bit precision for durations of centuries.
    let (a, b) = (duration.as_micros(), back.as_micros());
    let tolerance = (a >> 50).max(1);
    assert!(
        a.abs_diff(b) <= tolerance,
        "{input:?} is {duration:?}, shown as {shown:?}, read back as {back:?}"
    );
});
