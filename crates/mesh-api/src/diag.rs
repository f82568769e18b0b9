//! Diagnostics: one error or warning about one field of one object, located in its source.
//!
//! Every layer (parsing, per-object validation, cross-object analysis, the sources) reports
//! problems as [`Diagnostic`]s so `meshctl analyze`, the proxies' logs and `/config_dump`
//! all say the same thing in the same form: `path:doc kind namespace/name: field: message`.

use std::fmt;
use std::sync::Arc;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted, but probably not what the user meant (deprecated field, selector matching nothing).
    Warning,
    /// Rejected: the object (or the field's object) does not take effect.
    Error,
}

/// Where an object came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Origin {
    /// Document `doc` (0-based, in file order) of a YAML/JSON file.
    File { path: Arc<str>, doc: usize },
    /// An object read from the Kubernetes API server.
    Kube,
    /// Unknown (unit tests, objects built in code).
    Unknown,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, doc } => write!(f, "{path}:{doc}"),
            Origin::Kube => f.write_str("kube"),
            Origin::Unknown => f.write_str("-"),
        }
    }
}

/// The object a diagnostic is about: `kind namespace/name` (namespace empty for cluster-scoped
/// objects, name empty when the document has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// True when nothing is known of the object (a file that could not be read or split).
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty() && self.namespace.is_empty() && self.name.is_empty()
    }
}

/// Writes user-supplied text with control characters escaped (`\n` as `\\n`), so that every
/// diagnostic stays on one line: names, keys and values come from untrusted documents, and a
/// newline in them must not forge extra lines in `analyze` output or in logs.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(char::is_control) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.kind.is_empty() { "<unknown kind>" } else { &self.kind };
        if self.namespace.is_empty() {
            write!(f, "{} {}", OneLine(kind), OneLine(&self.name))
        } else {
            write!(f, "{} {}/{}", OneLine(kind), OneLine(&self.namespace), OneLine(&self.name))
        }
    }
}

/// One problem with one field of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: Origin,
    pub object: ObjectRef,
    /// Field path in the object, e.g. `spec.http[0].route[1].weight`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn error(object: ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            origin: Origin::Unknown,
            object,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn warning(object: ObjectRef, field: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Self::error(object, field, message) }
    }

    /// Sets where the object came from (the loader knows; the validators don't).
    pub fn at(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `path:doc kind namespace/name: field: message`, with `warning: ` before the message
    /// of warnings; `path:doc: message` when the document could not be read as an object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object.is_empty() {
            write!(f, "{}: ", self.origin)?;
        } else {
            write!(f, "{} {}: ", self.origin, self.object)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", OneLine(&self.field))?;
        }
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        write!(f, "{}", OneLine(&self.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_form() {
        let obj =
            ObjectRef { kind: "VirtualService".into(), namespace: "bookinfo".into(), name: "reviews".into() };
        let d = Diagnostic::error(obj.clone(), "spec.http[0].route", "weights sum to 90, not 100")
            .at(Origin::File { path: "a.yaml".into(), doc: 2 });
        assert_eq!(
            d.to_string(),
            "a.yaml:2 VirtualService bookinfo/reviews: spec.http[0].route: weights sum to 90, not 100"
        );
        let w = Diagnostic::warning(obj, "", "selects no workload");
        assert_eq!(w.to_string(), "- VirtualService bookinfo/reviews: warning: selects no workload");
        let file = Diagnostic::error(ObjectRef::default(), "", "document 3: mapping values are not allowed")
            .at(Origin::File { path: "a.yaml".into(), doc: 3 });
        assert_eq!(file.to_string(), "a.yaml:3: document 3: mapping values are not allowed");
    }

    #[test]
    fn user_text_cannot_break_the_line() {
        let obj = ObjectRef { kind: "Pod".into(), namespace: "ns\r".into(), name: "bad\nname".into() };
        let d = Diagnostic::error(obj, "metadata.labels.app\n", "unknown variant \"a\nb\"\u{7}");
        let text = d.to_string();
        assert!(!text.contains(['\n', '\r', '\u{7}']), "{text:?}");
        assert_eq!(text, "- Pod ns\\r/bad\\nname: metadata.labels.app\\n: unknown variant \"a\\nb\"\\u{7}");
    }
}
