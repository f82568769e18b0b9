//! RequestAuthentication: JWT validation at the waypoint ([`Authenticator`], one per Service
//! and model generation) and the validated [`Claims`] authorization reads.
//!
//! # Which RequestAuthentications apply
//! As Istio does for waypoints, only **targeted** ones: `targetRefs` naming the Service
//! (kind `Service`, or `ServiceEntry` for a service defined by one), the waypoint's own Gateway (kind `Gateway`, every service it serves),
//! or the `istio-waypoint` GatewayClass from the root namespace (every waypoint).
//! Selector and namespace-wide RequestAuthentications are enforced where the workload's
//! proxy is (a sidecar in Istio); in ambient mode they have no effect on waypoint traffic.
//!
//! # Semantics (Envoy's `jwt_authn` as Istio configures it: `requires_any` + allow missing)
//! - Tokens are looked for in every rule's locations: `fromHeaders` (value after the
//!   prefix, matched ASCII case-insensitively), `fromParams`, `fromCookies`; a rule with
//!   none of them reads `Authorization: Bearer <token>` and the `access_token` parameter.
//! - No token anywhere: authentication passes with no claims (the AuthorizationPolicy decides,
//!   e.g. with `requestPrincipals: ["*"]`).
//! - A token is validated by the rules whose location it came from and whose `issuer` equals
//!   its (unverified) `iss`. The request passes when one token validates; when tokens exist
//!   and none validates it fails with 401 and `www-authenticate: Bearer realm="<url>",
//!   error="invalid_token"`.
//! - Algorithms: RS256/384/512, PS256/384/512, ES256/384 and EdDSA (Ed25519), verified with
//!   aws-lc-rs. `alg: none`, every HMAC algorithm (HS256 signed with the public key as the
//!   secret is the classic confusion attack), unknown algorithms, `crit` headers, keys whose
//!   type or pinned `alg` does not fit, RSA keys under 2048 bits, malformed base64url or JSON
//!   and tokens over [`MAX_TOKEN_LEN`] are refused.
//! - `kid`: when the token names one, only keys with that `kid` are tried; an unknown `kid`
//!   triggers one (rate-limited) JWKS refresh, then fails. Without a `kid` every key of the
//!   right type is tried.
//! - Time: `exp` and `nbf` (optional, numeric) are checked with [`CLOCK_SKEW`] (60 s,
//!   Envoy's default) of tolerance. `iat` is not checked.
//! - `audiences`: when set, one `aud` value (string or list) must be listed. When empty, the
//!   audience is not checked (what Istio's Envoy configuration does).
//! - After success: the token is removed from where it was found unless
//!   `forwardOriginalToken` (header removed, query parameter or cookie cut out);
//!   `outputPayloadToHeader` gets the payload as it appears in the token (base64url);
//!   `outputClaimToHeaders` gets string, number and boolean claims (`a.b` for nested). The
//!   output headers of every rule are first removed from the request, so a client cannot
//!   forge them by sending them without a token.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{COOKIE, HeaderName, HeaderValue};
use http::request::Parts;
use mesh_api::istio::security::{JwtRule, RequestAuthenticationSpec};
use mesh_api::{Diagnostic, Object, ObjectRef, Origin};
use mesh_model::{Model, PolicyKind, Service, WaypointRef};
use serde_json::{Map, Value};

pub use super::claims::Claims;

use super::jwks::{Jwk, Jwks, JwksCache, KeyKind, RemoteJwks, RemoteKeys};

/// The largest token accepted (header, payload and signature, base64url).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Tolerance on `exp` and `nbf`.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// How long a request waits for a remote JWKS that is still being fetched, when the rule
/// sets no `timeout`.
pub const DEFAULT_JWKS_WAIT: Duration = Duration::from_secs(5);
/// Claims Istio splits on spaces for `request.auth.claims[...]` in addition to a rule's
/// `spaceDelimitedClaims`.
pub const DEFAULT_SPACE_DELIMITED_CLAIMS: [&str; 2] = ["scope", "permission"];

