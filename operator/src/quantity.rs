//! Container resource quantities in the form the apiserver stores them.
//!
//! The apiserver parses every `resource.Quantity`, rounds container requests and limits up to
//! milli-units (`SetDefaults_ResourceList` in k8s.io/kubernetes `pkg/apis/core/v1`) and
//! serializes them again (k8s.io/apimachinery `pkg/api/resource`): `0.5` is stored as `500m`,
//! `1000m` as `1`, `1.5Gi` as `1536Mi`. A Deployment built with the user's spelling would never
//! match the stored one, so the apply step would resend it on every reconcile. [`stored_form`]
//! follows the same rules:
//!
//! - a value already in canonical form and with no digits below `1m` keeps the caller's text
//!   (sign and leading zeros included), as the apiserver keeps the text it parsed;
//! - otherwise the value is rounded up (away from zero) to the next `1m` and written with the
//!   largest suffix of its kind (decimal `m "" k M G T P E`, binary `Ki Mi Gi Ti Pi Ei`, or an
//!   exponent `e<n>`) that leaves no fractional digits;
//! - a binary value below 1024 in magnitude, or with a fractional part, is written as decimal,
//!   and binary values above 2^63-1 are capped there.
//!
//! Unlike the apiserver's arbitrary-precision arithmetic, ours is 128-bit: a quantity with more
//! than 38 significant digits is refused as out of range.

use std::cmp::Ordering;
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
            .map(|(name, Quantity(text))| {
                let field = format!("spec.resources.{list}.{name}");
                let stored = stored_form(text).map_err(|message| {
                    InvalidSpec::new(&field, format!("{message}, got {text:?}"))
                })?;
                if stored.starts_with('-') {
                    return Err(InvalidSpec::new(
                        field,
                        format!("must not be negative, got {text:?}"),
                    ));
                }
                Ok((name.clone(), Quantity(stored)))
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

/// The text the apiserver stores for `text` as a container's request or limit, or why it is not
/// a quantity.
fn stored_form(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    let parts = split(text)?;
    let (base, exponent) = interpret(parts.suffix)
        .ok_or_else(|| format!("has an unknown suffix {:?}", parts.suffix))?;
    let parsed = match fast_path(&parts, base, exponent) {
        Some(parsed) => parsed,
        None => Parsed {
            value: slow_path(&parts, base, exponent)?,
            kept: false,
        },
    };
    if parsed.kept && parsed.value.exponent >= MILLI {
        return Ok(text.to_owned());
    }
    parsed.value.round_up(MILLI).to_text()
}

/// Which suffix family a quantity was written with; it decides how it is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    /// `m`, `k`, `M`, ...: powers of 1000.
    DecimalSi,
    /// `e3`, `E-2`: any power of ten.
    DecimalExponent,
    /// `Ki`, `Mi`, ...: powers of 1024.
    BinarySi,
}

/// A quantity's text split as the apiserver's scanner splits it.
struct Parts<'a> {
    negative: bool,
    /// Integer digits without leading zeros; `"0"` when there are none.
    integer: &'a str,
    /// Fractional digits, possibly empty.
    fraction: &'a str,
    suffix: &'a str,
}

/// A parsed value: `±magnitude × 10^exponent`, with the suffix family it came with.
#[derive(Debug, Clone, Copy)]
struct Value {
    negative: bool,
    magnitude: u128,
    exponent: i32,
    base: Base,
}

struct Parsed {
    value: Value,
    /// The text is canonical: unless rounding changes the value, it is stored as written.
    kept: bool,
}

/// Digits the apiserver's 64-bit path takes on (`maxInt64Factors`).
const DIGITS_IN_I64: usize = 18;
/// Quantities are parsed to at most nine fractional digits (`1n`)...
const NANO: i32 = -9;
/// ... and container resources are rounded on to three (`1m`).
const MILLI: i32 = -3;
const OUT_OF_RANGE: &str = "is out of range (more than 38 significant digits)";

fn split(text: &str) -> Result<Parts<'_>, String> {
    let malformed = || {
        "is not a quantity (a number with an optional suffix, such as 500m, 1.5, 128Mi or 1e3)"
            .to_owned()
    };
    let (negative, unsigned) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let unpadded = unsigned.trim_start_matches('0');
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let integer_len = digits(unpadded);
    let (integer, rest) = unpadded.split_at(integer_len);
    let integer = if integer.is_empty() { "0" } else { integer };
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after_point) => after_point.split_at(digits(after_point)),
        None => ("", rest),
    };
    // The suffix: letters of the suffix alphabet, then an optional sign and digits.
    let letters = rest
        .bytes()
        .take_while(|byte| b"eEinumkKMGTP".contains(byte))
        .count();
    let tail = &rest[letters..];
    let tail = tail.strip_prefix(['-', '+']).unwrap_or(tail);
    if !tail.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(malformed());
    }
    Ok(Parts {
        negative,
        integer,
        fraction,
        suffix: rest,
    })
}

