//! Values of rule types: conversion into the representation a side's field wants, checking,
//! and the normal form used to compare values.
//!
//! A rule's [`DataType`] says what a value *means*; the [`FieldType`] of the field it is
//! written to says how that API *carries* it. A decimal goes out as a JSON number to a
//! `number` field (Keap's `product_price`) and as a string to a `decimal` field; a country as
//! alpha-3 to a `country-code-alpha3` field. Decimals never pass through binary floating
//! point arithmetic: a JSON number is read through its shortest textual form, which is exact
//! for the value the API sent, and written back from decimal text.
//!
//! Conventions: null stays null for every type; an empty or blank string becomes null for
//! types that cannot be empty (numbers, dates, booleans, codes), and stays an empty string
//! for text, e-mail and phone.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::Value;

use crate::mapping::country::{self, Country};
use crate::mapping::path::kind_name;
use crate::spec::flow::DataType;
use crate::spec::system::FieldType;

/// What a side's field looks like, as far as conversion cares.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldShape<'a> {
    /// The field's API type, when the system file declares the field.
    pub field_type: Option<FieldType>,
    /// The allowed values of an `enum` field.
    pub values: Option<&'a [String]>,
}

/// Converts `value` to the rule type `data_type`, in the representation `shape` wants.
/// The error is a reason for a user, without the value (the caller adds it).
pub fn coerce(data_type: DataType, value: Value, shape: FieldShape<'_>) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if is_blank(&value)
        && !matches!(
            data_type,
            DataType::String | DataType::Email | DataType::Phone
        )
    {
        return Ok(Value::Null);
    }
    let field_type = shape.field_type;
    match data_type {
        DataType::String => match value {
            Value::String(_) => Ok(value),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(format!("expected text, found {}", kind_name(&other))),
        },
        DataType::Integer => {
            let n = integer(&value)?;
            Ok(match field_type {
                Some(FieldType::String | FieldType::Decimal) => Value::String(n.to_string()),
                _ => Value::from(n),
            })
        }
        DataType::Decimal => {
            let d = decimal(&value)?;
            decimal_out(d, field_type)
        }
        DataType::Boolean => {
            let b = boolean(&value)?;
            Ok(match field_type {
                Some(FieldType::String) => Value::String(b.to_string()),
                _ => Value::Bool(b),
            })
        }
        DataType::Date => {
            let date = date(&value)?;
            Ok(match field_type {
                Some(FieldType::Datetime) => Value::String(format!("{date}T00:00:00Z")),
                // A value already written as `YYYY-MM-DD` is kept as it is.
                _ if matches!(&value, Value::String(s) if iso_date(s).is_some()) => value,
                _ => Value::String(date.to_string()),
            })
        }
        DataType::Datetime => {
            let instant = datetime(&value)?;
            Ok(match field_type {
                Some(FieldType::Date) => Value::String(instant.date_naive().to_string()),
                // A value already in the normal form is kept as it is.
                _ if matches!(&value, Value::String(s) if is_normal_instant(s)) => value,
                _ => Value::String(format_instant(&instant)),
            })
        }
        DataType::Email => {
            let text = text(&value)?;
            let trimmed = text.trim();
            if !trimmed.is_empty() {
                check_email(trimmed)?;
            }
            Ok(trimmed_value(value))
        }
        DataType::Phone => {
            let text = text(&value)?;
            if text.trim().is_empty() {
                return Ok(Value::String(String::new()));
            }
            Ok(Value::String(match e164(text, None)? {
                Some(international) => international,
                None => text.trim().to_string(),
            }))
        }
        DataType::CountryCode => {
            let country = find_country(&value)?;
            Ok(Value::String(country_code(country, field_type).to_string()))
        }
        DataType::CurrencyCode => {
            let text = text(&value)?.trim().to_ascii_uppercase();
            if country::is_currency(&text) {
                Ok(Value::String(text))
            } else {
                Err("not an ISO 4217 currency code".into())
            }
        }
        DataType::Enum => {
            if let (Some(values), Value::String(s)) = (shape.values, &value)
                && !values.iter().any(|v| v == s)
            {
                return Err(format!("not one of the allowed values {}", list(values)));
            }
            match value {
                Value::Array(_) | Value::Object(_) => {
                    Err(format!("expected one value, found {}", kind_name(&value)))
                }
                other => Ok(other),
            }
        }
        DataType::Reference => match value {
            Value::String(_) | Value::Number(_) => Ok(value),
            other => Err(format!("expected a record id, found {}", kind_name(&other))),
        },
        DataType::Array => match list_from_text(value) {
            Value::Array(items) => Ok(Value::Array(items)),
            other => Err(format!("expected a list, found {}", kind_name(&other))),
        },
    }
}