/// Why a token was refused (the request is answered 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    #[error("Jwt is too large")]
    Oversize,
    #[error("Jwt is not in the form of Header.Payload.Signature")]
    Malformed,
    #[error("Jwt header or payload is not valid base64url JSON")]
    BadEncoding,
    #[error("Jwt uses alg none")]
    AlgNone,
    #[error("Jwt uses a symmetric (HMAC) algorithm")]
    Hmac,
    #[error("Jwt algorithm {0:?} is not supported")]
    UnsupportedAlg(Box<str>),
    #[error("Jwt header has critical extensions")]
    Critical,
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    #[error("Jwt kid is not in the JWKS")]
    UnknownKid,
    #[error("Jwks has no key of the type the Jwt algorithm needs")]
    WrongKeyType,
    #[error("Jwks remote fetch is failed")]
    JwksUnavailable,
    #[error("Jwks is invalid")]
    JwksInvalid,
    #[error("Jwt verification fails")]
    BadSignature,
    #[error("Jwt is expired")]
    Expired,
    #[error("Jwt not yet valid")]
    NotYetValid,
    #[error("Audiences in Jwt are not allowed")]
    AudienceMismatch,
}

impl AuthnError {
    pub fn status(&self) -> http::StatusCode {
        http::StatusCode::UNAUTHORIZED
    }

    /// The 401 answer: `www-authenticate` with the request URL as realm, the reason as body.
    pub fn response(&self, parts: &Parts) -> http::Response<Bytes> {
        let host = super::request_host(parts).unwrap_or("");
        let realm = format!("http://{host}{}", parts.uri.path()).replace('"', "%22");
        let challenge = format!("Bearer realm=\"{realm}\", error=\"invalid_token\"");
        let mut resp = http::Response::new(Bytes::from(self.to_string()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\"")),
        );
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        resp
    }
}

/// A JWS algorithm we verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    fn parse(s: &str) -> Result<Alg, AuthnError> {
        Ok(match s {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            s if s.eq_ignore_ascii_case("none") => return Err(AuthnError::AlgNone),
            s if s.starts_with("HS") => return Err(AuthnError::Hmac),
            s => return Err(AuthnError::UnsupportedAlg(s.into())),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn key_kind(self) -> KeyKind {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512 => KeyKind::Rsa,
            Alg::Es256 => KeyKind::EcP256,
            Alg::Es384 => KeyKind::EcP384,
            Alg::EdDsa => KeyKind::Ed25519,
        }
    }

    fn rsa_params(self) -> Option<&'static RsaParameters> {
        Some(match self {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            _ => return None,
        })
    }

    fn verify(self, key: &Jwk, msg: &[u8], sig: &[u8]) -> bool {
        if let Some(params) = self.rsa_params() {
            return RsaPublicKeyComponents { n: &key.key[..], e: &key.e[..] }
                .verify(params, msg, sig)
                .is_ok();
        }
        let alg: &dyn signature::VerificationAlgorithm = match self {
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::Es384 => &signature::ECDSA_P384_SHA384_FIXED,
            _ => &signature::ED25519,
        };
        UnparsedPublicKey::new(alg, &key.key[..]).verify(msg, sig).is_ok()
    }
}

/// Where a token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A header, the token after `prefix`.
    Header { name: HeaderName, prefix: Box<str> },
    /// A query parameter.
    Param(Box<str>),
    /// A cookie.
    Cookie(Box<str>),
}

