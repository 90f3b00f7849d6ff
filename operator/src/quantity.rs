//! Container resource quantities spelt the way the apiserver stores them.
//!
//! The apply step skips a child only when the stored object holds every field it would send,
//! text for text ([`crate::apply::contains`]). The apiserver rounds container requests and limits
//! up to milli-units and stores them in canonical form (`1000m` as `1`, `0.5Gi` as `512Mi`), so a
//! Deployment carrying the user's spelling would be re-applied on every reconcile. The plan
//! therefore reads each quantity as a value and spells that value in canonical form, which the
//! apiserver keeps as it is:
//!
//! - the value is rounded up to the next `1m`;
//! - written with a binary suffix (`Ki Mi Gi Ti Pi Ei`) when the user wrote one and the value is
//!   a whole number of at least 1024, else with a decimal one (`m "" k M G T P E`); the largest
//!   suffix that leaves a whole number wins. Exponents (`1e3`) are written with decimal suffixes.
//!
//! Values above 2^63-1 (where the apiserver caps binary quantities) are refused.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::InvalidSpec;

/// `spec.resources` with every request and limit in its stored form; a value that is not a
/// quantity, or is negative (the apiserver refuses those for containers), names its field.
pub fn stored_resources(
    resources: &ResourceRequirements,
) -> Result<ResourceRequirements, InvalidSpec> {
    let stored_map = |list: &str, quantities: &BTreeMap<String, Quantity>| {
        quantities
            .iter()
            .map(|(name, Quantity(text))| match stored_form(text) {
                Ok(stored) => Ok((name.clone(), Quantity(stored))),
                Err(message) => Err(InvalidSpec::new(
                    format!("spec.resources.{list}.{name}"),
                    format!("{message}, got {text:?}"),
                )),
            })
            .collect::<Result<BTreeMap<_, _>, _>>()
    };
    Ok(ResourceRequirements {
        requests: resources
            .requests
            .as_ref()
            .map(|requests| stored_map("requests", requests))
            .transpose()?,
        limits: resources
            .limits
            .as_ref()
            .map(|limits| stored_map("limits", limits))
            .transpose()?,
        claims: resources.claims.clone(),
    })
}

const DECIMAL_SUFFIXES: [&str; 8] = ["m", "", "k", "M", "G", "T", "P", "E"];
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
/// The largest value the apiserver stores unchanged, in milli-units.
const MAX_MILLIS: u128 = i64::MAX as u128 * 1000;

/// The canonical text for `text` as a container's request or limit, or why it is not one.
fn stored_form(text: &str) -> Result<String, String> {
    let (millis, binary) = parse_millis(text.trim())?;
    if millis == 0 {
        return Ok("0".to_owned());
    }
    if binary && millis.is_multiple_of(1000) && millis / 1000 >= 1024 {
        return Ok(with_largest_suffix(millis / 1000, 1024, &BINARY_SUFFIXES));
    }
    Ok(with_largest_suffix(millis, 1000, &DECIMAL_SUFFIXES))
}

/// `amount` (in units of `suffixes[0]`) divided by `step` as often as it stays whole.
fn with_largest_suffix(mut amount: u128, step: u128, suffixes: &[&str]) -> String {
    let mut power = 0;
    while amount.is_multiple_of(step) && power + 1 < suffixes.len() {
        amount /= step;
        power += 1;
    }
    format!("{amount}{}", suffixes[power])
}