/// The data type a field of an API holds, for values written in the field's own terms (the
/// output of an `inverse` template). `None` where the value is taken as it is.
pub fn data_type_of(field_type: FieldType) -> Option<DataType> {
    Some(match field_type {
        FieldType::String | FieldType::Url | FieldType::Enum => DataType::String,
        FieldType::Integer => DataType::Integer,
        FieldType::Number | FieldType::Decimal => DataType::Decimal,
        FieldType::Boolean => DataType::Boolean,
        FieldType::Date => DataType::Date,
        FieldType::Datetime => DataType::Datetime,
        FieldType::Email => DataType::Email,
        FieldType::Phone => DataType::Phone,
        FieldType::CountryCode | FieldType::CountryCodeAlpha3 => DataType::CountryCode,
        FieldType::CurrencyCode => DataType::CurrencyCode,
        FieldType::Reference | FieldType::Id | FieldType::Object | FieldType::Array => return None,
    })
}

/// The normal form of a value of `data_type`, used to compare values and to hash them:
/// equal meanings give equal normal forms (`12.50` and `"12.5"`, `no` and `NOR`, e-mail case,
/// instants in any offset). A value that does not convert is kept as it is.
pub fn normalise(data_type: DataType, value: &Value) -> Value {
    if value.is_null() {
        return Value::Null;
    }
    let shape = FieldShape::default();
    match data_type {
        DataType::Decimal => match decimal(value) {
            Ok(d) => Value::String(d.normalize().to_string()),
            Err(_) => value.clone(),
        },
        DataType::Email => match value {
            Value::String(s) => Value::String(s.trim().to_lowercase()),
            other => other.clone(),
        },
        DataType::Phone => match value {
            Value::String(s) => match e164(s, None) {
                Ok(Some(international)) => Value::String(international),
                _ => Value::String(s.chars().filter(char::is_ascii_digit).collect()),
            },
            other => other.clone(),
        },
        DataType::Reference => match value {
            Value::Number(n) => Value::String(n.to_string()),
            other => other.clone(),
        },
        DataType::Enum | DataType::String | DataType::Array => value.clone(),
        _ => coerce(data_type, value.clone(), shape).unwrap_or_else(|_| value.clone()),
    }
}

/// A list written as JSON text (what a template's `| tojson` gives) as the list itself; any
/// other value as it is.
pub fn list_from_text(value: Value) -> Value {
    match value {
        Value::String(text) if text.trim_start().starts_with('[') => {
            match serde_json::from_str::<Value>(&text) {
                Ok(list @ Value::Array(_)) => list,
                _ => Value::String(text),
            }
        }
        other => other,
    }
}

fn is_blank(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.trim().is_empty())
}

fn trimmed_value(value: Value) -> Value {
    match value {
        Value::String(s) if s.trim().len() != s.len() => Value::String(s.trim().to_string()),
        other => other,
    }
}

fn list(values: &[String]) -> String {
    let shown: Vec<String> = values.iter().take(12).map(|v| format!("`{v}`")).collect();
    let more = if values.len() > 12 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

fn text(value: &Value) -> Result<&str, String> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(format!("expected text, found {}", kind_name(other))),
    }
}

/// Reads a whole number from a JSON number or numeric text (`"42"`, `"42.0"`).
pub fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            let d = decimal(value)?;
            whole(d)
        }
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                return Ok(i);
            }
            whole(parse_decimal(s).map_err(|_| "not a whole number".to_string())?)
        }
        other => Err(format!(
            "expected a whole number, found {}",
            kind_name(other)
        )),
    }
}

fn whole(d: Decimal) -> Result<i64, String> {
    if !d.is_integer() {
        return Err("not a whole number".into());
    }
    d.to_i64()
        .ok_or_else(|| "too large for a whole number".to_string())
}

