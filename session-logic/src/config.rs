//! The one configuration type every host shares (serde, JSON), parsed and
//! validated up front: an engine only exists for a config that makes sense,
//! and every rejection names the field and the fix.

use serde::{Deserialize, Serialize};

use crate::cookie::{self, SameSite};
use crate::error::ConfigError;

/// How a session ID becomes a Redis key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScheme {
    /// prefix + base64url(SHA-256(id)): a leaked key list does not reveal live IDs.
    #[default]
    Hashed,
    /// prefix + id, for compatibility with existing stores (`vrs-`, `sess:`).
    Plain,
}

/// The textual form of session IDs (32 random bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdFormat {
    /// 43 characters of base64url without padding.
    #[default]
    Base64url,
    /// 44 characters of standard base64 with padding, as Vapor writes them.
    Base64Padded,
    /// 22 characters of base64url without padding: 128 random bits, the
    /// shape tower-sessions gives its IDs, so its `SessionStore` can keep
    /// them. 128 bits is still far beyond guessing (OWASP asks for 64 bits
    /// of entropy); prefer the 256-bit default elsewhere.
    Base64url128,
}

/// What to do when a request's client fingerprint differs from the one the
/// session was created with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingPolicy {
    /// No client binding.
    #[default]
    Off,
    /// Load the session but flag the mismatch for the host to log.
    Report,
    /// Treat the request as having no session (the session itself survives).
    Reject,
}

/// Cookie settings. Defaults are the secure ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    /// Cookie name; `__Host-` names are supported and checked.
    pub name: String,
    /// Path attribute.
    pub path: String,
    /// Domain attribute (none by default: host-only).
    pub domain: Option<String>,
    /// Secure attribute.
    pub secure: bool,
    /// HttpOnly attribute.
    pub http_only: bool,
    /// SameSite attribute.
    pub same_site: SameSite,
    /// `true`: Max-Age in step with the absolute deadline. `false`: a
    /// browser-session cookie that dies with the browser, but may also
    /// outlive the server session on browsers that restore tabs.
    pub persistent: bool,
    /// Longest `Cookie` header we parse; longer ones count as no cookie.
    pub max_header_bytes: usize,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "sid".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: true,
            max_header_bytes: 8192,
        }
    }
}

/// `WAIT` after revocations so a failover cannot undo a logout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durability {
    /// Replicas that must acknowledge.
    pub replicas: u32,
    /// How long Redis may wait for them (ms).
    pub timeout_ms: u64,
}

/// Everything the rules need. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Key prefix, e.g. `sess:`.
    pub prefix: String,
    /// Allow `{…}` in the prefix (puts every key in one Cluster slot).
    pub allow_hash_tag: bool,
    /// How IDs map to keys.
    pub key_scheme: KeyScheme,
    /// ID text format for minting and parsing.
    pub id_format: IdFormat,
    /// Sliding idle timeout.
    pub idle_timeout_ms: u64,
    /// Absolute lifetime from creation (or from the last regenerate).
    pub absolute_lifetime_ms: u64,
    /// A read-only request refreshes the TTL at most once per this interval.
    pub touch_interval_ms: u64,
    /// How long a regenerated ID answers `Rotated` before it is forgotten.
    pub rotation_grace_ms: u64,
    /// Renew the ID this often mid-session (keeping the absolute deadline).
    pub rotate_every_ms: Option<u64>,
    /// Largest single data field (key + JSON value), bytes.
    pub max_field_bytes: usize,
    /// Largest record (all fields), bytes.
    pub max_record_bytes: usize,
    /// Most data keys in one session.
    pub max_fields: usize,
    /// Cap on concurrent sessions per user; the oldest are evicted.
    pub max_sessions_per_user: Option<u32>,
    /// Client binding policy.
    pub client_binding: BindingPolicy,
    /// `WAIT` after destroy, logout-everywhere and regenerate.
    pub durable_revocation: Option<Durability>,
    /// Cookie settings.
    pub cookie: CookieConfig,
    /// Key for `sid_hash` (the only form of an ID that may be logged). Hosts
    /// supply a random one at start-up when this is absent.
    pub log_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            prefix: "sess:".into(),
            allow_hash_tag: false,
            key_scheme: KeyScheme::Hashed,
            id_format: IdFormat::Base64url,
            idle_timeout_ms: 30 * 60 * 1000,
            absolute_lifetime_ms: 24 * 60 * 60 * 1000,
            touch_interval_ms: 60 * 1000,
            rotation_grace_ms: 5 * 1000,
            rotate_every_ms: None,
            max_field_bytes: 64 * 1024,
            max_record_bytes: 256 * 1024,
            max_fields: 256,
            max_sessions_per_user: None,
            client_binding: BindingPolicy::Off,
            durable_revocation: None,
            cookie: CookieConfig::default(),
            log_key: None,
        }
    }
}