/// The value of `text` rounded up to milli-units, and whether it was written with a binary suffix.
fn parse_millis(text: &str) -> Result<(u128, bool), String> {
    let malformed = || {
        "is not a quantity (a number with an optional suffix, such as 500m, 1.5, 128Mi or 1e3)"
            .to_owned()
    };
    let out_of_range = || "is out of range (at most 2^63-1)".to_owned();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(unsigned) => (true, unsigned),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let number_len = unsigned
        .bytes()
        .take_while(|byte| byte.is_ascii_digit() || *byte == b'.')
        .count();
    let (number, suffix) = unsigned.split_at(number_len);
    let (integer, fraction) = number.split_once('.').unwrap_or((number, ""));
    if integer.len() + fraction.len() == 0 || fraction.contains('.') {
        return Err(malformed());
    }
    // value = digits × 2^binary_power × 10^decimal_power
    let (binary_power, decimal_power) = match suffix {
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "" => (0, 0),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        _ => {
            let exponent = suffix.strip_prefix(['e', 'E']).ok_or_else(malformed)?;
            let unsigned = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(malformed());
            }
            (0, exponent.parse::<i32>().map_err(|_| out_of_range())?)
        }
    };
    let digits: u128 = format!("{integer}{fraction}")
        .parse()
        .map_err(|_| out_of_range())?;
    if digits == 0 {
        return Ok((0, binary_power > 0));
    }
    if negative {
        return Err("must not be negative".to_owned());
    }
    let scaled = digits
        .checked_mul(1u128 << binary_power)
        .ok_or_else(out_of_range)?;
    let shift = i64::from(decimal_power) + 3 - fraction.len() as i64;
    let millis = if shift >= 0 {
        u32::try_from(shift)
            .ok()
            .and_then(|shift| 10u128.checked_pow(shift))
            .and_then(|scale| scaled.checked_mul(scale))
            .ok_or_else(out_of_range)?
    } else {
        match u32::try_from(-shift)
            .ok()
            .and_then(|shift| 10u128.checked_pow(shift))
        {
            Some(divisor) => scaled.div_ceil(divisor),
            // The divisor exceeds any u128, so the value is a fraction of `1m`: rounds up to one.
            None => 1,
        }
    };
    if millis > MAX_MILLIS {
        return Err(out_of_range());
    }
    Ok((millis, binary_power > 0))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apply::contains;

    /// Inputs in the decimal and binary suffix families and the text kube-apiserver (1.36,
    /// server-side dry run) stores for them in a Deployment's container resources. Each stored
    /// text is what the plan sends, so the stored Deployment matches the built one.
    const STORED: &[(&str, &str)] = &[
        ("100m", "100m"),
        ("64Mi", "64Mi"),
        ("1", "1"),
        ("1500", "1500"),
        ("1Ki", "1Ki"),
        ("1025Mi", "1025Mi"),
        ("0.5", "500m"),
        ("1000m", "1"),
        ("2000m", "2"),
        ("1.5", "1500m"),
        ("0.25", "250m"),
        (".5", "500m"),
        ("0.1m", "1m"),
        ("0.000000001", "1m"),
        ("1.0", "1"),
        ("1000", "1k"),
        ("1000000", "1M"),
        ("1.5k", "1500"),
        ("1500k", "1500k"),
        ("0.5G", "500M"),
        ("1000M", "1G"),
        ("1000P", "1E"),
        ("1.5E", "1500P"),
        ("1n", "1m"),
        ("1000n", "1m"),
        ("0.5n", "1m"),
        ("1.5u", "1m"),
        ("1234567890123456789", "1234567890123456789"),
        ("1.5Gi", "1536Mi"),
        ("1024Mi", "1Gi"),
        ("8Mi", "8Mi"),
        ("2048Ki", "2Mi"),
        ("0.5Gi", "512Mi"),
        (".5Gi", "512Mi"),
        ("0.5Ki", "512"),
        ("1.5Ki", "1536"),
        ("1.1Ki", "1126400m"),
        ("1.0001Ki", "1024103m"),
        ("0.5Mi", "512Ki"),
        ("7Ei", "7Ei"),
        ("1.5e3", "1500"),
        ("15e2", "1500"),
        ("0", "0"),
        ("0m", "0"),
        ("0.0", "0"),
        ("0Mi", "0"),
        ("-0", "0"),
        (" 250m ", "250m"),
    ];

    /// Spellings the apiserver would keep as written but the plan sends in canonical form; the
    /// sent text is stored unchanged as well, being canonical.
    const RESPELT: &[(&str, &str)] = &[
        ("1.", "1"),
        ("1.Gi", "1Gi"),
        ("01", "1"),
        ("+1", "1"),
        ("1e3", "1k"),
        ("1E3", "1k"),
        ("1e6", "1M"),
        ("1000e0", "1k"),
        ("5e-1", "500m"),
        ("1.5e-3", "2m"),
        ("1e-10", "1m"),
    ];

    #[test]
    fn quantities_are_sent_as_the_apiserver_stores_them() {
        for (input, stored) in STORED.iter().chain(RESPELT) {
            assert_eq!(stored_form(input).as_deref(), Ok(*stored), "{input:?}");
        }
    }

    #[test]
    fn a_sent_form_is_sent_again_unchanged() {
        for (_, stored) in STORED.iter().chain(RESPELT) {
            assert_eq!(stored_form(stored).as_deref(), Ok(*stored), "{stored:?}");
        }
    }

    #[test]
    fn a_stored_deployment_respelt_by_the_apiserver_is_up_to_date() {
        let user = |cpu: &str, memory: &str| ResourceRequirements {
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
            ])),
            ..ResourceRequirements::default()
        };
        let sent = |cpu: &str, memory: &str| {
            serde_json::to_value(stored_resources(&user(cpu, memory)).unwrap()).unwrap()
        };
        let stored = json!({"limits": {"cpu": "1", "memory": "512Mi"}});
        assert!(contains(&stored, &sent("1000m", "0.5Gi")));
        assert!(contains(&stored, &sent("1", "524288Ki")));
        assert!(!contains(&stored, &sent("1001m", "0.5Gi")));
        assert!(!contains(&stored, &sent("1", "0.5G")));
    }

    #[test]
    fn malformed_negative_and_huge_quantities_are_refused() {
        for input in [
            "", ".", "abc", "1x", "1 Gi", "1Mi5", "1e", "1e+", "1K", "1.5.5", "1k1", "Mi",
        ] {
            let err = stored_form(input).unwrap_err();
            assert!(err.contains("not a quantity"), "{input:?}: {err}");
        }
        for input in ["-1", "-0.5", "-64Mi"] {
            assert_eq!(stored_form(input).unwrap_err(), "must not be negative");
        }
        for input in [
            "16Ei",
            "1000E",
            "1e21",
            "9223372036854775808",
            "1e99999999999",
        ] {
            let err = stored_form(input).unwrap_err();
            assert!(err.contains("out of range"), "{input:?}: {err}");
        }
        assert_eq!(
            stored_form("9223372036854775807").unwrap(),
            "9223372036854775807"
        );
    }
}