/// Parses decimal text exactly: `12.50`, `-3`, `1e3`, `+0.5`.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let text = text.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() {
        return Err("not a decimal number".into());
    }
    if text.contains(['e', 'E']) {
        return Decimal::from_scientific(text).map_err(|_| "not a decimal number".to_string());
    }
    Decimal::from_str_exact(text).map_err(|e| match e {
        rust_decimal::Error::Underflow => {
            "has more than 28 decimal places and cannot be kept exactly".to_string()
        }
        rust_decimal::Error::ExceedsMaximumPossibleValue
        | rust_decimal::Error::LessThanMinimumPossibleValue => {
            "too large for a decimal number".to_string()
        }
        _ => "not a decimal number".to_string(),
    })
}

/// Reads a decimal from a JSON number (through its textual form) or decimal text.
pub fn decimal(value: &Value) -> Result<Decimal, String> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(Decimal::from(i));
            }
            if let Some(u) = n.as_u64() {
                return Ok(Decimal::from(u));
            }
            // `Number`'s text is the shortest form that reads back as the same double: the
            // digits the API sent, not the binary approximation.
            parse_decimal(&n.to_string())
        }
        Value::String(s) => parse_decimal(s),
        other => Err(format!(
            "expected a decimal number, found {}",
            kind_name(other)
        )),
    }
}

fn decimal_out(d: Decimal, field_type: Option<FieldType>) -> Result<Value, String> {
    match field_type {
        // JSON text of the decimal: integers stay integers, fractions become the double
        // nearest to the decimal, which prints back as the same digits.
        Some(FieldType::Number) => serde_json::from_str::<Value>(&d.to_string())
            .ok()
            .filter(Value::is_number)
            .ok_or_else(|| "cannot be written as a JSON number".to_string()),
        Some(FieldType::Integer) => whole(d).map(Value::from),
        _ => Ok(Value::String(d.to_string())),
    }
}

/// Reads a boolean from `true`/`false`, `1`/`0`, and the texts `true`, `false`, `yes`, `no`,
/// `y`, `n`, `on`, `off`, `1`, `0` in any case.
pub fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Ok(true),
            Some(0) => Ok(false),
            _ => Err("a number other than 1 or 0 is not a boolean".into()),
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Ok(true),
            "false" | "no" | "n" | "off" | "0" => Ok(false),
            _ => Err("not a boolean (true/false, yes/no, 1/0)".into()),
        },
        other => Err(format!("expected a boolean, found {}", kind_name(other))),
    }
}

/// Reads `YYYY-MM-DD` exactly, without a format string.
fn iso_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}

/// Reads a calendar date: `YYYY-MM-DD`, or the date part of a date-time as written.
pub fn date(value: &Value) -> Result<NaiveDate, String> {
    let text = text(value)?.trim();
    if let Some(date) = iso_date(text) {
        return Ok(date);
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.date_naive());
    }
    if let Ok(instant) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Ok(instant.date_naive());
    }
    if let Some(naive) = naive_datetime(text) {
        return Ok(naive.date());
    }
    Err("not a date (YYYY-MM-DD)".into())
}

fn naive_datetime(text: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
}

/// Reads an instant: RFC 3339 (`2024-05-01T12:00:00Z`, `...+02:00`), the `+0000` form of
/// Salesforce and Keap (`2024-05-01T12:00:00.000+0000`), a date-time without offset (taken as
/// UTC), a date (midnight UTC), or whole seconds since 1970 as a JSON number.
pub fn datetime(value: &Value) -> Result<DateTime<Utc>, String> {
    if let Value::Number(n) = value {
        return n
            .as_i64()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or_else(|| "not a time in seconds since 1970".to_string());
    }
    let text = text(value)?.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Ok(instant) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Ok(instant.with_timezone(&Utc));
    }
    if let Some(naive) = naive_datetime(text) {
        return Ok(naive.and_utc());
    }
    if let Some(date) = iso_date(text)
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc());
    }
    Err("not a date-time (RFC 3339, like 2024-05-01T12:00:00Z)".into())
}