impl TokenLocation {
    /// The token in `parts`, if any (the first one found).
    fn extract(&self, parts: &Parts) -> Option<String> {
        match self {
            TokenLocation::Header { name, prefix } => parts.headers.get_all(name).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                let n = prefix.len();
                let rest = (v.len() >= n && v.as_bytes()[..n].eq_ignore_ascii_case(prefix.as_bytes()))
                    .then(|| &v[n..])?
                    .trim();
                (!rest.is_empty()).then(|| rest.to_string())
            }),
            TokenLocation::Param(name) => parts.uri.query().and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, v)| k == &&**name && !v.is_empty())
                    .map(|(_, v)| v.to_string())
            }),
            TokenLocation::Cookie(name) => cookies(parts)
                .find(|(k, v)| k == &&**name && !v.is_empty())
                .map(|(_, v)| v.trim_matches('"').to_string()),
        }
    }

    /// Removes the token from `parts` (`forwardOriginalToken: false`).
    fn strip(&self, parts: &mut Parts) {
        match self {
            TokenLocation::Header { name, .. } => {
                parts.headers.remove(name);
            }
            TokenLocation::Param(name) => {
                let Some(q) = parts.uri.query() else { return };
                let kept: Vec<&str> =
                    q.split('&').filter(|kv| kv.split_once('=').map_or(*kv, |(k, _)| k) != &**name).collect();
                let pq = if kept.is_empty() {
                    parts.uri.path().to_string()
                } else {
                    format!("{}?{}", parts.uri.path(), kept.join("&"))
                };
                let mut up = http::uri::Parts::from(parts.uri.clone());
                if let Ok(pq) = pq.parse() {
                    up.path_and_query = Some(pq);
                    if let Ok(u) = http::Uri::from_parts(up) {
                        parts.uri = u;
                    }
                }
            }
            TokenLocation::Cookie(name) => {
                let kept: Vec<String> =
                    cookies(parts).filter(|(k, _)| k != &&**name).map(|(k, v)| format!("{k}={v}")).collect();
                parts.headers.remove(COOKIE);
                if !kept.is_empty()
                    && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                {
                    parts.headers.insert(COOKIE, v);
                }
            }
        }
    }
}

fn cookies(parts: &Parts) -> impl Iterator<Item = (&str, &str)> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
}

/// Where a rule's keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    Inline(Arc<Jwks>),
    Remote(Arc<RemoteJwks>),
    /// Neither set or an unparsable inline set: every token of the issuer fails.
    Invalid,
}

/// A claim name split on `.` (nested claims).
type ClaimPath = Box<[Box<str>]>;

/// One `jwtRules` entry, compiled.
#[derive(Debug)]
struct CompiledRule {
    issuer: Box<str>,
    audiences: Box<[Box<str>]>,
    keys: KeySource,
    locations: Box<[TokenLocation]>,
    payload_header: Option<HeaderName>,
    claim_headers: Box<[(HeaderName, ClaimPath)]>,
    forward: bool,
    space_delimited: Arc<[Box<str>]>,
    jwks_wait: Duration,
}

/// The JWT rules that apply to one Service at this waypoint. Immutable; build one per model
/// generation ([`Authenticator::for_service`]).
#[derive(Debug, Default)]
pub struct Authenticator {
    rules: Box<[CompiledRule]>,
    /// Every rule's output headers (removed from incoming requests).
    output_headers: Box<[HeaderName]>,
    diagnostics: Box<[Diagnostic]>,
}

#[derive(serde::Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

/// A token split and decoded, not yet verified.
struct Parsed<'t> {
    alg: Alg,
    kid: Option<String>,
    /// `header.payload`, the signed bytes.
    signed: &'t str,
    payload_b64: &'t str,
    signature: Vec<u8>,
    payload: Map<String, Value>,
}

fn parse_token(token: &str) -> Result<Parsed<'_>, AuthnError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthnError::Oversize);
    }
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(AuthnError::Malformed);
    };
    let header: JoseHeader = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthnError::BadEncoding)?;
    let alg = Alg::parse(&header.alg)?;
    if header.crit.is_some() {
        return Err(AuthnError::Critical);
    }
    let payload: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthnError::BadEncoding)?;
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthnError::BadEncoding)?;
    Ok(Parsed {
        alg,
        kid: header.kid,
        signed: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature,
        payload,
    })
}

/// Seconds since the epoch now.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

