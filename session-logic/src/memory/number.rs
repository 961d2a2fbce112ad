//! Number text exactly as Redis 7.0 and its Lua 5.1 read and write it: C
//! `strtod` prefixes (with glibc's hex, `inf` and `nan` forms), `string2ll`,
//! `string2d`, Lua's `tonumber` and `%.17g`. Replies and script branches depend
//! on these edge cases, so they are reproduced rather than approximated.

/// C `isspace` in the C locale.
pub(super) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// The bytes a C function taking a `char *` sees: everything before the first NUL.
pub(super) fn cstr(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| b == 0) {
        Some(end) => s.get(..end).unwrap_or_default(),
        None => s,
    }
}

/// ASCII case-insensitive equality of a C string with a literal (`strcasecmp == 0`).
pub(super) fn eq_ci(s: &[u8], lit: &str) -> bool {
    cstr(s).eq_ignore_ascii_case(lit.as_bytes())
}

/// What `strtod` made of a prefix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Strtod {
    /// The converted value (0 when nothing was converted).
    pub(super) value: f64,
    /// Bytes consumed, leading white space included; 0 when nothing was converted.
    pub(super) len: usize,
    /// `errno == ERANGE` with a result of ±HUGE_VAL or zero (overflow or total underflow).
    pub(super) range_error: bool,
}