/// Whether text is already an instant in the normal form (`YYYY-MM-DDTHH:MM:SSZ`): upper-case
/// `T` and `Z` and no fraction of a second, once it parsed as an instant.
fn is_normal_instant(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 20 && b[10] == b'T' && b[19] == b'Z'
}

/// Writes an instant as RFC 3339 in UTC with `Z`, with fractional seconds only when present.
pub fn format_instant(instant: &DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn check_email(text: &str) -> Result<(), String> {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return Err("not an e-mail address (no `@`)".into());
    };
    if local.is_empty() || domain.is_empty() {
        return Err("not an e-mail address".into());
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("an e-mail address cannot contain spaces".into());
    }
    Ok(())
}

fn find_country(value: &Value) -> Result<&'static Country, String> {
    let text = text(value)?;
    country::find(text).ok_or_else(|| "not an ISO 3166-1 country code or name".to_string())
}

/// The code of `country` that a field of `field_type` carries: alpha-3 for
/// `country-code-alpha3`, alpha-2 otherwise.
pub fn country_code(country: &Country, field_type: Option<FieldType>) -> &'static str {
    match field_type {
        Some(FieldType::CountryCodeAlpha3) => country.alpha3,
        _ => country.alpha2,
    }
}

/// Countries whose national numbers keep their leading 0 after the country code.
const KEEPS_TRUNK_ZERO: &[&str] = &["IT", "SM", "VA"];