/// Longest prefix we accept.
const MAX_PREFIX: usize = 64;
/// Lua's unpack limit keeps fields per script call well below ~8000 arguments.
const MAX_FIELDS_LIMIT: usize = 1000;

impl Config {
    /// Parse JSON and validate.
    pub fn from_json(json: &str) -> Result<Config, ConfigError> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| ConfigError::new("config", format!("{e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Check every rule; the first violation names its field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.prefix;
        if p.is_empty() || p.len() > MAX_PREFIX {
            return Err(ConfigError::new(
                "prefix",
                format!("must be 1..={MAX_PREFIX} bytes (e.g. \"sess:\")"),
            ));
        }
        if let Some(c) = p.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError::new(
                "prefix",
                format!("must not contain whitespace or control characters (found {c:?})"),
            ));
        }
        if !self.allow_hash_tag && (p.contains('{') || p.contains('}')) {
            return Err(ConfigError::new(
                "prefix",
                "contains '{' or '}', which would pick a Cluster hash slot; remove them or set allow_hash_tag: true".into(),
            ));
        }
        if p.contains(['*', '?', '[', ']', '\\']) {
            return Err(ConfigError::new(
                "prefix",
                "must not contain glob characters * ? [ ] \\".into(),
            ));
        }
        positive("idle_timeout_ms", self.idle_timeout_ms)?;
        positive("absolute_lifetime_ms", self.absolute_lifetime_ms)?;
        if self.idle_timeout_ms > self.absolute_lifetime_ms {
            return Err(ConfigError::new(
                "idle_timeout_ms",
                format!(
                    "({}) must not exceed absolute_lifetime_ms ({}); shorten the idle timeout or lengthen the lifetime",
                    human(self.idle_timeout_ms),
                    human(self.absolute_lifetime_ms)
                ),
            ));
        }
        if self.touch_interval_ms >= self.idle_timeout_ms {
            return Err(ConfigError::new(
                "touch_interval_ms",
                format!(
                    "({}) must be shorter than idle_timeout_ms ({}), or sessions of active users would expire",
                    human(self.touch_interval_ms),
                    human(self.idle_timeout_ms)
                ),
            ));
        }
        positive("rotation_grace_ms", self.rotation_grace_ms)?;
        if self.rotation_grace_ms > 60_000 {
            return Err(ConfigError::new(
                "rotation_grace_ms",
                "must be at most 60000 (a few seconds is enough for in-flight requests)".into(),
            ));
        }
        if let Some(every) = self.rotate_every_ms {
            positive("rotate_every_ms", every)?;
        }
        if self.max_fields == 0 || self.max_fields > MAX_FIELDS_LIMIT {
            return Err(ConfigError::new(
                "max_fields",
                format!("must be 1..={MAX_FIELDS_LIMIT}"),
            ));
        }
        if self.max_field_bytes == 0 || self.max_field_bytes > self.max_record_bytes {
            return Err(ConfigError::new(
                "max_field_bytes",
                "must be at least 1 and at most max_record_bytes".into(),
            ));
        }
        if self.max_record_bytes > 64 * 1024 * 1024 {
            return Err(ConfigError::new(
                "max_record_bytes",
                "must be at most 67108864 (64 MiB)".into(),
            ));
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(ConfigError::new(
                "max_sessions_per_user",
                "must be at least 1, or absent for no cap".into(),
            ));
        }
        if let Some(d) = self.durable_revocation {
            if d.replicas == 0 {
                return Err(ConfigError::new(
                    "durable_revocation.replicas",
                    "must be at least 1, or leave durable_revocation out".into(),
                ));
            }
            positive("durable_revocation.timeout_ms", d.timeout_ms)?;
        }
        let c = &self.cookie;
        cookie::check_name(&c.name).map_err(|m| ConfigError::new("cookie.name", m))?;
        cookie::check_path(&c.path).map_err(|m| ConfigError::new("cookie.path", m))?;
        if let Some(d) = &c.domain {
            cookie::check_domain(d).map_err(|m| ConfigError::new("cookie.domain", m))?;
        }
        cookie::check_prefix_rules(&c.name, c.secure, &c.path, c.domain.as_deref())
            .map_err(|m| ConfigError::new("cookie.name", m))?;
        if c.same_site == SameSite::None && !c.secure {
            return Err(ConfigError::new(
                "cookie.same_site",
                "\"none\" requires cookie.secure: true (browsers drop it otherwise)".into(),
            ));
        }
        if c.max_header_bytes < 64 || c.max_header_bytes > 1024 * 1024 {
            return Err(ConfigError::new(
                "cookie.max_header_bytes",
                "must be 64..=1048576".into(),
            ));
        }
        // The engine must be able to read back the cookie it issues.
        let needed = c.name.len() + 1 + 44;
        if c.max_header_bytes < needed {
            return Err(ConfigError::new(
                "cookie.max_header_bytes",
                format!(
                    "({}) is too small to carry our own cookie ({needed} bytes); raise it (8192 is the default)",
                    c.max_header_bytes
                ),
            ));
        }
        if let Some(k) = &self.log_key
            && k.len() < 16
        {
            return Err(ConfigError::new(
                "log_key",
                "must be at least 16 bytes of secret, or absent".into(),
            ));
        }
        Ok(())
    }
}

