//! Cookies are owned by the machine: it parses the request's `Cookie` header
//! and renders every `Set-Cookie` value. No host renders a cookie itself, so
//! attribute order, quoting, date format and the `__Host-`/`__Secure-` prefix
//! rules are decided once, here, and behave the same on every host.
//!
//! Everything in this module is pure string work on borrowed input: no I/O, no
//! clock (instants come in as [`UnixMillis`]) and no panics on hostile headers.

use serde::{Deserialize, Serialize};

use crate::expiry::UnixMillis;

/// SameSite attribute. serde: "lax" | "strict" | "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// `SameSite=Lax`: sent on top-level navigations from other sites.
    #[default]
    Lax,
    /// `SameSite=Strict`: never sent on cross-site requests.
    Strict,
    /// `SameSite=None`: sent cross-site; browsers require `Secure` with it.
    None,
}

impl SameSite {
    /// The attribute value as rendered in `Set-Cookie`.
    fn as_attr(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Why a Cookie header yielded no usable value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CookieHeaderError {
    /// The header is longer than the configured limit; it was not scanned.
    Oversized,
}

/// All values of cookie `name` in `header`, in order of appearance, surrounding
/// whitespace trimmed and one pair of surrounding DQUOTEs removed. Pairs without '=' are
/// skipped, names compare exactly (case-sensitive), empty values are included as "".
/// Headers longer than `max_header_bytes` → Err(Oversized) without scanning.
/// Several `Cookie` headers joined by the host with "; " work naturally.
///
/// "Whitespace" is ASCII whitespace ([`str::trim_ascii`]). A value is trimmed
/// again after its quotes are removed, so no returned value ever starts or
/// ends with ASCII whitespace. Only the first '=' of a pair separates name from
/// value (`sid=a=b` yields `a=b`). Every returned value borrows from `header`.
pub(crate) fn find_values<'a>(
    header: &'a str,
    name: &str,
    max_header_bytes: usize,
) -> Result<Vec<&'a str>, CookieHeaderError> {
    if header.len() > max_header_bytes {
        return Err(CookieHeaderError::Oversized);
    }
    Ok(header
        .split(';')
        .filter_map(|pair| {
            let (pair_name, value) = pair.split_once('=')?;
            (pair_name.trim_ascii() == name).then(|| unquote(value.trim_ascii()))
        })
        .collect())
}

/// Removes one pair of surrounding DQUOTEs (and the whitespace they enclosed).
/// A lone or unbalanced quote is left in place.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .map_or(value, str::trim_ascii)
}

/// The attributes every cookie we send shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CookieAttrs<'a> {
    /// Cookie name; validated by [`check_name`] and [`check_prefix_rules`].
    pub(crate) name: &'a str,
    /// `Path` attribute; validated by [`check_path`].
    pub(crate) path: &'a str,
    /// `Domain` attribute, omitted when `None`; validated by [`check_domain`].
    pub(crate) domain: Option<&'a str>,
    /// Render the `Secure` flag.
    pub(crate) secure: bool,
    /// Render the `HttpOnly` flag.
    pub(crate) http_only: bool,
    /// `SameSite` attribute, always rendered.
    pub(crate) same_site: SameSite,
}

/// `name=value; Path=/; [Domain=d; ]Max-Age=N; Expires=<IMF-fixdate>; HttpOnly; Secure; SameSite=Lax`
/// `lifetime` = Some((max_age_secs, expires_at)) for a persistent cookie, None for a
/// browser-session cookie (no Max-Age / Expires). Attribute order exactly:
/// name=value, Path, Domain, Max-Age, Expires, HttpOnly, Secure, SameSite.
///
/// Renders exactly what it is given: attributes are validated by config
/// (`check_*` below, including SameSite=None requiring Secure), and `value` must
/// already consist of cookie-octets (the machine only emits its own tokens).
pub(crate) fn render(
    attrs: &CookieAttrs<'_>,
    value: &str,
    lifetime: Option<(u64, UnixMillis)>,
) -> String {
    let mut out = String::with_capacity(160 + attrs.name.len() + value.len() + attrs.path.len());
    out.push_str(attrs.name);
    out.push('=');
    out.push_str(value);
    out.push_str("; Path=");
    out.push_str(attrs.path);
    if let Some(domain) = attrs.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    if let Some((max_age_secs, expires_at)) = lifetime {
        out.push_str("; Max-Age=");
        out.push_str(&max_age_secs.to_string());
        out.push_str("; Expires=");
        out.push_str(&http_date(expires_at));
    }
    if attrs.http_only {
        out.push_str("; HttpOnly");
    }
    if attrs.secure {
        out.push_str("; Secure");
    }
    out.push_str("; SameSite=");
    out.push_str(attrs.same_site.as_attr());
    out
}

