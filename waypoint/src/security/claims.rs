//! A validated JWT's claims: the standard ones Istio's policies read (`iss`, `sub`, `aud`,
//! `azp`, the `iss/sub` request principal) and the payload for `request.auth.claims[...]`,
//! matched the way Istio matches them.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// A validated token's claims. `request.auth.claims[...]` reads [`Claims::payload`].
#[derive(Clone)]
pub struct Claims {
    issuer: Box<str>,
    subject: Option<Box<str>>,
    audiences: Box<[Box<str>]>,
    presenter: Option<Box<str>>,
    principal: Box<str>,
    payload: Map<String, Value>,
    space_delimited: Arc<[Box<str>]>,
}

impl fmt::Debug for Claims {
    // The payload may hold personal data: logs get the principal only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims").field("principal", &self.principal).finish_non_exhaustive()
    }
}

impl Claims {
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// `aud` (a string claim counts as a one-element list).
    pub fn audiences(&self) -> &[Box<str>] {
        &self.audiences
    }

    /// `azp`.
    pub fn presenter(&self) -> Option<&str> {
        self.presenter.as_deref()
    }

    /// `iss/sub`, Istio's request principal.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// The whole payload.
    pub fn payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    /// The claim at `path` (nested names).
    pub fn claim<S: AsRef<str>>(&self, path: &[S]) -> Option<&Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.payload.get(first.as_ref())?;
        for p in rest {
            v = v.as_object()?.get(p.as_ref())?;
        }
        Some(v)
    }

    pub(super) fn from_payload(payload: Map<String, Value>, space_delimited: Arc<[Box<str>]>) -> Claims {
        let s = |k: &str| payload.get(k).and_then(Value::as_str).map(Box::<str>::from);
        let issuer = s("iss").unwrap_or_default();
        let subject = s("sub");
        let audiences = match payload.get("aud") {
            Some(Value::String(a)) => Box::from([Box::from(a.as_str())]),
            Some(Value::Array(l)) => l.iter().filter_map(Value::as_str).map(Box::from).collect(),
            _ => Box::default(),
        };
        let presenter = s("azp");
        let principal = format!("{issuer}/{}", subject.as_deref().unwrap_or("")).into();
        Claims { issuer, subject, audiences, presenter, principal, payload, space_delimited }
    }
}

/// Istio's claim matching: strings, each string of a list, booleans as `true`/`false`;
/// top-level claims named in `spaceDelimitedClaims` (and `scope`, `permission`) split on
/// spaces. Numbers and objects do not match.
impl mesh_policy::ClaimLookup for Claims {
    fn any_claim(&self, path: &[Box<str>], pred: &mut dyn FnMut(&str) -> bool) -> bool {
        let Some(v) = self.claim(path) else { return false };
        let split = path.len() == 1 && self.space_delimited.iter().any(|c| *c == path[0]);
        let mut one = |s: &str| if split { s.split_ascii_whitespace().any(&mut *pred) } else { pred(s) };
        match v {
            Value::String(s) => one(s),
            Value::Array(l) => l.iter().filter_map(Value::as_str).any(one),
            Value::Bool(b) => pred(if *b { "true" } else { "false" }),
            _ => false,
        }
    }
}