/// glibc `strtod` on `s` (C locale), stopping at the first byte that cannot
/// continue a number. A NUL byte never continues one, so `s` may be raw bytes.
pub(super) fn strtod(s: &[u8]) -> Strtod {
    let none = Strtod {
        value: 0.0,
        len: 0,
        range_error: false,
    };
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut i = 0;
    while is_c_space(at(i)) {
        i += 1;
    }
    let negative = at(i) == b'-';
    if matches!(at(i), b'+' | b'-') {
        i += 1;
    }
    let sign = |v: f64| if negative { -v } else { v };
    let rest = s.get(i..).unwrap_or_default();
    if starts_ci(rest, b"inf") {
        let len = if starts_ci(rest, b"infinity") { 8 } else { 3 };
        return Strtod {
            value: sign(f64::INFINITY),
            len: i + len,
            range_error: false,
        };
    }
    if starts_ci(rest, b"nan") {
        let mut j = i + 3;
        if at(j) == b'(' {
            let mut k = j + 1;
            while at(k).is_ascii_alphanumeric() || at(k) == b'_' {
                k += 1;
            }
            if at(k) == b')' {
                j = k + 1;
            }
        }
        return Strtod {
            value: f64::NAN,
            len: j,
            range_error: false,
        };
    }
    if at(i) == b'0' && matches!(at(i + 1), b'x' | b'X') {
        let digits_at = i + 2;
        let has_digit = at(digits_at).is_ascii_hexdigit()
            || (at(digits_at) == b'.' && at(digits_at + 1).is_ascii_hexdigit());
        if has_digit {
            let (value, len, nonzero) = hex_float(s, digits_at);
            let value = sign(value);
            return Strtod {
                value,
                len,
                range_error: value.is_infinite() || (value == 0.0 && nonzero),
            };
        }
        // "0x" without hex digits: only the "0" converts.
        return Strtod {
            value: sign(0.0),
            len: i + 1,
            range_error: false,
        };
    }
    // Decimal: digits [. digits] [e [sign] digits], at least one mantissa digit.
    let start = i;
    let mut j = i;
    let mut nonzero = false;
    let mut mantissa_digits = 0usize;
    while at(j).is_ascii_digit() {
        nonzero |= at(j) != b'0';
        mantissa_digits += 1;
        j += 1;
    }
    if at(j) == b'.' {
        j += 1;
        while at(j).is_ascii_digit() {
            nonzero |= at(j) != b'0';
            mantissa_digits += 1;
            j += 1;
        }
    }
    if mantissa_digits == 0 {
        return none;
    }
    if matches!(at(j), b'e' | b'E') {
        let mut k = j + 1;
        if matches!(at(k), b'+' | b'-') {
            k += 1;
        }
        if at(k).is_ascii_digit() {
            while at(k).is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    let text = s
        .get(start..j)
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("0");
    let value = sign(parse_decimal(text));
    Strtod {
        value,
        len: j,
        range_error: value.is_infinite() || (value == 0.0 && nonzero),
    }
}

fn starts_ci(s: &[u8], lit: &[u8]) -> bool {
    s.get(..lit.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(lit))
}

/// A decimal literal (no sign) as the nearest double; Rust's parser rounds
/// correctly like glibc. Its grammar wants a digit on at least one side of
/// the point, which the caller guarantees.
fn parse_decimal(text: &str) -> f64 {
    if let Ok(v) = text.parse::<f64>() {
        return v;
    }
    // An exponent too long for the parser: the mantissa decides 0 or infinity.
    let (mantissa, exp) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let m = mantissa.parse::<f64>().unwrap_or(0.0);
    if m == 0.0 || exp.starts_with('-') {
        0.0
    } else {
        f64::INFINITY
    }
}

/// glibc's hex float body starting at `from` (just after "0x"): hex digits,
/// optional point and fraction, optional binary exponent. Returns the value,
/// the end offset and whether any mantissa digit was non-zero.
fn hex_float(s: &[u8], from: usize) -> (f64, usize, bool) {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut j = from;
    let mut mantissa: u128 = 0;
    let mut exp2: i64 = 0;
    let mut sticky = false;
    let mut nonzero = false;
    let mut take = |d: u8, fraction: bool, exp2: &mut i64| {
        let v = u128::from(hex_value(d));
        nonzero |= v != 0;
        if mantissa >> 120 == 0 {
            mantissa = (mantissa << 4) | v;
            if fraction {
                *exp2 -= 4;
            }
        } else {
            sticky |= v != 0;
            if !fraction {
                *exp2 += 4;
            }
        }
    };
    while at(j).is_ascii_hexdigit() {
        take(at(j), false, &mut exp2);
        j += 1;
    }
    if at(j) == b'.' {
        j += 1;
        while at(j).is_ascii_hexdigit() {
            take(at(j), true, &mut exp2);
            j += 1;
        }
    }
    if matches!(at(j), b'p' | b'P') {
        let mut k = j + 1;
        let negative = at(k) == b'-';
        if matches!(at(k), b'+' | b'-') {
            k += 1;
        }
        if at(k).is_ascii_digit() {
            let mut e: i64 = 0;
            while at(k).is_ascii_digit() {
                e = (e * 10 + i64::from(at(k) - b'0')).min(1 << 20);
                k += 1;
            }
            exp2 += if negative { -e } else { e };
            j = k;
        }
    }
    if sticky {
        // Keeps round-to-nearest exact when digits beyond 120 bits were dropped.
        mantissa |= 1;
    }
    (ldexp(mantissa as f64, exp2), j, nonzero)
}

fn hex_value(d: u8) -> u8 {
    match d {
        b'0'..=b'9' => d - b'0',
        b'a'..=b'f' => d - b'a' + 10,
        b'A'..=b'F' => d - b'A' + 10,
        _ => 0,
    }
}

/// `x * 2^e` without intermediate overflow.
fn ldexp(mut x: f64, mut e: i64) -> f64 {
    while e > 0 && x.is_finite() && x != 0.0 {
        let step = e.min(1000);
        x *= 2f64.powi(step as i32);
        e -= step;
    }
    while e < 0 && x != 0.0 {
        let step = e.max(-1000);
        x *= 2f64.powi(step as i32);
        e -= step;
    }
    x
}

/// Lua 5.1 `tonumber` on a string (`luaO_str2d`): a `strtod` prefix followed
/// only by white space, read as a C string.
pub(super) fn lua_tonumber(s: &[u8]) -> Option<f64> {
    let s = cstr(s);
    let r = strtod(s);
    if r.len == 0 {
        return None;
    }
    let rest = s.get(r.len..).unwrap_or_default();
    rest.iter().all(|&b| is_c_space(b)).then_some(r.value)
}

/// Redis `string2ll`: strict decimal, no leading zeros, no '+', fewer than 21 bytes.
pub(super) fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if v > 1u64 << 63 {
            None
        } else {
            Some(0i64.wrapping_sub_unsigned(v))
        }
    } else {
        i64::try_from(v).ok()
    }
}