impl CompiledRule {
    fn compile(
        obj: &ObjectRef,
        origin: &Origin,
        field: &str,
        r: &JwtRule,
        cache: &JwksCache,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<CompiledRule> {
        let mut bad =
            |f: String, m: String| diags.push(Diagnostic::error(obj.clone(), f, m).at(origin.clone()));
        let issuer = match r.issuer.as_deref() {
            Some(i) if !i.is_empty() => i,
            _ => {
                bad(format!("{field}.issuer"), "is required; the rule is ignored".into());
                return None;
            }
        };
        let keys = match (r.jwks.as_deref(), r.jwks_uri.as_deref().or(r.jwks_uri_snake.as_deref())) {
            (Some(inline), _) => match Jwks::parse(inline.as_bytes()) {
                Ok(set) => KeySource::Inline(Arc::new(set)),
                Err(e) => {
                    bad(format!("{field}.jwks"), format!("{e}; tokens of {issuer:?} are refused"));
                    KeySource::Invalid
                }
            },
            (None, Some(uri)) => KeySource::Remote(cache.get(uri)),
            (None, None) => {
                // Istio would discover the issuer's OpenID configuration; we do not fetch it.
                bad(
                    field.to_string(),
                    format!(
                        "neither jwks nor jwksUri is set (OIDC discovery is not supported); tokens of {issuer:?} are refused"
                    ),
                );
                KeySource::Invalid
            }
        };
        let mut locations = Vec::new();
        for (j, h) in r.from_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => locations
                    .push(TokenLocation::Header { name, prefix: h.prefix.as_deref().unwrap_or("").into() }),
                Err(_) => bad(
                    format!("{field}.fromHeaders[{j}].name"),
                    format!("{:?} is not a header name", h.name),
                ),
            }
        }
        locations.extend(r.from_params.iter().map(|p| TokenLocation::Param(p.as_str().into())));
        locations.extend(r.from_cookies.iter().map(|c| TokenLocation::Cookie(c.as_str().into())));
        if r.from_headers.is_empty() && r.from_params.is_empty() && r.from_cookies.is_empty() {
            locations
                .push(TokenLocation::Header { name: http::header::AUTHORIZATION, prefix: "Bearer ".into() });
            locations.push(TokenLocation::Param("access_token".into()));
        }
        let header = |bad: &mut dyn FnMut(String, String), f: String, name: &str| {
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| bad(f, format!("{name:?} is not a header name")))
                .ok()
        };
        let payload_header = r
            .output_payload_to_header
            .as_deref()
            .and_then(|n| header(&mut bad, format!("{field}.outputPayloadToHeader"), n));
        let claim_headers = r
            .output_claim_to_headers
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                let h = header(&mut bad, format!("{field}.outputClaimToHeaders[{j}].header"), &c.header)?;
                let path: Box<[Box<str>]> = c.claim.split('.').map(Box::from).collect();
                Some((h, path))
            })
            .collect();
        let space_delimited = DEFAULT_SPACE_DELIMITED_CLAIMS
            .iter()
            .copied()
            .chain(r.space_delimited_claims.iter().map(String::as_str))
            .map(Box::from)
            .collect();
        Some(CompiledRule {
            issuer: issuer.into(),
            audiences: r.audiences.iter().map(|a| a.as_str().into()).collect(),
            keys,
            locations: locations.into(),
            payload_header,
            claim_headers,
            forward: r.forward_original_token.unwrap_or(false),
            space_delimited,
            jwks_wait: r.timeout.map_or(DEFAULT_JWKS_WAIT, |d| d.0),
        })
    }

    /// Verifies the signature and the claims of `t` for this rule.
    async fn verify(&self, t: &Parsed<'_>, now: f64) -> Result<(), AuthnError> {
        let set = match &self.keys {
            KeySource::Inline(set) => set.clone(),
            KeySource::Invalid => return Err(AuthnError::JwksInvalid),
            KeySource::Remote(remote) => match remote.ready(self.jwks_wait).await {
                RemoteKeys::Ready(set, _) => set,
                RemoteKeys::Pending | RemoteKeys::Failed(_) => {
                    remote.request_refresh();
                    return Err(AuthnError::JwksUnavailable);
                }
            },
        };
        match verify_with(&set, t) {
            Err(AuthnError::UnknownKid) => {
                // A rotated key: refresh once (rate-limited), then try again.
                let KeySource::Remote(remote) = &self.keys else { return Err(AuthnError::UnknownKid) };
                let mut rx = remote.subscribe();
                rx.borrow_and_update();
                if !remote.request_refresh() {
                    return Err(AuthnError::UnknownKid);
                }
                let _ = tokio::time::timeout(self.jwks_wait, rx.changed()).await;
                let RemoteKeys::Ready(set, _) = remote.current() else { return Err(AuthnError::UnknownKid) };
                verify_with(&set, t)?;
            }
            other => other?,
        }
        self.check_claims(&t.payload, now)
    }

    /// Sets `outputPayloadToHeader` and `outputClaimToHeaders`.
    fn output(&self, claims: &Claims, payload_b64: &str, parts: &mut Parts) {
        if let Some(h) = &self.payload_header
            && let Ok(v) = HeaderValue::from_str(payload_b64)
        {
            parts.headers.insert(h.clone(), v);
        }
        for (h, path) in self.claim_headers.iter() {
            let v = match claims.claim(path) {
                Some(Value::String(s)) => HeaderValue::from_str(s).ok(),
                Some(Value::Bool(b)) => Some(HeaderValue::from_static(if *b { "true" } else { "false" })),
                Some(Value::Number(n)) => HeaderValue::from_str(&n.to_string()).ok(),
                _ => None,
            };
            if let Some(v) = v {
                parts.headers.insert(h.clone(), v);
            }
        }
    }

    fn check_claims(&self, p: &Map<String, Value>, now: f64) -> Result<(), AuthnError> {
        if p.get("iss").and_then(Value::as_str) != Some(&*self.issuer) {
            return Err(AuthnError::UnknownIssuer);
        }
        let skew = CLOCK_SKEW.as_secs_f64();
        let time = |k: &str| match p.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or(AuthnError::BadEncoding),
        };
        if let Some(exp) = time("exp")?
            && now > exp + skew
        {
            return Err(AuthnError::Expired);
        }
        if let Some(nbf) = time("nbf")?
            && now + skew < nbf
        {
            return Err(AuthnError::NotYetValid);
        }
        if !self.audiences.is_empty() {
            let ok = |a: &str| self.audiences.iter().any(|x| **x == *a);
            let matched = match p.get("aud") {
                Some(Value::String(a)) => ok(a),
                Some(Value::Array(l)) => l.iter().filter_map(Value::as_str).any(ok),
                _ => false,
            };
            if !matched {
                return Err(AuthnError::AudienceMismatch);
            }
        }
        Ok(())
    }
}

