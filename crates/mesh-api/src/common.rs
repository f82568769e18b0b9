//! Small types shared by the Istio and Gateway API models: string matches with lazily
//! compiled regexes, percentages, workload selectors, policy target references, ports.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A user-written regular expression (RE2 syntax as Envoy uses it, via the `regex` crate),
/// matched against the WHOLE input. Compiled once, on first use or at validation.
pub struct Regex {
    source: String,
    compiled: OnceLock<Result<regex::Regex, String>>,
}

impl Regex {
    pub fn new(source: impl Into<String>) -> Self {
        Regex { source: source.into(), compiled: OnceLock::new() }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The compiled, fully anchored regex, or the compile error (one line, without the
    /// `regex parse error:` preamble).
    pub fn compiled(&self) -> Result<&regex::Regex, &str> {
        self.compiled
            .get_or_init(|| {
                regex::Regex::new(&format!("^(?:{})$", self.source)).map_err(|anchored| {
                    // Report against the user's own text; the anchored form is ours.
                    match regex::Regex::new(&self.source) {
                        Err(e) => clean_regex_error(&e),
                        Ok(_) => clean_regex_error(&anchored),
                    }
                })
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Whole-string match; an invalid regex matches nothing (validation rejects it before use).
    pub fn is_match(&self, text: &str) -> bool {
        self.compiled().map(|r| r.is_match(text)).unwrap_or(false)
    }
}

fn clean_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    match text.lines().rev().find_map(|l| l.strip_prefix("error: ")) {
        Some(last) => last.trim().to_string(),
        None => text.lines().last().unwrap_or_default().trim().to_string(),
    }
}

impl Clone for Regex {
    fn clone(&self) -> Self {
        Regex { source: self.source.clone(), compiled: self.compiled.clone() }
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Regex({:?})", self.source)
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Regex::new)
    }
}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// Istio `StringMatch`: one of exact, prefix or regex. An empty object (`{}`) matches any
/// value; in `headers` it means "the header is present".
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "StringMatchRaw", into = "StringMatchRaw")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    Any,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StringMatchRaw {
    #[serde(skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<Regex>,
}

impl TryFrom<StringMatchRaw> for StringMatch {
    type Error = String;
    fn try_from(r: StringMatchRaw) -> Result<Self, String> {
        match (r.exact, r.prefix, r.regex) {
            (None, None, None) => Ok(StringMatch::Any),
            (Some(e), None, None) => Ok(StringMatch::Exact(e)),
            (None, Some(p), None) => Ok(StringMatch::Prefix(p)),
            (None, None, Some(re)) => Ok(StringMatch::Regex(re)),
            _ => Err("only one of exact, prefix, regex may be set".to_string()),
        }
    }
}

impl From<StringMatch> for StringMatchRaw {
    fn from(m: StringMatch) -> Self {
        match m {
            StringMatch::Exact(e) => StringMatchRaw { exact: Some(e), ..Default::default() },
            StringMatch::Prefix(p) => StringMatchRaw { prefix: Some(p), ..Default::default() },
            StringMatch::Regex(r) => StringMatchRaw { regex: Some(r), ..Default::default() },
            StringMatch::Any => StringMatchRaw::default(),
        }
    }
}

impl StringMatch {
    /// Whether `value` matches (regex over the whole value).
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(e) => e == value,
            StringMatch::Prefix(p) => value.starts_with(p.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
            StringMatch::Any => true,
        }
    }
}

/// Istio `Percent`: a percentage in 0..=100 as a double.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// Percentage, 0.0 to 100.0.
    #[serde(default)]
    pub value: f64,
}

/// Istio `WorkloadSelector` of security/telemetry APIs (`matchLabels`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Pod labels that must all match; empty selects every workload of the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// Istio `WorkloadSelector` of networking APIs (`labels`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelsSelector {
    /// Pod labels that must all match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Istio `PolicyTargetReference` (`targetRef`/`targetRefs`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target ("" for core).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the target (Service, Gateway, ServiceEntry, ...).
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target; must be the policy's own when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Istio `PortSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// Istio `Destination`: a service host, optional subset and port.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Service host name (short, `name.ns`, FQDN, or ServiceEntry host).
    pub host: String,
    /// Subset name from a DestinationRule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Port on the destination host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// Istio `Headers.HeaderOperations`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Istio `Headers`: request and response manipulation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Applied to the request before forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Applied to the response before returning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_is_anchored_and_reports_clean_errors() {
        let r = Regex::new("/api/v[0-9]+");
        assert!(r.is_match("/api/v12"));
        assert!(!r.is_match("/api/v12/x"));
        let bad = Regex::new("/api/(v1");
        assert_eq!(bad.compiled().unwrap_err(), "unclosed group");
        assert!(!bad.is_match("/api/(v1"));
    }

    #[test]
    fn string_match_oneof() {
        let m: StringMatch = serde_json::from_str(r#"{"prefix":"/a"}"#).unwrap();
        assert!(m.matches("/abc"));
        let any: StringMatch = serde_json::from_str("{}").unwrap();
        assert_eq!(any, StringMatch::Any);
        let err = serde_json::from_str::<StringMatch>(r#"{"exact":"a","prefix":"b"}"#).unwrap_err();
        assert!(err.to_string().contains("only one of exact, prefix, regex"));
    }
}