fn positive(field: &'static str, v: u64) -> Result<(), ConfigError> {
    // 10 years in ms: anything longer is a unit mistake (seconds vs ms, say).
    const MAX: u64 = 10 * 365 * 24 * 3600 * 1000;
    if v == 0 || v > MAX {
        return Err(ConfigError::new(
            field,
            format!("must be 1..={MAX} milliseconds (got {v})"),
        ));
    }
    Ok(())
}

/// "2h", "90s", "1500ms": for messages only.
fn human(ms: u64) -> String {
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn idle_longer_than_lifetime_is_refused_with_both_values() {
        let e =
            Config::from_json(r#"{"idle_timeout_ms": 7200000, "absolute_lifetime_ms": 3600000}"#)
                .unwrap_err();
        assert_eq!(e.field, "idle_timeout_ms");
        assert!(
            e.message.contains("(2h)") && e.message.contains("(1h)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = Config::from_json(r#"{"prefx": "a:"}"#).unwrap_err();
        assert!(e.to_string().contains("prefx"), "{e}");
    }

    #[test]
    fn hash_tag_in_prefix_needs_the_explicit_option() {
        assert_eq!(
            Config::from_json(r#"{"prefix": "{s}:"}"#)
                .unwrap_err()
                .field,
            "prefix"
        );
        Config::from_json(r#"{"prefix": "{s}:", "allow_hash_tag": true}"#).unwrap();
    }

    #[test]
    fn host_prefixed_cookie_needs_secure_root_path_and_no_domain() {
        let e = Config::from_json(r#"{"cookie": {"name": "__Host-sid", "domain": "example.com"}}"#)
            .unwrap_err();
        assert_eq!(e.field, "cookie.name");
        Config::from_json(r#"{"cookie": {"name": "__Host-sid"}}"#).unwrap();
    }

    #[test]
    fn samesite_none_needs_secure() {
        let e =
            Config::from_json(r#"{"cookie": {"same_site": "none", "secure": false}}"#).unwrap_err();
        assert_eq!(e.field, "cookie.same_site");
    }
}
