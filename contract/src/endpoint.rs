//! Endpoint URLs for `/all`: the list syntax (commas or whitespace) and what makes one URL usable.

use http::Uri;
use thiserror::Error;

use crate::value::shorten;

/// A URL the agent cannot check.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EndpointError {
    #[error("`{url}` is not a usable URL: {why}")]
    BadUrl { url: String, why: String },
    #[error("no URL given: write http:// or https:// URLs separated by commas or whitespace")]
    Empty,
}

/// Every URL of a list, split at commas and whitespace.
pub fn split_urls(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|url| !url.is_empty())
}

/// One endpoint URL: http or https, with a host.
pub fn parse_url(url: &str) -> Result<Uri, EndpointError> {
    let bad = |why: &str| EndpointError::BadUrl {
        url: shorten(url),
        why: why.to_owned(),
    };
    let no_scheme = "it has no scheme, write it like http://localhost:8080/health";
    if !url.contains("://") {
        return Err(bad(no_scheme));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(bad(&format!(
                "scheme `{other}` is not supported, use http:// or https://"
            )));
        }
        None => return Err(bad(no_scheme)),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad(
            "it has no host, write it like http://localhost:8080/health",
        ));
    }
    Ok(uri)
}

/// Every URL of a non-empty list, each usable.
pub fn parse_urls(value: &str) -> Result<Vec<Uri>, EndpointError> {
    let urls = split_urls(value)
        .map(parse_url)
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(EndpointError::Empty);
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_at_commas_and_whitespace() {
        let urls: Vec<&str> = split_urls("http://a/x, https://b:1/y\nhttp://c").collect();
        assert_eq!(urls, ["http://a/x", "https://b:1/y", "http://c"]);
    }

    #[test]
    fn a_url_needs_an_http_scheme_and_a_host() {
        assert!(parse_url("http://localhost:8080/ready").is_ok());
        for (bad, why) in [
            ("localhost:8080", "no scheme"),
            ("ftp://host/x", "scheme `ftp`"),
            ("http://:80/x", "no host"),
            ("http://[", "invalid"),
        ] {
            let error = parse_url(bad).unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert_eq!(parse_urls(" , "), Err(EndpointError::Empty));
    }
}
