//! Kubernetes quantities (`10m`, `0.5`, `16Mi`, `1e3`) for the agent's requests and limits: syntax and value.

use thiserror::Error;

use crate::value::shorten;

/// Suffixes and what they multiply by; binary ones first so `Mi` is not read as `M`.
const SUFFIXES: [(&str, f64); 15] = [
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("Pi", 1_125_899_906_842_624.0),
    ("Ei", 1_152_921_504_606_846_976.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// A value that is not a positive Kubernetes quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "`{0}` is not a Kubernetes quantity: write a positive number with an optional suffix, e.g. 10m, 0.5, 16Mi or 1e3"
)]
pub struct QuantityError(pub String);

/// A checked quantity: the text as written (what the pod spec gets) and its value, for comparing request and limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub text: String,
    pub value: f64,
}

/// `<positive number><suffix>` where the suffix is one of [`SUFFIXES`], an exponent (`e3`, `E-2`) or nothing.
pub fn parse_quantity(text: &str) -> Result<Quantity, QuantityError> {
    let bad = || QuantityError(shorten(text));
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let number: f64 = number.parse().map_err(|_| bad())?;
    if number <= 0.0 {
        return Err(bad());
    }
    let factor = match SUFFIXES.iter().find(|(s, _)| *s == suffix) {
        Some((_, factor)) => *factor,
        None if suffix.is_empty() => 1.0,
        None => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(bad)?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            digits.parse::<u32>().map_err(|_| bad())?;
            let exponent: i32 = exponent.parse().map_err(|_| bad())?;
            10f64.powi(exponent)
        }
    };
    Ok(Quantity {
        text: text.to_owned(),
        value: number * factor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        for ok in ["10m", "0.5", "16Mi", "1e3", "2Gi", "1E-2", "3k"] {
            assert!(parse_quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "10 m", "-1", "5XB", "0", ".", "1e", "1e+"] {
            assert!(parse_quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_compare_across_suffixes() {
        let value = |q: &str| parse_quantity(q).unwrap().value;
        assert_eq!(value("1Ki"), 1024.0);
        assert_eq!(value("500m"), 0.5);
        assert_eq!(value("1e3"), 1000.0);
        assert!(value("64Mi") > value("32Mi"));
        assert!(value("1G") < value("1Gi"));
    }
}
