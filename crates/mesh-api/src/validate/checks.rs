//! Validation context and the small checks every validator shares (ports, percentages,
//! regexes, label syntax, IPs/CIDRs).

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::Diagnostic;
use crate::common::{Percent, Regex, StringMatch};
use crate::diag::ObjectRef;

/// Collects the diagnostics of one object.
#[derive(Debug)]
pub(crate) struct Ctx {
    obj: ObjectRef,
    pub(crate) diags: Vec<Diagnostic>,
}

impl Ctx {
    pub(crate) fn new(obj: ObjectRef) -> Self {
        Ctx { obj, diags: Vec::new() }
    }

    pub(crate) fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.obj.clone(), field, message));
    }

    pub(crate) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.diags.push(Diagnostic::warning(self.obj.clone(), field, message));
    }

    /// Port number in 1..=65535.
    pub(crate) fn port(&mut self, field: &str, port: i64) {
        if !(1..=65535).contains(&port) {
            self.err(field, format!("port {port} out of range 1..65535"));
        }
    }

    pub(crate) fn opt_port(&mut self, field: impl FnOnce() -> String, port: Option<i64>) {
        if let Some(p) = port {
            self.port(&field(), p);
        }
    }

    /// Istio `Percent` in 0..=100.
    pub(crate) fn percent(&mut self, field: &str, p: &Option<Percent>) {
        if let Some(p) = p {
            self.percent_value(&format!("{field}.value"), p.value);
        }
    }

    pub(crate) fn percent_value(&mut self, field: &str, v: f64) {
        if !(0.0..=100.0).contains(&v) {
            self.err(field, format!("percentage {v} out of range 0..100"));
        }
    }

    pub(crate) fn int_range(&mut self, field: impl FnOnce() -> String, v: Option<i64>, min: i64, max: i64) {
        if let Some(v) = v
            && !(min..=max).contains(&v)
        {
            self.err(field(), format!("{v} out of range {min}..{max}"));
        }
    }

    pub(crate) fn non_negative(&mut self, field: impl FnOnce() -> String, v: Option<i32>) {
        if let Some(v) = v
            && v < 0
        {
            self.err(field(), format!("must not be negative, got {v}"));
        }
    }

    pub(crate) fn regex(&mut self, field: &str, r: &Regex) {
        if let Err(e) = r.compiled() {
            self.err(field, format!("invalid regex {:?}: {e}", r.as_str()));
        }
    }

    /// Compiles a regex given as a plain string (Gateway API), reporting its error.
    pub(crate) fn regex_str(&mut self, field: &str, pattern: &str) {
        self.regex(field, &Regex::new(pattern));
    }

    pub(crate) fn string_match(&mut self, field: &str, m: &Option<StringMatch>) {
        if let Some(StringMatch::Regex(r)) = m {
            self.regex(&format!("{field}.regex"), r);
        }
    }

    pub(crate) fn string_matches(&mut self, field: &str, map: &BTreeMap<String, StringMatch>) {
        for (k, m) in map {
            if let StringMatch::Regex(r) = m {
                self.regex(&format!("{field}.{k}.regex"), r);
            }
        }
    }

    /// Kubernetes label keys and values.
    pub(crate) fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            if let Err(e) = check_label_key(k) {
                self.err(format!("{field}.{k}"), format!("invalid label key {k:?}: {e}"));
            }
            if let Err(e) = check_label_value(v) {
                self.err(format!("{field}.{k}"), format!("invalid label value {v:?}: {e}"));
            }
        }
    }

    pub(crate) fn ip(&mut self, field: &str, text: &str) {
        if text.parse::<IpAddr>().is_err() {
            self.err(field, format!("{text:?} is not an IP address"));
        }
    }

    pub(crate) fn ip_or_cidr(&mut self, field: &str, text: &str) {
        if !is_ip_or_cidr(text) {
            self.err(field, format!("{text:?} is not an IP address or CIDR"));
        }
    }

    pub(crate) fn required(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.err(field, "is required");
        }
    }
}

pub(crate) fn is_ip_or_cidr(text: &str) -> bool {
    match text.split_once('/') {
        None => text.parse::<IpAddr>().is_ok(),
        Some((ip, len)) => match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
            (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
            _ => false,
        },
    }
}

fn is_label_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("name part must not be empty");
    }
    if s.len() > 63 {
        return Err("name part must be at most 63 characters");
    }
    let b = s.as_bytes();
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err("must start and end with an alphanumeric character");
    }
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        return Err("may contain only alphanumerics, '-', '_' and '.'");
    }
    Ok(())
}

/// RFC 1123 label: namespaces and most names.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

/// RFC 1123 subdomain: object names.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `[prefix/]name` as Kubernetes defines label keys.
pub(crate) fn check_label_key(key: &str) -> Result<(), &'static str> {
    match key.split_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err("prefix must be a DNS subdomain");
            }
            is_label_name(name)
        }
        None => is_label_name(key),
    }
}

pub(crate) fn check_label_value(v: &str) -> Result<(), &'static str> {
    if v.is_empty() { Ok(()) } else { is_label_name(v) }
}

/// IANA service name as Kubernetes port names use it.
pub(crate) fn is_port_name(s: &str) -> bool {
    let b = s.as_bytes();
    !s.is_empty()
        && s.len() <= 15
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_syntax() {
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("app.kubernetes.io/name").is_ok());
        assert!(check_label_key("-app").is_err());
        assert!(check_label_key("Bad_Prefix/x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_3").is_ok());
        assert!(check_label_value("a b").is_err());
        assert!(is_port_name("http-web"));
        assert!(!is_port_name("8080"));
        assert!(is_ip_or_cidr("10.0.0.0/8") && is_ip_or_cidr("::1") && !is_ip_or_cidr("10.0.0.0/33"));
    }
}
