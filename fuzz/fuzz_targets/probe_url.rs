//! Fuzzes the probe's URL handling: its flags (old single-dash spellings too) and the URL it builds from --url or
//! --host/--statusPort/--path. Whatever it accepts is an http(s) URL with a host, aimed at the port it was given,
//! or a gRPC target that the contract's rule for `grpc://` URLs (the annotation's) accepts as the same target.
#![no_main]

use std::ffi::OsString;

use arbitrary::Arbitrary;
use clap::Parser;
use healthbridge_agent::probe::{ProbeArgs, Target, normalize_legacy_flags};
use healthbridge_contract::endpoint::parse_url;
use healthbridge_contract::socket::{SocketKind, parse_target};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any argument vector, as an exec probe's command could give it.
    Argv(Vec<String>),
    /// The older probe's form.
    Parts {
        host: String,
        port: u16,
        path: Option<String>,
        tls: bool,
    },
    /// One --url.
    Url(String),
}

fuzz_target!(|input: Input| {
    let argv: Vec<String> = match &input {
        Input::Argv(args) => args.clone(),
        Input::Parts {
            host,
            port,
            path,
            tls,
        } => {
            let mut argv = vec![format!("-host={host}"), format!("-statusPort={port}")];
            argv.extend(path.iter().map(|p| format!("-path={p}")));
            if *tls {
                argv.push("--tls".to_owned());
            }
            argv
        }
        Input::Url(url) => {
            // The endpoint rule of /all and the probe's own agree on what is an http(s) URL with a host.
            let _ = parse_url(url);
            vec![format!("--url={url}")]
        }
    };
    let args = normalize_legacy_flags(
        std::iter::once("probe".to_owned())
            .chain(argv)
            .map(OsString::from),
    );
    let Ok(parsed) = ProbeArgs::try_parse_from(&args) else {
        return;
    };
    let target = parsed.target();
    // One rule, one place: a gRPC URL the contract accepts is one the probe accepts.
    if let Input::Url(url) = &input
        && let Ok(spec) = parse_target(SocketKind::Grpc, url)
    {
        assert_eq!(target.as_ref(), Ok(&Target::Grpc(spec)), "{url:?}");
    }
    let Ok(target) = target else { return };
    let uri = match target {
        Target::Http(uri) => uri,
        Target::Grpc(spec) => {
            let url = parsed.url.as_deref().unwrap_or_default();
            assert_eq!(parse_target(SocketKind::Grpc, url).as_ref(), Ok(&spec), "{url:?}");
            assert!(!spec.host.is_empty() && spec.port != 0, "{spec:?}");
            assert!(!matches!(input, Input::Parts { .. }), "{args:?} built {spec:?}");
            return;
        }
    };
    assert!(matches!(uri.scheme_str(), Some("http" | "https")), "{uri}");
    assert!(uri.host().is_some_and(|h| !h.is_empty()), "{uri}");
    if let Input::Parts { port, .. } = input {
        assert_eq!(uri.port_u16(), Some(port), "{args:?} aims at {uri}");
    }
});