/// The base family and power of ten (decimal) or two (binary) a suffix stands for.
fn interpret(suffix: &str) -> Option<(Base, i32)> {
    let decimal = match suffix {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(exponent) = decimal {
        return Some((Base::DecimalSi, exponent));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(exponent) = binary {
        return Some((Base::BinarySi, exponent));
    }
    let power = suffix.strip_prefix(['e', 'E'])?;
    // Go converts the parsed int64 to int32 by truncation.
    let exponent = power.parse::<i64>().ok()? as i32;
    Some((Base::DecimalExponent, exponent))
}

/// The apiserver's 64-bit path, taken when the digits surely fit; `None` sends the value to the
/// exact path. A value already in canonical form is kept as written.
fn fast_path(parts: &Parts, base: Base, exponent: i32) -> Option<Parsed> {
    let digits = parts.integer.len() + parts.fraction.len();
    let (scale, multiplier) = match base {
        Base::DecimalSi | Base::DecimalExponent => {
            if digits > DIGITS_IN_I64 {
                return None;
            }
            (exponent, 1)
        }
        Base::BinarySi => {
            // About three decimal digits per factor of 1024 are left for the number.
            let room = 15 - parts.integer.len() as i32 - exponent * 3 / 10 - 1;
            if !parts.fraction.is_empty() || room < 0 {
                return None;
            }
            (0, 1i64 << exponent)
        }
    };
    let scale = scale - parts.fraction.len() as i32;
    if scale < NANO {
        return None;
    }
    let shifted = format!("{}{}", parts.integer, parts.fraction);
    let number: i64 = shifted.parse().ok()?;
    let magnitude = number.checked_mul(multiplier)?;
    let kept = match base {
        Base::BinarySi => number & 0x07 != 0,
        Base::DecimalSi | Base::DecimalExponent => {
            scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0')
        }
    };
    Some(Parsed {
        value: Value {
            negative: parts.negative,
            magnitude: magnitude as u128,
            exponent: scale,
            base,
        },
        kept,
    })
}

/// The apiserver's arbitrary-precision path: exact value, rounded up to `1n`, binary values
/// capped at 2^63-1 and written as decimal below 1.
fn slow_path(parts: &Parts, base: Base, exponent: i32) -> Result<Value, String> {
    let digits = format!("{}{}", parts.integer, parts.fraction);
    let mut magnitude: u128 = digits.parse().map_err(|_| OUT_OF_RANGE.to_owned())?;
    let mut power = -(parts.fraction.len() as i32);
    match base {
        Base::DecimalSi | Base::DecimalExponent => power += exponent,
        Base::BinarySi => {
            magnitude = magnitude
                .checked_mul(1 << exponent)
                .ok_or_else(|| OUT_OF_RANGE.to_owned())?;
        }
    }
    let mut value = Value {
        negative: parts.negative,
        magnitude,
        exponent: power,
        base,
    }
    .round_up(NANO);
    if base == Base::BinarySi {
        let max = i64::MAX as u128;
        if !value.negative && value.cmp_integer(max) == Ordering::Greater {
            value.magnitude = max;
            value.exponent = 0;
        }
        if value.magnitude != 0 && value.cmp_integer(1) == Ordering::Less {
            value.base = Base::DecimalSi;
        }
    }
    Ok(value)
}

impl Value {
    /// The value rounded away from zero to a multiple of `10^exponent`.
    fn round_up(self, exponent: i32) -> Self {
        if self.exponent >= exponent || self.magnitude == 0 {
            return self;
        }
        let magnitude = match 10u128.checked_pow(exponent.abs_diff(self.exponent)) {
            Some(divisor) => self.magnitude.div_ceil(divisor),
            // The magnitude is below the divisor: what is left rounds up to one.
            None => 1,
        };
        Self {
            magnitude,
            exponent,
            ..self
        }
    }

    /// Compares the magnitude with the integer `other`.
    fn cmp_integer(&self, other: u128) -> Ordering {
        if self.exponent >= 0 {
            match 10u128
                .checked_pow(self.exponent.unsigned_abs())
                .and_then(|scale| self.magnitude.checked_mul(scale))
            {
                Some(value) => value.cmp(&other),
                None => Ordering::Greater,
            }
        } else {
            match 10u128
                .checked_pow(self.exponent.unsigned_abs())
                .and_then(|scale| other.checked_mul(scale))
            {
                Some(scaled) => self.magnitude.cmp(&scaled),
                None => Ordering::Less,
            }
        }
    }

    /// The integer value, when there is no fractional part and it fits.
    fn as_integer(&self) -> Option<u128> {
        if self.exponent >= 0 {
            return 10u128
                .checked_pow(self.exponent.unsigned_abs())?
                .checked_mul(self.magnitude);
        }
        let scale = 10u128.checked_pow(self.exponent.unsigned_abs())?;
        self.magnitude
            .is_multiple_of(scale)
            .then(|| self.magnitude / scale)
    }

    fn to_text(self) -> Result<String, String> {
        if self.magnitude == 0 {
            return Ok("0".to_owned());
        }
        let sign = if self.negative { "-" } else { "" };
        // Binary only from 1024 up and without a fractional part; decimal otherwise.
        if self.base == Base::BinarySi
            && self.cmp_integer(1024) != Ordering::Less
            && let Some(mut integer) = self.as_integer()
        {
            let mut power = 0;
            while integer.is_multiple_of(1024) {
                integer /= 1024;
                power += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][power];
            return Ok(format!("{sign}{integer}{suffix}"));
        }
        let (mut magnitude, mut exponent) = (self.magnitude, self.exponent);
        while magnitude.is_multiple_of(10) {
            magnitude /= 10;
            exponent += 1;
        }
        while exponent.rem_euclid(3) != 0 {
            magnitude = magnitude
                .checked_mul(10)
                .ok_or_else(|| OUT_OF_RANGE.to_owned())?;
            exponent -= 1;
        }
        let suffix = match self.base {
            Base::DecimalExponent if exponent == 0 => String::new(),
            Base::DecimalExponent => format!("e{exponent}"),
            // Beyond `E` the apiserver has no suffix and writes none.
            Base::DecimalSi | Base::BinarySi => match exponent {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                18 => "E",
                _ => "",
            }
            .to_owned(),
        };
        Ok(format!("{sign}{magnitude}{suffix}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs and the text kube-apiserver (1.36, server-side dry run) stores for them in a
    /// Deployment's container resources
    /// (negative values are refused there, so those rows follow the parsing rules alone).
    const STORED: &[(&str, &str)] = &[
        // Already canonical: kept as written.
        ("100m", "100m"),
        ("64Mi", "64Mi"),
        ("1", "1"),
        ("1.", "1."),
        ("1.Gi", "1.Gi"),
        ("1500", "1500"),
        ("1e3", "1e3"),
        ("1Ki", "1Ki"),
        ("1025Mi", "1025Mi"),
        // Milli-units and whole units.
        ("0.5", "500m"),
        ("1000m", "1"),
        ("2000m", "2"),
        ("1.5", "1500m"),
        ("0.25", "250m"),
        (".5", "500m"),
        ("0.1m", "1m"),
        ("1.5e-3", "2e-3"),
        ("0.000000001", "1m"),
        ("1.0", "1"),
        ("1000", "1k"),
        ("1000000", "1M"),
        // Decimal SI suffixes.
        ("1.5k", "1500"),
        ("1500k", "1500k"),
        ("0.5G", "500M"),
        ("1000M", "1G"),
        ("1000P", "1E"),
        ("1.5E", "1500P"),
        ("1000E", "1"),
        ("1n", "1m"),
        ("1000n", "1m"),
        ("0.5n", "1m"),
        ("1.5u", "1m"),
        ("1234567890123456789", "1234567890123456789"),
        // Binary suffixes.
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
        ("16Ei", "9223372036854775807"),
        // Exponents.
        ("1e6", "1e6"),
        ("1e21", "1e21"),
        ("1E3", "1E3"),
        ("1.5e3", "1500"),
        ("15e2", "1500"),
        ("1000e0", "1e3"),
        ("5e-1", "500e-3"),
        ("1e-10", "1e-3"),
        // Zero, signs and leading zeros.
        ("0", "0"),
        ("0m", "0"),
        ("0.0", "0"),
        ("0Mi", "0"),
        ("-0", "0"),
        ("01", "01"),
        ("+1", "+1"),
        ("-1", "-1"),
        ("-0.5", "-500m"),
        (" 250m ", "250m"),
    ];

    #[test]
    fn quantities_are_written_as_the_apiserver_stores_them() {
        for (input, stored) in STORED {
            assert_eq!(
                stored_form(input).as_deref(),
                Ok(*stored),
                "stored form of {input:?}"
            );
        }
    }

    #[test]
    fn malformed_quantities_are_refused() {
        for input in ["", "abc", "1x", "1 Gi", "1Mi5", "1e", "1K", "1.5.5", "1k1"] {
            assert!(stored_form(input).is_err(), "{input:?} is not a quantity");
        }
        assert!(
            stored_form("123456789012345678901234567890123456789012")
                .unwrap_err()
                .contains("out of range")
        );
    }
}
