//! Fuzzes the exec-check spec rules of the contract: every spec the split accepts is one the agent can serve
//! (a path of its own, a command that is not blank), and a value's lines parse as their specs one by one.
#![no_main]

use healthbridge_contract::exec::{RESERVED_PATHS, parse_spec_lines, spec_lines, split_spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|value: &str| {
    if let Ok(spec) = split_spec(value) {
        assert!(spec.path.starts_with('/'), "{spec:?}");
        assert!(!spec.path.contains(char::is_whitespace), "{spec:?}");
        assert!(!spec.path.contains(['?', '#']), "{spec:?}");
        assert!(!RESERVED_PATHS.contains(&spec.path.as_str()), "{spec:?}");
        assert!(!spec.command.trim().is_empty(), "{spec:?}");
    }
    match parse_spec_lines(value) {
        Ok(specs) => {
            let lines: Vec<_> = spec_lines(value).collect();
            assert_eq!(specs.len(), lines.len());
            for (spec, line) in specs.iter().zip(lines) {
                assert_eq!(split_spec(line).as_ref(), Ok(spec));
            }
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