/// Tries the keys of `set` that fit `t`'s `kid` and algorithm.
fn verify_with(set: &Jwks, t: &Parsed<'_>) -> Result<(), AuthnError> {
    let kind = t.alg.key_kind();
    let mut named = false;
    let mut fitting = false;
    for k in set.keys() {
        if let Some(kid) = &t.kid {
            if k.kid.as_deref() != Some(kid.as_str()) {
                continue;
            }
            named = true;
        }
        if k.kind != kind || k.alg.as_deref().is_some_and(|a| a != t.alg.as_str()) {
            continue;
        }
        fitting = true;
        if t.alg.verify(k, t.signed.as_bytes(), &t.signature) {
            return Ok(());
        }
    }
    if t.kid.is_some() && !named {
        Err(AuthnError::UnknownKid)
    } else if !fitting {
        Err(AuthnError::WrongKeyType)
    } else {
        Err(AuthnError::BadSignature)
    }
}

impl Authenticator {
    /// The RequestAuthentications targeting `service` (kind `Service`), the waypoint's Gateway
    /// `waypoint`, or the `istio-waypoint` GatewayClass in the root namespace.
    pub fn for_service(
        model: &Model,
        service: &Service,
        waypoint: Option<&WaypointRef>,
        cache: &JwksCache,
    ) -> Authenticator {
        let kind = PolicyKind::RequestAuthentication;
        let root = &*model.config().root_namespace;
        let mut seen: Vec<(&str, &str)> = Vec::new();
        let mut specs = Vec::new();
        let targets = model
            .policies_targeting(kind, super::service_target_kind(service), &service.namespace, &service.name)
            .chain(
                waypoint
                    .into_iter()
                    .flat_map(|w| model.policies_targeting(kind, "Gateway", &w.namespace, &w.name)),
            )
            .chain(model.policies_targeting(kind, "GatewayClass", root, super::WAYPOINT_GATEWAY_CLASS));
        for p in targets {
            if seen.contains(&(&*p.namespace, &*p.name)) {
                continue;
            }
            seen.push((&p.namespace, &p.name));
            if let Object::RequestAuthentication(r) = &p.object {
                specs.push((p.namespace.to_string(), p.name.to_string(), &r.spec, p.origin.clone()));
            }
        }
        Self::from_specs(specs.iter().map(|(ns, n, s, o)| (ns.as_str(), n.as_str(), *s, o.clone())), cache)
    }