/// Redis `string2d` (scores): the whole string must be a `strtod` number, no
/// leading space, no overflow or total underflow, not NaN.
pub(super) fn string2d(s: &[u8]) -> Option<f64> {
    match s.first() {
        None => return None,
        Some(&b) if is_c_space(b) => return None,
        Some(_) => {}
    }
    let r = strtod(s);
    if r.len != s.len() || r.range_error || r.value.is_nan() {
        return None;
    }
    Some(r.value)
}

/// `printf("%.17g", d)`, the text Redis 7.0 uses for scores and for Lua
/// numbers passed to `redis.call`.
pub(super) fn fmt_g17(d: f64) -> String {
    if d.is_nan() {
        return if d.is_sign_negative() { "-nan" } else { "nan" }.to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    let sci = format!("{:.16e}", d.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let mut out = String::new();
    if d < 0.0 {
        out.push('-');
    }
    if !(-4..17).contains(&exp) {
        let (first, rest) = digits.split_at_checked(1).unwrap_or((&digits, ""));
        let rest = rest.trim_end_matches('0');
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    } else if exp >= 0 {
        let split = usize::try_from(exp).unwrap_or(0).saturating_add(1);
        let (int, frac) = digits.split_at_checked(split).unwrap_or((&digits, ""));
        let frac = frac.trim_end_matches('0');
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_matches_printf() {
        let cases: &[(f64, &str)] = &[
            (0.1, "0.10000000000000001"),
            (1.1, "1.1000000000000001"),
            (1e20, "1e+20"),
            (1700000000000.0, "1700000000000"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (-1.5, "-1.5"),
            (-1.0, "-1"),
            (5e-324, "4.9406564584124654e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (-0.0, "-0"),
            (f64::NEG_INFINITY, "-inf"),
            (2.5, "2.5"),
            (100.0, "100"),
        ];
        for &(d, want) in cases {
            assert_eq!(fmt_g17(d), want, "{d:e}");
        }
    }

    #[test]
    fn lua_tonumber_follows_str2d() {
        let cases: &[(&[u8], Option<f64>)] = &[
            (b" 0x10 ", Some(16.0)),
            (b"0X1f", Some(31.0)),
            (b"1e3", Some(1000.0)),
            (b"-inf", Some(f64::NEG_INFINITY)),
            (b"infinity", Some(f64::INFINITY)),
            (b"5\0abc", Some(5.0)),
            (b"0x", None),
            (b"1.", Some(1.0)),
            (b".5", Some(0.5)),
            (b"  ", None),
            (b"", None),
            (b"0x1p4", Some(16.0)),
            (b"1e", None),
            (b"1e+", None),
            (b"0x.8", Some(0.5)),
            (b"- 1", None),
            (b"+5", Some(5.0)),
            (b"\t7\n", Some(7.0)),
            (b"1e400", Some(f64::INFINITY)),
            (b"0x1g", None),
            (b"5x", None),
            (b"0xffffffffffffffffffff", Some(1.2089258196146292e24)),
            (b"1_0", None),
            (b"\x0b3\x0c", Some(3.0)),
            (b"0b1", None),
        ];
        for &(s, want) in cases {
            assert_eq!(lua_tonumber(s), want, "{:?}", String::from_utf8_lossy(s));
        }
        assert!(lua_tonumber(b"nan(123)").is_some_and(f64::is_nan));
    }

    #[test]
    fn string2ll_is_strict() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b"9223372036854775808"[..],
            b"-0",
            b"01",
            b"+1",
            b"",
            b"-",
            b" 1",
            b"1 ",
            b"1.0",
        ] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn string2d_rejects_what_redis_rejects() {
        assert_eq!(string2d(b"1.5"), Some(1.5));
        assert_eq!(string2d(b"inf"), Some(f64::INFINITY));
        assert_eq!(string2d(b"-0"), Some(-0.0));
        assert_eq!(string2d(b"0x10"), Some(16.0));
        assert_eq!(string2d(b"1e-320"), Some(1e-320));
        for bad in [
            &b"nan"[..],
            b" 1",
            b"1 ",
            b"",
            b"1e999",
            b"1e-400",
            b"x",
            b"1\0",
        ] {
            assert_eq!(string2d(bad), None, "{bad:?}");
        }
    }
}