/// A removal cookie: empty value, Max-Age=0, Expires=Thu, 01 Jan 1970 00:00:00 GMT, same attributes.
pub(crate) fn render_removal(attrs: &CookieAttrs<'_>) -> String {
    render(attrs, "", Some((0, UnixMillis(0))))
}

/// 9999-12-31T23:59:59Z in seconds since the epoch: the last instant
/// [`http_date`] can express with a four-digit year.
const LAST_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// IMF-fixdate (RFC 9110), e.g. "Sun, 06 Nov 1994 08:49:37 GMT", from unix ms (floor to seconds);
/// pure civil-from-days arithmetic, correct for years 1970..=9999; clamp later instants to
/// "Fri, 31 Dec 9999 23:59:59 GMT".
pub(crate) fn http_date(at: UnixMillis) -> String {
    let secs = (at.0 / 1000).min(LAST_HTTP_DATE_SECS);
    let days = secs / 86_400;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        weekday_name(days),
        day,
        month_name(month),
        year,
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
    )
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days so it
/// stays in unsigned arithmetic; no overflow for any `days` below 2^60.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365], from March 1
    let shifted_month = (5 * day_of_year + 2) / 153; // [0, 11], March = 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Day-of-week name; 1970-01-01 was a Thursday.
fn weekday_name(days: u64) -> &'static str {
    match (days + 4) % 7 {
        0 => "Sun",
        1 => "Mon",
        2 => "Tue",
        3 => "Wed",
        4 => "Thu",
        5 => "Fri",
        _ => "Sat",
    }
}

/// Month name for 1..=12.
fn month_name(month: u64) -> &'static str {
    match month {
        1 => "Jan",
        2 => "Feb",
        3 => "Mar",
        4 => "Apr",
        5 => "May",
        6 => "Jun",
        7 => "Jul",
        8 => "Aug",
        9 => "Sep",
        10 => "Oct",
        11 => "Nov",
        _ => "Dec",
    }
}

/// Longest cookie name config accepts, in bytes.
const MAX_NAME_BYTES: usize = 128;
/// Longest `Path` or `Domain` config accepts, in bytes.
const MAX_ATTR_BYTES: usize = 1024;

/// Validation used by config: Ok or a message naming the fix.
/// name: RFC 6265 token (1..=128 visible ASCII, none of the separators ()<>@,;:\"/[]?={} , no space/tab/control).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("cookie name is empty; set it to a token such as \"sid\"".to_owned());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "cookie name is {} bytes long; shorten it to at most {MAX_NAME_BYTES} bytes",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|&c| !is_token_char(c)) {
        return Err(format!(
            "cookie name {name:?} contains {bad:?}; use only ASCII letters, digits and \
             !#$%&'*+-.^_`|~ (no spaces, controls or ()<>@,;:\\\"/[]?={{}})"
        ));
    }
    Ok(())
}

/// RFC 6265 / RFC 9110 token character: visible ASCII minus the separators.
fn is_token_char(c: char) -> bool {
    c.is_ascii_graphic() && !"()<>@,;:\\\"/[]?={}".contains(c)
}

/// path and domain: non-empty, no ';', no control chars, no whitespace, <= 1024 bytes; path must start with '/'.
///
/// Also requires ASCII: RFC 6265's path-value is built from US-ASCII CHARs and
/// several host HTTP stacks refuse non-ASCII header values outright.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    check_attr_value("path", path)?;
    if !path.starts_with('/') {
        return Err(format!(
            "cookie path {path:?} must start with '/'; use \"/\" to cover the whole site"
        ));
    }
    Ok(())
}

/// See [`check_path`]; the same rules minus the leading '/'. Domains must be
/// ASCII (write internationalised names in their punycode `xn--` form).
pub(crate) fn check_domain(domain: &str) -> Result<(), String> {
    check_attr_value("domain", domain)
}