/// Normalises a phone number to E.164 (`+4722334455`). Numbers written internationally
/// (`+47 22 33 44 55`, `0047...`) always convert; national numbers need `default_country`
/// (its calling code is put in front and the trunk `0` dropped) and give `None` without it.
/// Spaces, dashes, dots, slashes and parentheses are ignored; anything else is an error.
pub fn e164(text: &str, default_country: Option<&Country>) -> Result<Option<String>, String> {
    let text = text.trim();
    let mut digits = String::with_capacity(text.len() + 4);
    let mut plus = false;
    for (i, c) in text.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
            other => return Err(format!("`{other}` does not belong in a phone number")),
        }
    }
    if digits.is_empty() {
        return Err("a phone number needs digits".into());
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(country) = default_country {
        if country.calling_code == 0 {
            return Err(format!("{} has no calling code of its own", country.name));
        }
        let national = if KEEPS_TRUNK_ZERO.contains(&country.alpha2) {
            digits.as_str()
        } else {
            digits.trim_start_matches('0')
        };
        format!("{}{national}", country.calling_code)
    } else {
        return Ok(None);
    };
    if !(7..=15).contains(&international.len()) || international.starts_with('0') {
        return Err("not a valid international phone number (E.164 has 7 to 15 digits)".into());
    }
    Ok(Some(format!("+{international}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to(
        data_type: DataType,
        value: Value,
        field_type: Option<FieldType>,
    ) -> Result<Value, String> {
        coerce(
            data_type,
            value,
            FieldShape {
                field_type,
                values: None,
            },
        )
    }

    #[test]
    fn strings() {
        assert_eq!(to(DataType::String, json!("a"), None), Ok(json!("a")));
        assert_eq!(to(DataType::String, json!(12), None), Ok(json!("12")));
        assert_eq!(to(DataType::String, json!(""), None), Ok(json!("")));
        assert_eq!(to(DataType::String, json!(null), None), Ok(json!(null)));
        assert!(
            to(DataType::String, json!({"a": 1}), None)
                .unwrap_err()
                .contains("object")
        );
    }

    #[test]
    fn integers() {
        assert_eq!(to(DataType::Integer, json!("42"), None), Ok(json!(42)));
        assert_eq!(to(DataType::Integer, json!(42.0), None), Ok(json!(42)));
        assert_eq!(
            to(DataType::Integer, json!(" 7 "), Some(FieldType::String)),
            Ok(json!("7"))
        );
        assert_eq!(to(DataType::Integer, json!(""), None), Ok(json!(null)));
        assert!(
            to(DataType::Integer, json!("4.5"), None)
                .unwrap_err()
                .contains("whole")
        );
        assert!(to(DataType::Integer, json!("abc"), None).is_err());
        assert!(to(DataType::Integer, json!("99999999999999999999"), None).is_err());
        assert!(to(DataType::Integer, json!(true), None).is_err());
    }

    #[test]
    fn decimals_are_exact() {
        // A double such as Keap's product_price arrives as a JSON number.
        let price: Value = serde_json::from_str("19.99").unwrap();
        assert_eq!(
            to(DataType::Decimal, price, Some(FieldType::Decimal)),
            Ok(json!("19.99"))
        );
        let tenth: Value = serde_json::from_str("0.1").unwrap();
        assert_eq!(to(DataType::Decimal, tenth, None), Ok(json!("0.1")));
        assert_eq!(
            to(DataType::Decimal, json!("12.50"), None),
            Ok(json!("12.50"))
        );
        let as_number = to(DataType::Decimal, json!("12.50"), Some(FieldType::Number)).unwrap();
        assert_eq!(as_number.to_string(), "12.5");
        assert_eq!(
            to(DataType::Decimal, json!("3"), Some(FieldType::Number)),
            Ok(json!(3))
        );
        let float = to(DataType::Decimal, json!("3.00"), Some(FieldType::Number)).unwrap();
        assert_eq!(float.to_string(), "3.0");
        assert_eq!(to(DataType::Decimal, json!("1e3"), None), Ok(json!("1000")));
        assert_eq!(
            to(
                DataType::Decimal,
                json!("12345678901234567890.123456789"),
                None
            ),
            Ok(json!("12345678901234567890.123456789"))
        );
        assert!(to(DataType::Decimal, json!("12,50"), None).is_err());
        assert!(to(DataType::Decimal, json!("ten"), None).is_err());
        assert!(to(DataType::Decimal, json!("1.5"), Some(FieldType::Integer)).is_err());
        assert_eq!(normalise(DataType::Decimal, &json!("12.50")), json!("12.5"));
        assert_eq!(normalise(DataType::Decimal, &json!(12.5)), json!("12.5"));
    }

    #[test]
    fn booleans() {
        assert_eq!(to(DataType::Boolean, json!("Yes"), None), Ok(json!(true)));
        assert_eq!(to(DataType::Boolean, json!(0), None), Ok(json!(false)));
        assert_eq!(
            to(DataType::Boolean, json!(true), Some(FieldType::String)),
            Ok(json!("true"))
        );
        assert!(to(DataType::Boolean, json!("maybe"), None).is_err());
        assert!(to(DataType::Boolean, json!(2), None).is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(
            to(DataType::Date, json!("2024-02-29"), None),
            Ok(json!("2024-02-29"))
        );
        assert_eq!(
            to(DataType::Date, json!("2024-05-01T23:30:00-05:00"), None),
            Ok(json!("2024-05-01"))
        );
        assert_eq!(
            to(
                DataType::Date,
                json!("2024-05-01"),
                Some(FieldType::Datetime)
            ),
            Ok(json!("2024-05-01T00:00:00Z"))
        );
        assert!(to(DataType::Date, json!("2023-02-29"), None).is_err());
        assert!(to(DataType::Date, json!("01/05/2024"), None).is_err());
        assert!(to(DataType::Date, json!(20240501), None).is_err());
    }

    #[test]
    fn datetimes_normalise_to_utc() {
        assert_eq!(
            to(DataType::Datetime, json!("2024-05-01T14:00:00+02:00"), None),
            Ok(json!("2024-05-01T12:00:00Z"))
        );
        assert_eq!(
            to(
                DataType::Datetime,
                json!("2024-05-01T12:00:00.000+0000"),
                None
            ),
            Ok(json!("2024-05-01T12:00:00Z"))
        );
        assert_eq!(
            to(DataType::Datetime, json!("2024-05-01T12:00:00.250Z"), None),
            Ok(json!("2024-05-01T12:00:00.250Z"))
        );
        assert_eq!(
            to(DataType::Datetime, json!("2024-05-01 12:00:00"), None),
            Ok(json!("2024-05-01T12:00:00Z"))
        );
        assert_eq!(
            to(
                DataType::Datetime,
                json!("2024-05-01T23:30:00-05:00"),
                Some(FieldType::Date)
            ),
            Ok(json!("2024-05-02"))
        );
        assert_eq!(
            to(DataType::Datetime, json!(0), None),
            Ok(json!("1970-01-01T00:00:00Z"))
        );
        assert!(to(DataType::Datetime, json!("yesterday"), None).is_err());
        assert!(to(DataType::Datetime, json!("2024-13-01T00:00:00Z"), None).is_err());
    }

    #[test]
    fn emails() {
        assert_eq!(
            to(DataType::Email, json!(" Ann@Example.com "), None),
            Ok(json!("Ann@Example.com"))
        );
        assert_eq!(
            normalise(DataType::Email, &json!(" Ann@Example.com")),
            json!("ann@example.com")
        );
        assert_eq!(to(DataType::Email, json!(""), None), Ok(json!("")));
        assert!(
            to(DataType::Email, json!("ann.example.com"), None)
                .unwrap_err()
                .contains("@")
        );
        assert!(to(DataType::Email, json!("ann @x.com"), None).is_err());
    }

    #[test]
    fn phones() {
        assert_eq!(
            to(DataType::Phone, json!("+47 22 33 44 55"), None),
            Ok(json!("+4722334455"))
        );
        assert_eq!(
            to(DataType::Phone, json!("0047 22334455"), None),
            Ok(json!("+4722334455"))
        );
        assert_eq!(
            to(DataType::Phone, json!("(555) 123-4567"), None),
            Ok(json!("(555) 123-4567"))
        );
        assert!(to(DataType::Phone, json!("call me"), None).is_err());
        assert!(to(DataType::Phone, json!("+12"), None).is_err());
        let norway = country::find("NO");
        assert_eq!(e164("22 33 44 55", norway), Ok(Some("+4722334455".into())));
        assert_eq!(
            e164("020 7946 0958", country::find("GB")),
            Ok(Some("+442079460958".into()))
        );
        assert_eq!(
            e164("06 12345678", country::find("IT")),
            Ok(Some("+390612345678".into()))
        );
        assert_eq!(
            normalise(DataType::Phone, &json!("(555) 123-4567")),
            json!("5551234567")
        );
    }

    #[test]
    fn country_codes_follow_the_field() {
        assert_eq!(
            to(
                DataType::CountryCode,
                json!("NOR"),
                Some(FieldType::CountryCode)
            ),
            Ok(json!("NO"))
        );
        assert_eq!(
            to(
                DataType::CountryCode,
                json!("no"),
                Some(FieldType::CountryCodeAlpha3)
            ),
            Ok(json!("NOR"))
        );
        assert_eq!(
            to(DataType::CountryCode, json!("Germany"), None),
            Ok(json!("DE"))
        );
        assert_eq!(to(DataType::CountryCode, json!(""), None), Ok(json!(null)));
        assert!(
            to(DataType::CountryCode, json!("XX"), None)
                .unwrap_err()
                .contains("ISO 3166")
        );
        assert_eq!(normalise(DataType::CountryCode, &json!("nor")), json!("NO"));
    }

    #[test]
    fn currencies() {
        assert_eq!(
            to(DataType::CurrencyCode, json!("eur"), None),
            Ok(json!("EUR"))
        );
        assert!(
            to(DataType::CurrencyCode, json!("EURO"), None)
                .unwrap_err()
                .contains("4217")
        );
    }

    #[test]
    fn enums_check_allowed_values() {
        let values = vec!["active".to_string(), "blocked".to_string()];
        let shape = FieldShape {
            field_type: Some(FieldType::Enum),
            values: Some(&values),
        };
        assert_eq!(
            coerce(DataType::Enum, json!("active"), shape),
            Ok(json!("active"))
        );
        let error = coerce(DataType::Enum, json!("ACTIVE"), shape).unwrap_err();
        assert!(error.contains("`active`, `blocked`"), "{error}");
    }

    #[test]
    fn references_and_arrays_check_their_shape() {
        assert_eq!(to(DataType::Reference, json!(12), None), Ok(json!(12)));
        assert!(to(DataType::Reference, json!([1]), None).is_err());
        assert!(to(DataType::Array, json!("x"), None).is_err());
        assert_eq!(
            to(DataType::Array, json!("[1, {\"a\": 2}]"), None),
            Ok(json!([1, {"a": 2}]))
        );
        assert!(to(DataType::Array, json!("[1,"), None).is_err());
        assert_eq!(normalise(DataType::Reference, &json!(12)), json!("12"));
    }
}