    /// Compiles RequestAuthentication specs `(namespace, name, spec, origin)`. Problems are
    /// logged here and kept in [`Authenticator::diagnostics`]; the other rules still apply.
    pub fn from_specs<'a>(
        specs: impl IntoIterator<Item = (&'a str, &'a str, &'a RequestAuthenticationSpec, Origin)>,
        cache: &JwksCache,
    ) -> Authenticator {
        let mut diags = Vec::new();
        let mut rules = Vec::new();
        for (ns, name, spec, origin) in specs {
            let obj =
                ObjectRef { kind: "RequestAuthentication".into(), namespace: ns.into(), name: name.into() };
            for (i, r) in spec.jwt_rules.iter().enumerate() {
                let field = format!("spec.jwtRules[{i}]");
                rules.extend(CompiledRule::compile(&obj, &origin, &field, r, cache, &mut diags));
            }
        }
        for d in &diags {
            tracing::warn!(target: "waypoint::security", "{d}");
        }
        let mut output_headers: Vec<HeaderName> = Vec::new();
        for r in &rules {
            for h in r.payload_header.iter().chain(r.claim_headers.iter().map(|(h, _)| h)) {
                if !output_headers.contains(h) {
                    output_headers.push(h.clone());
                }
            }
        }
        Authenticator {
            rules: rules.into(),
            output_headers: output_headers.into(),
            diagnostics: diags.into(),
        }
    }

    /// Whether no JWT rule applies (authentication is then a no-op).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// Validates the request's tokens (see the module docs). `Ok(None)`: no token.
    /// On success the token is stripped (unless forwarded) and the output headers set.
    pub async fn authenticate(&self, parts: &mut Parts) -> Result<Option<Claims>, AuthnError> {
        self.authenticate_at(parts, unix_now()).await
    }

    /// [`Authenticator::authenticate`] at a given time (seconds since the epoch).
    pub async fn authenticate_at(&self, parts: &mut Parts, now: f64) -> Result<Option<Claims>, AuthnError> {
        for h in self.output_headers.iter() {
            parts.headers.remove(h);
        }
        // (rule, location, token) for every token found.
        let mut found: Vec<(usize, usize, String)> = Vec::new();
        for (ri, rule) in self.rules.iter().enumerate() {
            for (li, loc) in rule.locations.iter().enumerate() {
                if let Some(t) = loc.extract(parts) {
                    found.push((ri, li, t));
                }
            }
        }
        if found.is_empty() {
            return Ok(None);
        }
        let mut first_err = None;
        let mut tried: Vec<&str> = Vec::new();
        for (_, _, token) in &found {
            if tried.contains(&token.as_str()) {
                continue;
            }
            tried.push(token);
            let parsed = match parse_token(token) {
                Ok(p) => p,
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            let iss = parsed.payload.get("iss").and_then(Value::as_str).unwrap_or("");
            let mut result = Err(AuthnError::UnknownIssuer);
            let mut winner = None;
            for &(ri, _, ref t) in &found {
                let rule = &self.rules[ri];
                if t != token || *rule.issuer != *iss {
                    continue;
                }
                result = rule.verify(&parsed, now).await;
                if result.is_ok() {
                    winner = Some(ri);
                    break;
                }
            }
            match (result, winner) {
                (Ok(()), Some(ri)) => {
                    let rule = &self.rules[ri];
                    if !rule.forward {
                        for &(r, li, ref t) in &found {
                            if r == ri && t == token {
                                rule.locations[li].strip(parts);
                            }
                        }
                    }
                    let payload_b64 = parsed.payload_b64.to_string();
                    let claims = Claims::from_payload(parsed.payload, rule.space_delimited.clone());
                    rule.output(&claims, &payload_b64, parts);
                    return Ok(Some(claims));
                }
                (Err(e), _) => {
                    first_err.get_or_insert(e);
                }
                (Ok(()), None) => {}
            }
        }
        Err(first_err.unwrap_or(AuthnError::Malformed))
    }
}