/// The rules `Path` and `Domain` share.
fn check_attr_value(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!(
            "cookie {what} is empty; set a value or leave the setting out"
        ));
    }
    if value.len() > MAX_ATTR_BYTES {
        return Err(format!(
            "cookie {what} is {} bytes long; shorten it to at most {MAX_ATTR_BYTES} bytes",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|&c| c == ';' || c.is_control() || c.is_whitespace() || !c.is_ascii())
    {
        return Err(format!(
            "cookie {what} {value:?} contains {bad:?}; remove it (no ';', whitespace, control \
             or non-ASCII characters are allowed)"
        ));
    }
    Ok(())
}

/// `__Host-` prefix rule: if name starts with "__Host-" then secure must be true, path "/", domain None;
/// if name starts with "__Secure-" then secure must be true. Ok or a message naming the fix.
///
/// Prefixes are matched ASCII case-insensitively, as current browsers do
/// (RFC 6265bis), so `__HOST-sid` is held to the same rules as `__Host-sid`.
pub(crate) fn check_prefix_rules(
    name: &str,
    secure: bool,
    path: &str,
    domain: Option<&str>,
) -> Result<(), String> {
    if has_prefix_ignore_case(name, "__Host-") {
        if !secure {
            return Err(format!(
                "cookie name {name:?} has the __Host- prefix, which requires Secure; enable \
                 secure or rename the cookie"
            ));
        }
        if path != "/" {
            return Err(format!(
                "cookie name {name:?} has the __Host- prefix, which requires Path=/; set path \
                 to \"/\" (got {path:?}) or rename the cookie"
            ));
        }
        if let Some(domain) = domain {
            return Err(format!(
                "cookie name {name:?} has the __Host- prefix, which forbids a Domain attribute; \
                 remove domain (got {domain:?}) or rename the cookie"
            ));
        }
    } else if has_prefix_ignore_case(name, "__Secure-") && !secure {
        return Err(format!(
            "cookie name {name:?} has the __Secure- prefix, which requires Secure; enable \
             secure or rename the cookie"
        ));
    }
    Ok(())
}

/// True when `name` starts with `prefix`, ignoring ASCII case.
fn has_prefix_ignore_case(name: &str, prefix: &str) -> bool {
    name.as_bytes()
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix.as_bytes()))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    const MAX: usize = 4096;

    fn values<'a>(header: &'a str, name: &str) -> Vec<&'a str> {
        find_values(header, name, MAX).unwrap()
    }

    fn attrs() -> CookieAttrs<'static> {
        CookieAttrs {
            name: "sid",
            path: "/",
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    // ---- find_values -------------------------------------------------------

    #[test]
    fn duplicate_cookies_are_all_returned_in_order() {
        assert_eq!(
            values("sid=first; other=x; sid=second; sid=third", "sid"),
            ["first", "second", "third"]
        );
    }

    #[test]
    fn surrounding_whitespace_is_trimmed_from_names_and_values() {
        assert_eq!(
            values(" \t sid \t=  abc \t;sid=def  ;  sid=\tghi", "sid"),
            ["abc", "def", "ghi"]
        );
    }

    #[test]
    fn inner_whitespace_is_kept() {
        assert_eq!(values("sid= a b ", "sid"), ["a b"]);
    }

    #[test]
    fn one_pair_of_surrounding_quotes_is_removed() {
        assert_eq!(
            values(
                "sid=\"abc\"; sid= \"def\" ; sid=\"\"ghi\"\"; sid=\" jkl \"",
                "sid"
            ),
            ["abc", "def", "\"ghi\"", "jkl"]
        );
    }

    #[test]
    fn unbalanced_quotes_are_kept_as_is() {
        assert_eq!(
            values("sid=\"abc; sid=def\"; sid=\"; sid=a\"b", "sid"),
            ["\"abc", "def\"", "\"", "a\"b"]
        );
    }

    #[test]
    fn empty_values_are_returned_as_empty_strings() {
        assert_eq!(
            values("sid=; sid=\"\"; sid=  ; sid=\" \"; sid=x", "sid"),
            ["", "", "", "", "x"]
        );
    }

    #[test]
    fn pairs_without_equals_are_skipped() {
        assert_eq!(values("sid; sid=a; ; sid ;;sid=b;sid", "sid"), ["a", "b"]);
        assert!(values("sid", "sid").is_empty());
    }

    #[test]
    fn only_the_first_equals_separates_name_from_value() {
        assert_eq!(values("sid=a=b==", "sid"), ["a=b=="]);
        assert_eq!(values("sid==x", "sid"), ["=x"]);
    }

    #[test]
    fn empty_header_has_no_values() {
        assert!(values("", "sid").is_empty());
        assert!(values(";;;", "sid").is_empty());
        assert!(values("   ", "sid").is_empty());
    }

    #[test]
    fn oversized_header_is_rejected_without_scanning() {
        let at_limit = format!("sid={}", "a".repeat(MAX - 4));
        assert_eq!(at_limit.len(), MAX);
        assert_eq!(
            find_values(&at_limit, "sid", MAX).unwrap(),
            [&at_limit[4..]]
        );
        let over = format!("{at_limit}b");
        assert_eq!(
            find_values(&over, "sid", MAX),
            Err(CookieHeaderError::Oversized)
        );
        assert_eq!(find_values("", "sid", 0), Ok(vec![]));
        assert_eq!(
            find_values("a", "sid", 0),
            Err(CookieHeaderError::Oversized)
        );
    }

    #[test]
    fn headers_joined_from_several_lines_with_semicolon_space_work() {
        let lines = ["a=1; sid=one", "sid=two", "b=2;sid=\"three\""];
        let joined = lines.join("; ");
        assert_eq!(values(&joined, "sid"), ["one", "two", "three"]);
    }

    #[test]
    fn names_match_exactly_not_by_prefix_suffix_or_case() {
        let header = "xsid=1; sid2=2; SID=3; Sid=4; s id=5; sid=6; _sid=7; sid-=8";
        assert_eq!(values(header, "sid"), ["6"]);
        assert_eq!(values(header, "xsid"), ["1"]);
        assert_eq!(values(header, "sid2"), ["2"]);
        assert_eq!(values(header, "SID"), ["3"]);
        assert!(values(header, "si").is_empty());
    }

    #[test]
    fn values_never_cross_a_semicolon() {
        assert_eq!(values("sid=\"a;b\"", "sid"), ["\"a"]);
    }

    #[test]
    fn non_ascii_whitespace_is_not_trimmed() {
        assert_eq!(values("sid=\u{a0}x\u{a0}", "sid"), ["\u{a0}x\u{a0}"]);
    }

    // ---- render ------------------------------------------------------------

    #[test]
    fn persistent_cookie_renders_every_attribute_in_fixed_order() {
        let a = CookieAttrs {
            domain: Some("example.com"),
            ..attrs()
        };
        assert_eq!(
            render(&a, "tok123", Some((3600, UnixMillis(784_111_777_000)))),
            "sid=tok123; Path=/; Domain=example.com; Max-Age=3600; \
             Expires=Sun, 06 Nov 1994 08:49:37 GMT; HttpOnly; Secure; SameSite=Lax"
        );
    }

    #[test]
    fn session_cookie_has_no_max_age_or_expires() {
        assert_eq!(
            render(&attrs(), "tok", None),
            "sid=tok; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
    }

    #[test]
    fn flags_that_are_off_are_omitted_and_same_site_is_always_rendered() {
        let a = CookieAttrs {
            name: "app",
            path: "/admin",
            secure: false,
            http_only: false,
            same_site: SameSite::Strict,
            ..attrs()
        };
        assert_eq!(render(&a, "v", None), "app=v; Path=/admin; SameSite=Strict");
        let a = CookieAttrs {
            same_site: SameSite::None,
            http_only: false,
            ..attrs()
        };
        assert_eq!(
            render(&a, "v", Some((0, UnixMillis(0)))),
            "sid=v; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; \
             SameSite=None"
        );
    }

    #[test]
    fn removal_cookie_is_empty_expired_and_keeps_the_attributes() {
        assert_eq!(
            render_removal(&attrs()),
            "sid=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; Secure; \
             SameSite=Lax"
        );
        let a = CookieAttrs {
            name: "__Secure-s",
            path: "/app",
            domain: Some(".example.org"),
            http_only: false,
            same_site: SameSite::None,
            ..attrs()
        };
        assert_eq!(
            render_removal(&a),
            "__Secure-s=; Path=/app; Domain=.example.org; Max-Age=0; \
             Expires=Thu, 01 Jan 1970 00:00:00 GMT; Secure; SameSite=None"
        );
    }

    #[test]
    fn rendered_cookie_round_trips_through_the_parser() {
        let set_cookie = render(&attrs(), "abc-DEF_123", Some((60, UnixMillis(60_000))));
        let pair = set_cookie.split_once(';').unwrap().0;
        assert_eq!(values(pair, "sid"), ["abc-DEF_123"]);
    }

    #[test]
    fn same_site_serde_is_lowercase_and_defaults_to_lax() {
        for (v, s) in [
            (SameSite::Lax, "\"lax\""),
            (SameSite::Strict, "\"strict\""),
            (SameSite::None, "\"none\""),
        ] {
            assert_eq!(serde_json::to_string(&v).unwrap(), s);
            assert_eq!(serde_json::from_str::<SameSite>(s).unwrap(), v);
        }
        assert!(serde_json::from_str::<SameSite>("\"Lax\"").is_err());
        assert_eq!(SameSite::default(), SameSite::Lax);
    }

    // ---- http_date ---------------------------------------------------------

    #[test]
    fn http_date_of_the_epoch_is_thursday_1970() {
        assert_eq!(http_date(UnixMillis(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn http_date_matches_the_rfc_9110_example() {
        assert_eq!(
            http_date(UnixMillis(784_111_777_000)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn http_date_floors_milliseconds_to_seconds() {
        assert_eq!(http_date(UnixMillis(999)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(UnixMillis(784_111_777_999)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
    }

    #[test]
    fn http_date_handles_leap_days() {
        // 2024-02-29T12:34:56Z
        assert_eq!(
            http_date(UnixMillis(1_709_210_096_000)),
            "Thu, 29 Feb 2024 12:34:56 GMT"
        );
        // The day after is March 1st.
        assert_eq!(
            http_date(UnixMillis(1_709_251_200_000)),
            "Fri, 01 Mar 2024 00:00:00 GMT"
        );
        // 2000 is a leap year (divisible by 400), 2100 is not.
        assert_eq!(
            http_date(UnixMillis(951_782_400_000)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(UnixMillis(4_107_542_400_000)),
            "Mon, 01 Mar 2100 00:00:00 GMT"
        );
    }

    #[test]
    fn http_date_last_second_of_9999_is_exact() {
        assert_eq!(
            http_date(UnixMillis(253_402_300_799_000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            http_date(UnixMillis(253_402_300_799_999)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn http_date_clamps_instants_after_9999() {
        for ms in [253_402_300_800_000, 10_u64.pow(16), u64::MAX] {
            assert_eq!(http_date(UnixMillis(ms)), "Fri, 31 Dec 9999 23:59:59 GMT");
        }
    }

    #[test]
    fn civil_date_agrees_with_a_day_by_day_calendar_through_9999() {
        let is_leap = |y: u64| matches!((y % 4, y % 100, y % 400), (0, 1.., _) | (_, _, 0));
        let month_len = |y: u64, m: u64| match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970, 1, 1);
        let mut days = 0;
        while y <= 9999 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
            days += 1;
        }
        assert_eq!((days - 1) * 86_400 + 86_399, LAST_HTTP_DATE_SECS);
    }

    #[test]
    fn weekdays_cycle_from_thursday() {
        let names: Vec<_> = (0..8).map(weekday_name).collect();
        assert_eq!(
            names,
            ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed", "Thu"]
        );
    }

    // ---- check_* -----------------------------------------------------------

    #[test]
    fn check_name_accepts_rfc_6265_tokens() {
        for name in [
            "sid",
            "__Host-sid",
            "__Secure-sid",
            "a",
            "session.id",
            "x!#$%&'*+-.^_`|~9",
            &"n".repeat(128),
        ] {
            assert_eq!(check_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn check_name_rejects_empty_long_separators_space_control_and_non_ascii() {
        let long = "n".repeat(129);
        let mut bad: Vec<&str> = vec!["", &long, "s id", "s\tid", "s\u{0}id", "s\u{7f}id", "sïd"];
        let seps = [
            "a(", "a)", "a<", "a>", "a@", "a,", "a;", "a:", "a\\", "a\"", "a/", "a[", "a]", "a?",
            "a=", "a{", "a}",
        ];
        bad.extend(seps);
        for name in bad {
            let err = check_name(name).unwrap_err();
            assert!(!err.is_empty(), "{name:?}");
        }
        assert!(check_name("").unwrap_err().contains("empty"));
        assert!(check_name(&long).unwrap_err().contains("128"));
    }

    #[test]
    fn check_path_accepts_absolute_paths() {
        for path in ["/", "/app", "/a/b/c/", "/~user/x.y-z_%20"] {
            assert_eq!(check_path(path), Ok(()), "{path:?}");
        }
        assert_eq!(check_path(&format!("/{}", "p".repeat(1023))), Ok(()));
    }

    #[test]
    fn check_path_rejects_relative_empty_long_and_unsafe_characters() {
        let long = format!("/{}", "p".repeat(1024));
        for path in [
            "",
            "app",
            "./app",
            &long,
            "/a;b",
            "/a b",
            "/a\tb",
            "/a\r\nSet-Cookie:x",
            "/a\u{0}",
            "/a\u{7f}",
            "/é",
            "/a\u{a0}b",
        ] {
            assert!(check_path(path).is_err(), "{path:?}");
        }
        assert!(check_path("app").unwrap_err().contains("start with '/'"));
    }

    #[test]
    fn check_domain_accepts_host_names() {
        for domain in [
            "example.com",
            ".example.com",
            "xn--bcher-kva.example",
            "localhost",
        ] {
            assert_eq!(check_domain(domain), Ok(()), "{domain:?}");
        }
    }

    #[test]
    fn check_domain_rejects_empty_long_and_unsafe_characters() {
        let long = "d".repeat(1025);
        for domain in [
            "",
            &long,
            "a;b",
            "a b",
            " example.com",
            "a\r\nb",
            "a\u{1}",
            "bücher.example",
        ] {
            assert!(check_domain(domain).is_err(), "{domain:?}");
        }
        assert_eq!(check_domain(&"d".repeat(1024)), Ok(()));
    }

    #[test]
    fn host_prefix_requires_secure_root_path_and_no_domain() {
        assert_eq!(check_prefix_rules("__Host-sid", true, "/", None), Ok(()));
        let err = check_prefix_rules("__Host-sid", false, "/", None).unwrap_err();
        assert!(err.contains("Secure"), "{err}");
        let err = check_prefix_rules("__Host-sid", true, "/app", None).unwrap_err();
        assert!(err.contains("Path=/"), "{err}");
        let err = check_prefix_rules("__Host-sid", true, "/", Some("example.com")).unwrap_err();
        assert!(err.contains("Domain"), "{err}");
    }

    #[test]
    fn secure_prefix_requires_secure_only() {
        assert_eq!(
            check_prefix_rules("__Secure-sid", true, "/app", Some("example.com")),
            Ok(())
        );
        let err = check_prefix_rules("__Secure-sid", false, "/", None).unwrap_err();
        assert!(err.contains("Secure"), "{err}");
    }

    #[test]
    fn prefixes_match_case_insensitively() {
        assert!(check_prefix_rules("__HOST-sid", true, "/app", None).is_err());
        assert!(check_prefix_rules("__host-sid", false, "/", None).is_err());
        assert!(check_prefix_rules("__SECURE-sid", false, "/", None).is_err());
    }

    #[test]
    fn unprefixed_names_have_no_prefix_rules() {
        for name in ["sid", "_Host-sid", "__Host", "__Secure", "x__Host-sid", "é"] {
            assert_eq!(
                check_prefix_rules(name, false, "/app", Some("example.com")),
                Ok(()),
                "{name:?}"
            );
        }
    }

    // ---- robustness --------------------------------------------------------

    /// xorshift64*: deterministic, dependency-free test randomness.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    const PIECES: &[&str] = &[
        ";",
        ";",
        "=",
        "=",
        "\"",
        "\"",
        " ",
        "\t",
        "\r\n",
        "\n",
        "\u{b}",
        "\u{c}",
        "\0",
        "\u{7f}",
        "\u{85}",
        "\u{a0}",
        "\u{2028}",
        "\u{feff}",
        "é",
        "💥",
        "\u{fffd}",
        "sid",
        "sid",
        "sid=",
        "sid=\"",
        "\"sid\"",
        "xsid",
        "sid2",
        "SID",
        "=\"",
        "\"\"",
        "\";",
        "; ",
        "a",
        "Z",
        "0",
        ",",
        "\\",
        "%",
        "sid= \"x\" ",
        "sid=\" ",
        "sid=;",
    ];

    /// `len` bytes (rounded down to a char boundary) of `pool`, starting near a
    /// random offset: long hostile text at memcpy cost.
    fn pool_slice<'a>(rng: &mut Rng, pool: &'a str, len: usize) -> &'a str {
        let mut start = rng.below((pool.len() - len) as u64) as usize;
        while !pool.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = start + len;
        while !pool.is_char_boundary(end) {
            end -= 1;
        }
        &pool[start..end]
    }

    /// One hostile header into `out`, at most `2 * max` bytes long. `pool` is
    /// at least `4 * max` bytes of piece soup.
    fn hostile_header(
        rng: &mut Rng,
        max: usize,
        pool: &str,
        bytes: &mut Vec<u8>,
        out: &mut String,
    ) {
        out.clear();
        match rng.below(64) {
            // Random bytes, lossily decoded (replacement chars, controls, anything).
            0..=19 => {
                bytes.clear();
                for _ in 0..rng.below(32) {
                    bytes.extend(rng.next().to_le_bytes());
                }
                out.push_str(&String::from_utf8_lossy(bytes));
            }
            // Separator / quote / whitespace / unicode soup built around the name.
            20..=49 => {
                for _ in 0..rng.below(60) {
                    out.push_str(rng.pick(PIECES));
                }
            }
            // Plausible pairs with hostile values.
            50..=59 => {
                for _ in 0..rng.below(12) {
                    out.push_str(rng.pick(&["sid", " sid ", "xsid", "sid2", "", "\"sid"]));
                    if rng.below(8) != 0 {
                        out.push('=');
                    }
                    for _ in 0..rng.below(6) {
                        out.push_str(rng.pick(PIECES));
                    }
                    out.push_str(rng.pick(&["; ", ";", " ; ", ";;", "\t;"]));
                }
            }
            // Near the size limit, on both sides of it.
            60..=62 => {
                let len = max - 16 + rng.below(33) as usize;
                out.push_str(pool_slice(rng, pool, len));
            }
            // Far over the limit.
            _ => {
                let len = max + 1 + rng.below(max as u64) as usize;
                out.push_str(pool_slice(rng, pool, len));
            }
        }
    }

    #[test]
    fn cookie_parser_survives_a_million_hostile_headers() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut pool = String::new();
        while pool.len() < 16 * MAX {
            pool.push_str(rng.pick(PIECES));
        }
        let mut bytes = Vec::new();
        let mut header = String::new();
        let (mut found, mut oversized) = (0_usize, 0_usize);
        for i in 0..1_000_000 {
            hostile_header(&mut rng, MAX, &pool, &mut bytes, &mut header);
            let name = if i % 16 == 0 { "xsid" } else { "sid" };
            // Exercise the limit itself too, not just the fixed one.
            let max = if i % 32 == 0 {
                rng.below(header.len() as u64 + 2) as usize
            } else {
                MAX
            };
            match find_values(&header, name, max) {
                Err(CookieHeaderError::Oversized) => {
                    assert!(header.len() > max, "{header:?}");
                    oversized += 1;
                }
                Ok(vals) => {
                    assert!(header.len() <= max);
                    for v in vals {
                        let start = (v.as_ptr() as usize)
                            .checked_sub(header.as_ptr() as usize)
                            .expect("value starts before the header");
                        assert_eq!(header.get(start..start + v.len()), Some(v), "{header:?}");
                        assert_eq!(v, v.trim_ascii(), "{header:?}");
                        assert!(!v.contains(';'), "{header:?}");
                        found += 1;
                    }
                }
            }
        }
        // The generator must actually reach both paths.
        assert!(found > 100_000, "found {found}");
        assert!(oversized > 10_000, "oversized {oversized}");
    }
}
