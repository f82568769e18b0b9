//! Unit tests of the waypoint's security: path normalisation, JWT validation with keys made
//! here with aws-lc-rs, JWKS fetched from a local HTTP server, and L7 authorization.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::request::Parts;
use mesh_api::istio::security::RequestAuthenticationSpec;
use mesh_api::{Origin, Parsed, SpiffeId, parse_object, split_documents};
use mesh_model::{MeshConfig, Model, WaypointRef, translate};
use mesh_policy::{AuthzIndex, ClaimLookup, Reason};
use serde_json::{Value, json};

use super::jwks::{FetchError, JwksFetcher, RemoteKeys};
use super::*;

// ---------------------------------------------------------------- paths

fn norm(p: &str) -> Result<String, PathError> {
    normalize_path(p).map(Cow::into_owned)
}

#[test]
fn path_already_normal_is_borrowed() {
    for p in ["/", "/a/b", "/a/b/", "/a.b/c..d/.e", "/a?x=/../y", "*"] {
        assert!(matches!(normalize_path(p), Ok(Cow::Borrowed(_))), "{p}");
    }
}

#[test]
fn path_dot_segments() {
    assert_eq!(norm("/admin/../x").unwrap(), "/x");
    assert_eq!(norm("/a/./b").unwrap(), "/a/b");
    assert_eq!(norm("/a/b/..").unwrap(), "/a/");
    assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
    assert_eq!(norm("/x/../../admin").unwrap(), "/admin");
    assert_eq!(norm("/..").unwrap(), "/");
    assert_eq!(norm("/public/../admin/secret").unwrap(), "/admin/secret");
}

#[test]
fn path_encoded_dots_are_decoded_first() {
    assert_eq!(norm("/%2e%2e/admin").unwrap(), "/admin");
    assert_eq!(norm("/public/%2E%2E/admin").unwrap(), "/admin");
    assert_eq!(norm("/public/.%2e/admin").unwrap(), "/admin");
    assert_eq!(norm("/%2e/admin").unwrap(), "/admin");
}

#[test]
fn path_unreserved_decoded_others_kept_uppercase() {
    assert_eq!(norm("/%61dmin").unwrap(), "/admin");
    assert_eq!(norm("/a%7Eb%2Dc%5F").unwrap(), "/a~b-c_");
    assert_eq!(norm("/a%3fb").unwrap(), "/a%3Fb");
    assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
    assert_eq!(norm("/%25").unwrap(), "/%25");
}

#[test]
fn path_merge_slashes() {
    assert_eq!(norm("//admin").unwrap(), "/admin");
    assert_eq!(norm("/a///b//").unwrap(), "/a/b/");
    assert_eq!(norm("///").unwrap(), "/");
}

#[test]
fn path_escaped_slashes_refused() {
    assert_eq!(norm("/admin%2Fx"), Err(PathError::EscapedSlash));
    assert_eq!(norm("/admin%2fx"), Err(PathError::EscapedSlash));
    assert_eq!(norm("/a%5Cb"), Err(PathError::EscapedSlash));
    assert_eq!(norm("/a%5cb"), Err(PathError::EscapedSlash));
}

#[test]
fn path_backslash_nul_control_refused() {
    assert_eq!(norm("/a\\..\\admin"), Err(PathError::Backslash));
    assert_eq!(norm("/a%00b"), Err(PathError::Nul));
    assert_eq!(norm("/a\0b"), Err(PathError::Nul));
    assert_eq!(norm("/a\nb"), Err(PathError::InvalidChar));
    assert_eq!(norm("/a#b"), Err(PathError::InvalidChar));
    assert_eq!(PathError::Nul.status(), http::StatusCode::BAD_REQUEST);
}

#[test]
fn path_bad_escapes_and_relative_refused() {
    assert_eq!(norm("/a%zz"), Err(PathError::BadEscape));
    assert_eq!(norm("/a%4"), Err(PathError::BadEscape));
    assert_eq!(norm("/a%"), Err(PathError::BadEscape));
    assert_eq!(norm("a/b"), Err(PathError::NotAbsolute));
    assert_eq!(norm(""), Err(PathError::NotAbsolute));
}

#[test]
fn path_query_kept_verbatim() {
    assert_eq!(norm("/a/../b?x=%2F..//&y=%00").unwrap(), "/b?x=%2F..//&y=%00");
    assert_eq!(norm("//a?").unwrap(), "/a?");
}

#[test]
fn path_case_is_kept() {
    assert_eq!(norm("/ADMIN").unwrap(), "/ADMIN");
    assert_eq!(norm("/%41DMIN").unwrap(), "/ADMIN");
}

// ---------------------------------------------------------------- keys and tokens

const ISS: &str = "https://issuer.example";

struct Keys {
    rsa: RsaKeyPair,
    rsa_other: RsaKeyPair,
    p256: EcdsaKeyPair,
    p384: EcdsaKeyPair,
    ed: Ed25519KeyPair,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| Keys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        rsa_other: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        p256: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        p384: EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
        ed: Ed25519KeyPair::generate().unwrap(),
    })
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn rsa_jwk(kp: &RsaKeyPair, kid: &str) -> Value {
    let pk = kp.public_key();
    json!({"kty": "RSA", "kid": kid, "n": b64(pk.modulus().big_endian_without_leading_zero()),
           "e": b64(pk.exponent().big_endian_without_leading_zero())})
}

fn ec_jwk(kp: &EcdsaKeyPair, crv: &str, kid: &str) -> Value {
    let p = kp.public_key().as_ref();
    let n = (p.len() - 1) / 2;
    json!({"kty": "EC", "crv": crv, "kid": kid, "x": b64(&p[1..1 + n]), "y": b64(&p[1 + n..])})
}

fn ed_jwk(kp: &Ed25519KeyPair, kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(kp.public_key().as_ref())})
}

/// Every test key, each with `kid` = its algorithm family.
fn jwks_all() -> String {
    let k = keys();
    json!({"keys": [rsa_jwk(&k.rsa, "rsa"), ec_jwk(&k.p256, "P-256", "p256"), ec_jwk(&k.p384, "P-384", "p384"),
                    ed_jwk(&k.ed, "ed")]})
    .to_string()
}

fn sign_raw(alg: &str, header: &Value, payload: &Value) -> String {
    let k = keys();
    let signing = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()));
    let msg = signing.as_bytes();
    let rng = SystemRandom::new();
    let rsa = |kp: &RsaKeyPair, enc: &'static dyn signature::RsaEncoding| {
        let mut sig = vec![0; kp.public_modulus_len()];
        kp.sign(enc, &rng, msg, &mut sig).unwrap();
        sig
    };
    let sig = match alg {
        "RS256" => rsa(&k.rsa, &signature::RSA_PKCS1_SHA256),
        "RS384" => rsa(&k.rsa, &signature::RSA_PKCS1_SHA384),
        "RS512" => rsa(&k.rsa, &signature::RSA_PKCS1_SHA512),
        "PS256" => rsa(&k.rsa, &signature::RSA_PSS_SHA256),
        "PS384" => rsa(&k.rsa, &signature::RSA_PSS_SHA384),
        "PS512" => rsa(&k.rsa, &signature::RSA_PSS_SHA512),
        "RS256-other" => rsa(&k.rsa_other, &signature::RSA_PKCS1_SHA256),
        "ES256" => k.p256.sign(&rng, msg).unwrap().as_ref().to_vec(),
        "ES384" => k.p384.sign(&rng, msg).unwrap().as_ref().to_vec(),
        "EdDSA" => k.ed.sign(msg).as_ref().to_vec(),
        _ => Vec::new(),
    };
    format!("{signing}.{}", b64(&sig))
}

fn kid_of(alg: &str) -> &'static str {
    match alg {
        "ES256" => "p256",
        "ES384" => "p384",
        "EdDSA" => "ed",
        _ => "rsa",
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims_default() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": ["api", "web"], "azp": "web-app", "exp": now() + 600,
           "groups": ["admins", "users"], "org": {"team": "core"}, "scope": "read write", "admin": true})
}

/// A token signed with `alg` and the kid of its key.
fn token(alg: &str, payload: Value) -> String {
    sign_raw(alg, &json!({"alg": alg, "kid": kid_of(alg), "typ": "JWT"}), &payload)
}

fn spec(yaml: &str) -> RequestAuthenticationSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn inline_spec(extra: &str) -> RequestAuthenticationSpec {
    let jwks = jwks_all().replace('\'', "''");
    spec(&format!("jwtRules:\n- issuer: {ISS}\n  jwks: '{jwks}'\n{extra}"))
}

fn authn(s: &RequestAuthenticationSpec) -> Authenticator {
    let cache = JwksCache::new(JwksCacheConfig::default());
    Authenticator::from_specs([("foo", "jwt", s, Origin::Unknown)], &cache)
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().uri(uri).header("host", "svc.foo:8080");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn check(a: &Authenticator, tok: &str) -> Result<Option<Claims>, AuthnError> {
    let mut p = parts("/x", &[("authorization", &bearer(tok))]);
    a.authenticate(&mut p).await
}

#[tokio::test]
async fn jwt_every_algorithm_verifies() {
    let a = authn(&inline_spec(""));
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"] {
        let c = check(&a, &token(alg, claims_default())).await;
        let c = c.unwrap_or_else(|e| panic!("{alg}: {e}")).unwrap_or_else(|| panic!("{alg}: no claims"));
        assert_eq!(c.principal(), format!("{ISS}/alice"), "{alg}");
    }
}

#[tokio::test]
async fn jwt_tampered_payload_fails() {
    let a = authn(&inline_spec(""));
    let t = token("ES256", claims_default());
    let mut segs: Vec<String> = t.split('.').map(String::from).collect();
    let mut evil = claims_default();
    evil["sub"] = json!("root");
    segs[1] = b64(evil.to_string().as_bytes());
    assert_eq!(check(&a, &segs.join(".")).await.unwrap_err(), AuthnError::BadSignature);
}

#[tokio::test]
async fn jwt_signed_by_other_key_fails() {
    let a = authn(&inline_spec(""));
    let t = sign_raw("RS256-other", &json!({"alg": "RS256", "kid": "rsa"}), &claims_default());
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::BadSignature);
}

#[tokio::test]
async fn jwt_without_kid_tries_keys_of_the_type() {
    let a = authn(&inline_spec(""));
    let t = sign_raw("EdDSA", &json!({"alg": "EdDSA"}), &claims_default());
    assert!(check(&a, &t).await.unwrap().is_some());
}

#[tokio::test]
async fn jwt_expired_and_skew() {
    let a = authn(&inline_spec(""));
    let mut c = claims_default();
    c["exp"] = json!(now() - 120);
    assert_eq!(check(&a, &token("RS256", c.clone())).await.unwrap_err(), AuthnError::Expired);
    c["exp"] = json!(now() - 10);
    assert!(check(&a, &token("RS256", c)).await.is_ok(), "within the 60 s skew");
}

#[tokio::test]
async fn jwt_not_yet_valid() {
    let a = authn(&inline_spec(""));
    let mut c = claims_default();
    c["nbf"] = json!(now() + 600);
    assert_eq!(check(&a, &token("ES256", c.clone())).await.unwrap_err(), AuthnError::NotYetValid);
    c["nbf"] = json!(now() + 20);
    assert!(check(&a, &token("ES256", c)).await.is_ok());
}

#[tokio::test]
async fn jwt_wrong_issuer() {
    let a = authn(&inline_spec(""));
    let mut c = claims_default();
    c["iss"] = json!("https://evil.example");
    assert_eq!(check(&a, &token("RS256", c)).await.unwrap_err(), AuthnError::UnknownIssuer);
}

#[tokio::test]
async fn jwt_audiences() {
    let a = authn(&inline_spec("  audiences: [api]\n"));
    assert!(check(&a, &token("RS256", claims_default())).await.is_ok());
    let mut c = claims_default();
    c["aud"] = json!("other");
    assert_eq!(check(&a, &token("RS256", c.clone())).await.unwrap_err(), AuthnError::AudienceMismatch);
    c.as_object_mut().unwrap().remove("aud");
    assert_eq!(check(&a, &token("RS256", c)).await.unwrap_err(), AuthnError::AudienceMismatch);
    let mut c = claims_default();
    c["aud"] = json!("api");
    assert!(check(&a, &token("RS256", c)).await.is_ok(), "a string aud");
}

#[tokio::test]
async fn jwt_no_audiences_configured_accepts_any() {
    let a = authn(&inline_spec(""));
    let mut c = claims_default();
    c["aud"] = json!("whatever");
    assert!(check(&a, &token("RS256", c)).await.is_ok());
}

#[tokio::test]
async fn jwt_alg_none_refused() {
    let a = authn(&inline_spec(""));
    let t = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(claims_default().to_string().as_bytes()));
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::AlgNone);
    let t = format!("{}.{}.", b64(br#"{"alg":"None"}"#), b64(claims_default().to_string().as_bytes()));
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::AlgNone);
}

#[tokio::test]
async fn jwt_hmac_with_public_key_refused() {
    use aws_lc_rs::hmac;
    let a = authn(&inline_spec(""));
    // The classic confusion: HS256 keyed with the RSA public key the verifier holds.
    let pk = keys().rsa.public_key().as_ref().to_vec();
    let signing = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"rsa"}"#),
        b64(claims_default().to_string().as_bytes())
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &pk), signing.as_bytes());
    let t = format!("{signing}.{}", b64(tag.as_ref()));
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::Hmac);
}

#[tokio::test]
async fn jwt_unsupported_alg_and_crit_refused() {
    let a = authn(&inline_spec(""));
    let t = sign_raw("RS256", &json!({"alg": "RSA-OAEP", "kid": "rsa"}), &claims_default());
    assert!(matches!(check(&a, &t).await.unwrap_err(), AuthnError::UnsupportedAlg(_)));
    let t = sign_raw("RS256", &json!({"alg": "RS256", "kid": "rsa", "crit": ["exp"]}), &claims_default());
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::Critical);
}

#[tokio::test]
async fn jwt_unknown_kid_inline() {
    let a = authn(&inline_spec(""));
    let t = sign_raw("RS256", &json!({"alg": "RS256", "kid": "nope"}), &claims_default());
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::UnknownKid);
}

#[tokio::test]
async fn jwt_wrong_key_type_for_alg() {
    let a = authn(&inline_spec(""));
    // ES256 signature, but the kid names the RSA key.
    let t = sign_raw("ES256", &json!({"alg": "ES256", "kid": "rsa"}), &claims_default());
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::WrongKeyType);
    // ES384 claimed with the P-256 key.
    let t = sign_raw("ES256", &json!({"alg": "ES384", "kid": "p256"}), &claims_default());
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::WrongKeyType);
}

#[tokio::test]
async fn jwt_jwk_alg_pin_respected() {
    let k = keys();
    let mut jwk = rsa_jwk(&k.rsa, "rsa");
    jwk["alg"] = json!("RS256");
    let jwks = json!({"keys": [jwk]}).to_string();
    let a = authn(&spec(&format!("jwtRules:\n- issuer: {ISS}\n  jwks: '{jwks}'\n")));
    assert!(check(&a, &token("RS256", claims_default())).await.is_ok());
    assert_eq!(check(&a, &token("PS256", claims_default())).await.unwrap_err(), AuthnError::WrongKeyType);
}

#[tokio::test]
async fn jwt_garbage_refused() {
    let a = authn(&inline_spec(""));
    for (t, want) in [
        ("abc", AuthnError::Malformed),
        ("a.b", AuthnError::Malformed),
        ("a.b.c.d.e", AuthnError::Malformed),
        ("!!!.e30.AA", AuthnError::BadEncoding),
    ] {
        assert_eq!(check(&a, t).await.unwrap_err(), want, "{t}");
    }
    // Valid base64 but not JSON, then a JSON array payload.
    let t = format!("{}.{}.AA", b64(br#"{"alg":"RS256"}"#), b64(b"not json"));
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::BadEncoding);
    let t = format!("{}.{}.AA", b64(br#"{"alg":"RS256"}"#), b64(b"[1]"));
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::BadEncoding);
    // Padded base64 is not base64url without padding.
    let t = format!("{}=.e30.AA", b64(br#"{"alg":"RS256"}"#));
    assert_eq!(check(&a, &t).await.unwrap_err(), AuthnError::BadEncoding);
}

#[tokio::test]
async fn jwt_bad_time_claim_type_refused() {
    let a = authn(&inline_spec(""));
    let mut c = claims_default();
    c["exp"] = json!("tomorrow");
    assert_eq!(check(&a, &token("RS256", c)).await.unwrap_err(), AuthnError::BadEncoding);
}

#[tokio::test]
async fn jwt_oversize_refused() {
    let a = authn(&inline_spec(""));
    let mut c = claims_default();
    c["pad"] = json!("x".repeat(super::jwt::MAX_TOKEN_LEN));
    assert_eq!(check(&a, &token("ES256", c)).await.unwrap_err(), AuthnError::Oversize);
}

#[tokio::test]
async fn jwt_no_token_passes_without_claims() {
    let a = authn(&inline_spec(""));
    let mut p = parts("/x", &[("authorization", "Basic dXNlcjpwdw==")]);
    assert!(a.authenticate(&mut p).await.unwrap().is_none());
    assert!(p.headers.contains_key("authorization"), "a non-Bearer header is left alone");
    let mut p = parts("/x", &[]);
    assert!(a.authenticate(&mut p).await.unwrap().is_none());
}

#[tokio::test]
async fn jwt_default_locations_strip_token() {
    let a = authn(&inline_spec(""));
    let t = token("RS256", claims_default());
    let mut p = parts("/x", &[("authorization", &bearer(&t))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert!(!p.headers.contains_key("authorization"), "stripped by default");
    let mut p = parts(&format!("/x?a=1&access_token={t}&b=2"), &[]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert_eq!(p.uri.path_and_query().unwrap().as_str(), "/x?a=1&b=2");
}

#[tokio::test]
async fn jwt_bearer_prefix_case_insensitive() {
    let a = authn(&inline_spec(""));
    let t = token("RS256", claims_default());
    let mut p = parts("/x", &[("authorization", &format!("bearer {t}"))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
}

#[tokio::test]
async fn jwt_forward_original_token() {
    let a = authn(&inline_spec("  forwardOriginalToken: true\n"));
    let t = token("RS256", claims_default());
    let mut p = parts("/x", &[("authorization", &bearer(&t))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert_eq!(p.headers["authorization"], bearer(&t).as_str());
}

#[tokio::test]
async fn jwt_from_headers_with_prefix() {
    let a = authn(&inline_spec("  fromHeaders: [{name: X-Jwt-Assertion, prefix: 'Token '}]\n"));
    let t = token("ES384", claims_default());
    let mut p = parts("/x", &[("x-jwt-assertion", &format!("Token {t}"))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert!(!p.headers.contains_key("x-jwt-assertion"));
    // The default Authorization location no longer applies.
    let mut p = parts("/x", &[("authorization", &bearer(&t))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_none());
    // Wrong prefix: no token there.
    let mut p = parts("/x", &[("x-jwt-assertion", &bearer(&t))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_none());
}

#[tokio::test]
async fn jwt_from_headers_without_prefix() {
    let a = authn(&inline_spec("  fromHeaders: [{name: x-token}]\n"));
    let t = token("EdDSA", claims_default());
    let mut p = parts("/x", &[("x-token", &t)]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
}

#[tokio::test]
async fn jwt_from_params() {
    let a = authn(&inline_spec("  fromParams: [my_token]\n"));
    let t = token("RS256", claims_default());
    let mut p = parts(&format!("/x?my_token={t}"), &[]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert_eq!(p.uri.path_and_query().unwrap().as_str(), "/x");
    let mut p = parts(&format!("/x?access_token={t}"), &[]);
    assert!(a.authenticate(&mut p).await.unwrap().is_none(), "default param replaced");
}

#[tokio::test]
async fn jwt_from_cookies() {
    let a = authn(&inline_spec("  fromCookies: [session]\n"));
    let t = token("ES256", claims_default());
    let mut p = parts("/x", &[("cookie", &format!("a=1; session={t}; b=2"))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert_eq!(p.headers["cookie"], "a=1; b=2");
    let mut p = parts("/x", &[("cookie", &format!("session={t}"))]);
    assert!(a.authenticate(&mut p).await.unwrap().is_some());
    assert!(!p.headers.contains_key("cookie"));
}

#[tokio::test]
async fn jwt_invalid_token_in_cookie_is_401() {
    let a = authn(&inline_spec("  fromCookies: [session]\n"));
    let mut p = parts("/x", &[("cookie", "session=garbage")]);
    assert_eq!(a.authenticate(&mut p).await.unwrap_err(), AuthnError::Malformed);
}

#[tokio::test]
async fn jwt_output_payload_and_claims_headers() {
    let a = authn(&inline_spec(
        "  outputPayloadToHeader: x-jwt-payload\n  outputClaimToHeaders: [{header: x-sub, claim: sub}, \
         {header: x-team, claim: org.team}, {header: x-admin, claim: admin}, {header: x-exp, claim: exp}, \
         {header: x-groups, claim: groups}]\n",
    ));
    let c = claims_default();
    let t = token("RS256", c.clone());
    let mut p = parts("/x", &[("authorization", &bearer(&t)), ("x-sub", "forged")]);
    a.authenticate(&mut p).await.unwrap().unwrap();
    let payload = URL_SAFE_NO_PAD.decode(p.headers["x-jwt-payload"].as_bytes()).unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), c);
    assert_eq!(p.headers["x-sub"], "alice");
    assert_eq!(p.headers["x-team"], "core");
    assert_eq!(p.headers["x-admin"], "true");
    assert_eq!(p.headers["x-exp"], c["exp"].to_string().as_str());
    assert!(!p.headers.contains_key("x-groups"), "lists are not copied");
}

#[tokio::test]
async fn jwt_output_headers_cannot_be_forged_without_token() {
    let a = authn(&inline_spec("  outputClaimToHeaders: [{header: x-sub, claim: sub}]\n"));
    let mut p = parts("/x", &[("x-sub", "admin")]);
    assert!(a.authenticate(&mut p).await.unwrap().is_none());
    assert!(!p.headers.contains_key("x-sub"));
}

#[tokio::test]
async fn jwt_two_issuers() {
    let jwks = jwks_all();
    let s = spec(&format!(
        "jwtRules:\n- issuer: https://a.example\n  jwks: '{jwks}'\n- issuer: https://b.example\n  jwks: '{jwks}'\n"
    ));
    let a = authn(&s);
    let mut c = claims_default();
    c["iss"] = json!("https://b.example");
    let got = check(&a, &token("ES256", c)).await.unwrap().unwrap();
    assert_eq!(got.issuer(), "https://b.example");
}

#[tokio::test]
async fn jwt_invalid_inline_jwks_fails_closed() {
    let a = authn(&spec(&format!("jwtRules:\n- issuer: {ISS}\n  jwks: 'not json'\n")));
    assert_eq!(a.diagnostics().len(), 1);
    assert_eq!(check(&a, &token("RS256", claims_default())).await.unwrap_err(), AuthnError::JwksInvalid);
}

#[tokio::test]
async fn jwt_rule_without_issuer_ignored_with_diagnostic() {
    let a = authn(&spec("jwtRules:\n- jwks: '{}'\n"));
    assert!(a.is_empty());
    assert!(a.diagnostics()[0].is_error());
}

#[test]
fn jwt_401_response() {
    let p = parts("/api/x?q=1", &[]);
    let r = AuthnError::Expired.response(&p);
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"http://svc.foo:8080/api/x\", error=\"invalid_token\""
    );
    assert_eq!(r.body().as_ref(), b"Jwt is expired");
}

#[tokio::test]
async fn claims_lookup() {
    let a = authn(&inline_spec("  spaceDelimitedClaims: [roles]\n"));
    let mut c = claims_default();
    c["roles"] = json!("x y");
    let got = check(&a, &token("RS256", c)).await.unwrap().unwrap();
    let has = |path: &[&str], v: &str| {
        let p: Vec<Box<str>> = path.iter().map(|s| Box::from(*s)).collect();
        got.any_claim(&p, &mut |x| x == v)
    };
    assert!(has(&["groups"], "admins") && has(&["groups"], "users") && !has(&["groups"], "root"));
    assert!(has(&["org", "team"], "core") && !has(&["org"], "core"));
    assert!(has(&["scope"], "write") && has(&["roles"], "y"));
    assert!(has(&["admin"], "true") && !has(&["exp"], "1"));
    assert!(!has(&["missing"], "x"));
    assert_eq!(got.audiences().len(), 2);
    assert_eq!(got.presenter(), Some("web-app"));
    assert!(!format!("{got:?}").contains("admins"), "Debug does not print the payload");
}

#[test]
fn jwks_parse_skips_unusable_keys() {
    let k = keys();
    let set = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        ed_jwk(&k.ed, "ed"),
    ]});
    let jwks = Jwks::parse(set.to_string().as_bytes()).unwrap();
    assert_eq!(jwks.keys().len(), 1);
    assert!(jwks.has_kid("ed"));
    assert_eq!(Jwks::parse(br#"{"keys": [{"kty": "oct"}]}"#).unwrap_err(), JwksError::NoKeys);
    assert!(matches!(Jwks::parse(b"{"), Err(JwksError::Json(_))));
}

// ---------------------------------------------------------------- remote JWKS

/// A JWKS server on 127.0.0.1:0 that serves `body` and counts requests.
struct JwksServer {
    uri: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
    status: Arc<Mutex<u16>>,
}

async fn jwks_server(body: String) -> JwksServer {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Arc::new(Mutex::new(body));
    let hits = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(Mutex::new(200u16));
    let (b, h, s) = (body.clone(), hits.clone(), status.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (b, h, s) = (b.clone(), h.clone(), s.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (b, h, s) = (b.clone(), h.clone(), s.clone());
                    async move {
                        assert_eq!(req.uri().path(), "/jwks.json");
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = b.lock().unwrap().clone();
                        let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(*s.lock().unwrap()).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ =
                    http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
            });
        }
    });
    JwksServer { uri: format!("http://{addr}/jwks.json"), body, hits, status }
}

fn remote_spec(uri: &str) -> RequestAuthenticationSpec {
    spec(&format!("jwtRules:\n- issuer: {ISS}\n  jwksUri: {uri}\n"))
}

fn fast_cache() -> JwksCache {
    JwksCache::new(JwksCacheConfig { min_refresh_interval: Duration::ZERO, ..Default::default() })
}

#[tokio::test]
async fn jwks_remote_fetched_and_shared() {
    let srv = jwks_server(jwks_all()).await;
    let cache = fast_cache();
    let s = remote_spec(&srv.uri);
    let a = Authenticator::from_specs([("foo", "jwt", &s, Origin::Unknown)], &cache);
    let b = Authenticator::from_specs([("foo", "jwt", &s, Origin::Unknown)], &cache);
    assert!(check(&a, &token("RS256", claims_default())).await.unwrap().is_some());
    assert!(check(&b, &token("EdDSA", claims_default())).await.unwrap().is_some());
    assert_eq!(cache.len(), 1, "one entry per URI across generations");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn jwks_remote_refreshed_on_unknown_kid() {
    let k = keys();
    let srv = jwks_server(json!({"keys": [rsa_jwk(&k.rsa, "old")]}).to_string()).await;
    let cache = fast_cache();
    let a = Authenticator::from_specs([("foo", "jwt", &remote_spec(&srv.uri), Origin::Unknown)], &cache);
    let old = sign_raw("RS256", &json!({"alg": "RS256", "kid": "old"}), &claims_default());
    assert!(check(&a, &old).await.is_ok());
    // The issuer rotates to a new key.
    *srv.body.lock().unwrap() = json!({"keys": [rsa_jwk(&k.rsa_other, "new")]}).to_string();
    let new = sign_raw("RS256-other", &json!({"alg": "RS256", "kid": "new"}), &claims_default());
    assert!(check(&a, &new).await.unwrap().is_some(), "refetched for the unknown kid");
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    assert_eq!(check(&a, &old).await.unwrap_err(), AuthnError::UnknownKid);
}

#[tokio::test]
async fn jwks_unknown_kid_refresh_rate_limited() {
    let srv = jwks_server(jwks_all()).await;
    let cache = JwksCache::new(JwksCacheConfig::default());
    let a = Authenticator::from_specs([("foo", "jwt", &remote_spec(&srv.uri), Origin::Unknown)], &cache);
    let bad = sign_raw("RS256", &json!({"alg": "RS256", "kid": "made-up"}), &claims_default());
    for _ in 0..5 {
        assert_eq!(check(&a, &bad).await.unwrap_err(), AuthnError::UnknownKid);
    }
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2, "first fetch + one forced refresh");
}

#[tokio::test]
async fn jwks_unavailable_fails_closed() {
    let srv = jwks_server(String::new()).await;
    *srv.status.lock().unwrap() = 500;
    let cache = fast_cache();
    let a = Authenticator::from_specs([("foo", "jwt", &remote_spec(&srv.uri), Origin::Unknown)], &cache);
    assert_eq!(check(&a, &token("RS256", claims_default())).await.unwrap_err(), AuthnError::JwksUnavailable);
    // No token still passes: the policy decides.
    assert!(a.authenticate(&mut parts("/", &[])).await.unwrap().is_none());
}

#[tokio::test]
async fn jwks_unreachable_fails_closed() {
    // A port nobody listens on: bind, note, drop.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/jwks.json", l.local_addr().unwrap());
    drop(l);
    let a = Authenticator::from_specs([("foo", "jwt", &remote_spec(&uri), Origin::Unknown)], &fast_cache());
    assert_eq!(check(&a, &token("ES256", claims_default())).await.unwrap_err(), AuthnError::JwksUnavailable);
}

/// A fetcher without network, for the periodic refresh under paused time.
#[derive(Debug)]
struct FakeFetcher {
    calls: AtomicUsize,
    body: Mutex<Result<String, ()>>,
}

impl JwksFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, _uri: &'a str, _t: Duration) -> BoxFuture<'a, Result<Bytes, FetchError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = match &*self.body.lock().unwrap() {
            Ok(b) => Ok(Bytes::from(b.clone())),
            Err(()) => Err(FetchError::Status(http::StatusCode::BAD_GATEWAY)),
        };
        Box::pin(async move { r })
    }
}

#[tokio::test(start_paused = true)]
async fn jwks_refreshed_periodically_and_keeps_last_good_set() {
    let fetcher = Arc::new(FakeFetcher { calls: AtomicUsize::new(0), body: Mutex::new(Ok(jwks_all())) });
    let cfg = JwksCacheConfig::default();
    let cache = JwksCache::with_fetcher(cfg.clone(), fetcher.clone());
    let entry = cache.get("http://jwks.test/keys");
    assert!(matches!(entry.ready(Duration::from_secs(1)).await, RemoteKeys::Ready(_, 1)));
    tokio::time::sleep(cfg.refresh_interval + Duration::from_secs(1)).await;
    assert!(matches!(entry.current(), RemoteKeys::Ready(_, 2)));
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);
    // The issuer fails: the last good set stays, retries back off.
    *fetcher.body.lock().unwrap() = Err(());
    tokio::time::sleep(cfg.refresh_interval + Duration::from_secs(1)).await;
    assert!(matches!(entry.current(), RemoteKeys::Ready(_, 2)));
    // Failed at 40 min and 40 min + 1 s; the next retries come 2 s and 4 s later.
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 4);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 6, "exponential backoff");
}

#[tokio::test(start_paused = true)]
async fn jwks_entry_dropped_ends_task() {
    let fetcher = Arc::new(FakeFetcher { calls: AtomicUsize::new(0), body: Mutex::new(Ok(jwks_all())) });
    let cache = JwksCache::with_fetcher(JwksCacheConfig::default(), fetcher.clone());
    let entry = cache.get("http://jwks.test/keys");
    entry.ready(Duration::from_secs(1)).await;
    drop(entry);
    assert!(cache.is_empty());
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------- authorization

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: foo, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: foo, labels: {app: server}}
spec:
  serviceAccountName: server
  nodeName: node-a
  containers: [{name: app, image: echo, ports: [{containerPort: 8080}]}]
status: {phase: Running, podIP: 10.0.1.10}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: foo}
spec:
  selector: {app: server}
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: foo}
spec:
  selector: {app: server}
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn model(extra: &str) -> Model {
    let text = format!("{BASE}\n---\n{extra}");
    let mut objects = Vec::new();
    for doc in split_documents(&text) {
        let doc = doc.unwrap();
        match parse_object(doc.value) {
            Parsed::Object { object, .. } => objects.push((object, Origin::Unknown)),
            other => panic!("bad test document: {other:?}"),
        }
    }
    let (model, diags) = translate(&objects, &MeshConfig::default());
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    model
}

fn policy(name: &str, target: &str, spec: &str) -> String {
    let t = match target {
        "service" => "targetRefs: [{kind: Service, group: '', name: server}]",
        "other" => "targetRefs: [{kind: Service, group: '', name: other}]",
        "waypoint" => "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]",
        _ => "selector: {matchLabels: {app: server}}",
    };
    let ns = "foo";
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{{t}, {spec}}}\n"
    )
}

fn waypoint() -> WaypointRef {
    WaypointRef { namespace: "foo".into(), name: "waypoint".into() }
}

fn authorizer(docs: &[String]) -> Authorizer {
    let m = model(&docs.join("---\n"));
    let index = AuthzIndex::new(&m);
    let svc = m.service("foo", "server").unwrap();
    Authorizer::for_service(&index, &m, svc, Some(&waypoint()))
}

struct Req<'a> {
    method: http::Method,
    path: &'a str,
    host: &'a str,
    headers: http::HeaderMap,
    peer: Option<SpiffeId>,
    source_ip: IpAddr,
    remote_ip: Option<IpAddr>,
    port: u16,
    claims: Option<Claims>,
}

fn req<'a>(method: &str, path: &'a str) -> Req<'a> {
    Req {
        method: method.parse().unwrap(),
        path,
        host: "server.foo.svc.cluster.local",
        headers: http::HeaderMap::new(),
        peer: Some("spiffe://cluster.local/ns/bar/sa/client".parse().unwrap()),
        source_ip: "10.0.2.20".parse().unwrap(),
        remote_ip: None,
        port: 80,
        claims: None,
    }
}

impl Req<'_> {
    fn decide(&self, a: &Authorizer) -> mesh_policy::Decision {
        a.authorize(&AuthzAttributes {
            method: &self.method,
            path: self.path,
            host: Some(self.host),
            headers: &self.headers,
            source_ip: self.source_ip,
            remote_ip: self.remote_ip,
            peer: self.peer.as_ref(),
            destination_ip: "10.96.0.10".parse().unwrap(),
            destination_port: self.port,
            claims: self.claims.as_ref(),
        })
    }

    fn allowed(&self, a: &Authorizer) -> bool {
        self.decide(a).allowed
    }

    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.append(k, v.parse().unwrap());
        self
    }
}

#[test]
fn authz_no_policy_allows() {
    let a = authorizer(&[]);
    assert!(a.is_empty());
    let d = req("GET", "/").decide(&a);
    assert!(d.allowed && d.reason == Reason::NoAllowPolicies);
}

#[test]
fn authz_targets_service_and_waypoint_not_selector_or_other_service() {
    let a = authorizer(&[
        policy("svc", "service", "rules: [{}]"),
        policy("wp", "waypoint", "action: AUDIT, rules: [{}]"),
        policy("sel", "selector", "action: DENY, rules: [{}]"),
        policy("oth", "other", "action: DENY, rules: [{}]"),
    ]);
    assert_eq!(a.policies().len(), 2);
    let d = req("GET", "/").decide(&a);
    assert!(d.allowed && d.audit, "{d:?}");
}

#[test]
fn authz_deny_before_allow_and_audit_marks() {
    let a = authorizer(&[
        policy("allow", "service", "rules: [{}]"),
        policy("deny", "service", "action: DENY, rules: [{to: [{operation: {paths: ['/admin*']}}]}]"),
        policy("audit", "waypoint", "action: AUDIT, rules: [{to: [{operation: {methods: [DELETE]}}]}]"),
    ]);
    let d = req("GET", "/admin/x").decide(&a);
    assert!(!d.allowed && d.reason == Reason::DenyMatched && !d.audit);
    assert_eq!(d.policy_name(), Some(("foo", "deny")));
    let d = req("DELETE", "/admin").decide(&a);
    assert!(!d.allowed && d.audit, "audit is evaluated whatever the outcome");
    let d = req("DELETE", "/x").decide(&a);
    assert!(d.allowed && d.audit && d.reason == Reason::AllowMatched);
}

#[test]
fn authz_allow_list_denies_unmatched() {
    let a = authorizer(&[policy("allow", "service", "rules: [{to: [{operation: {methods: [GET]}}]}]")]);
    assert!(req("GET", "/").allowed(&a));
    let d = req("POST", "/").decide(&a);
    assert!(!d.allowed && d.reason == Reason::NoAllowMatched);
}

#[test]
fn authz_custom_denies() {
    let a = authorizer(&[policy("ext", "service", "action: CUSTOM, provider: {name: ext}, rules: [{}]")]);
    assert_eq!(req("GET", "/").decide(&a).reason, Reason::CustomUnavailable);
}

/// Normalises like the proxy, then decides.
fn allowed_at(a: &Authorizer, raw: &str) -> Result<bool, PathError> {
    let p = normalize_path(raw)?;
    Ok(req("GET", &p).allowed(a))
}

#[test]
fn authz_path_bypass_attempts_do_not_bypass_deny() {
    let a = authorizer(&[policy(
        "deny",
        "service",
        "action: DENY, rules: [{to: [{operation: {paths: ['/admin', '/admin/*']}}]}]",
    )]);
    for raw in [
        "/admin",
        "/admin/",
        "/x/../admin",
        "/%2e%2e/admin",
        "//admin",
        "/./admin",
        "/%61dmin/x",
        "/public/%2E%2E/admin/",
        "/admin?x=1",
    ] {
        assert_eq!(allowed_at(&a, raw), Ok(false), "{raw}");
    }
    assert_eq!(allowed_at(&a, "/admin%2Fsecret"), Err(PathError::EscapedSlash));
    assert_eq!(allowed_at(&a, "/admin\\x"), Err(PathError::Backslash));
    assert_eq!(allowed_at(&a, "/adminx"), Ok(true));
    assert_eq!(allowed_at(&a, "/public?next=/admin"), Ok(true), "the query is not the path");
    // Paths are case-sensitive, as in Istio.
    assert_eq!(allowed_at(&a, "/ADMIN"), Ok(true));
}

#[test]
fn authz_path_allow_list_cannot_be_escaped() {
    let a = authorizer(&[policy("allow", "service", "rules: [{to: [{operation: {paths: ['/public/*']}}]}]")]);
    assert_eq!(allowed_at(&a, "/public/a"), Ok(true));
    assert_eq!(allowed_at(&a, "/public/../admin"), Ok(false));
    assert_eq!(allowed_at(&a, "/public/%2e%2e/admin"), Ok(false));
    assert_eq!(allowed_at(&a, "/public/..%2Fadmin"), Err(PathError::EscapedSlash));
}

#[test]
fn authz_path_templates() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{to: [{operation: {paths: ['/users/{*}/profile', '/files/{**}']}}]}]",
    )]);
    assert!(req("GET", "/users/7/profile").allowed(&a));
    assert!(!req("GET", "/users/7/8/profile").allowed(&a));
    assert!(req("GET", "/files/a/b/c").allowed(&a));
    assert!(!req("GET", "/files").allowed(&a));
}

#[test]
fn authz_path_prefix_suffix_and_not_paths() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{to: [{operation: {paths: ['*.png', '/api/*'], notPaths: ['/api/internal*']}}]}]",
    )]);
    assert!(req("GET", "/img/a.png").allowed(&a));
    assert!(req("GET", "/api/v1").allowed(&a));
    assert!(!req("GET", "/api/internal/x").allowed(&a));
    assert!(!req("GET", "/other").allowed(&a));
}

#[test]
fn authz_methods_and_not_methods() {
    let a = authorizer(&[policy(
        "deny",
        "service",
        "action: DENY, rules: [{to: [{operation: {notMethods: [GET, HEAD]}}]}]",
    )]);
    assert!(req("GET", "/").allowed(&a));
    assert!(req("HEAD", "/").allowed(&a));
    assert!(!req("POST", "/").allowed(&a));
}

#[test]
fn authz_hosts_and_not_hosts() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{to: [{operation: {hosts: ['server.foo.svc.cluster.local', 'server.foo*'], notHosts: ['*.evil']}}]}]",
    )]);
    let mut r = req("GET", "/");
    assert!(r.allowed(&a));
    r.host = "SERVER.foo.svc.cluster.local:80";
    assert!(r.allowed(&a), "case and port ignored");
    r.host = "server.foo";
    assert!(r.allowed(&a));
    r.host = "server.foo.evil";
    assert!(!r.allowed(&a));
    r.host = "elsewhere";
    assert!(!r.allowed(&a));
}

#[test]
fn authz_ports_and_not_ports() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{to: [{operation: {ports: ['80', '8080'], notPorts: ['8080']}}]}]",
    )]);
    let mut r = req("GET", "/");
    assert!(r.allowed(&a));
    r.port = 8080;
    assert!(!r.allowed(&a));
    r.port = 9090;
    assert!(!r.allowed(&a));
}

#[test]
fn authz_principals_and_namespaces() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{from: [{source: {principals: ['cluster.local/ns/bar/*'], notNamespaces: [baz]}}]}, {from: [{source: {namespaces: [ops]}}]}]",
    )]);
    let mut r = req("GET", "/");
    assert!(r.allowed(&a));
    r.peer = Some("spiffe://cluster.local/ns/ops/sa/x".parse().unwrap());
    assert!(r.allowed(&a));
    r.peer = Some("spiffe://cluster.local/ns/baz/sa/x".parse().unwrap());
    assert!(!r.allowed(&a));
    r.peer = None;
    assert!(!r.allowed(&a), "no identity matches no principal");
}

#[test]
fn authz_not_principals_deny() {
    let a = authorizer(&[policy(
        "deny",
        "service",
        "action: DENY, rules: [{from: [{source: {notPrincipals: ['cluster.local/ns/bar/sa/client']}}]}]",
    )]);
    let mut r = req("GET", "/");
    assert!(r.allowed(&a));
    r.peer = Some("spiffe://cluster.local/ns/bar/sa/other".parse().unwrap());
    assert!(!r.allowed(&a));
}

#[test]
fn authz_ip_blocks_and_remote_ip_blocks() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{from: [{source: {ipBlocks: [10.0.0.0/16], notIpBlocks: [10.0.3.0/24], remoteIpBlocks: [192.168.0.0/16], notRemoteIpBlocks: [192.168.9.9]}}]}]",
    )]);
    let mut r = req("GET", "/");
    r.remote_ip = Some("192.168.1.1".parse().unwrap());
    assert!(r.allowed(&a));
    r.remote_ip = Some("192.168.9.9".parse().unwrap());
    assert!(!r.allowed(&a));
    r.remote_ip = None;
    assert!(!r.allowed(&a), "remote defaults to the source IP, outside 192.168/16");
    r.remote_ip = Some("192.168.1.1".parse().unwrap());
    r.source_ip = "10.0.3.3".parse().unwrap();
    assert!(!r.allowed(&a));
}

#[test]
fn authz_header_conditions() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{when: [{key: 'request.headers[X-Role]', values: [admin, 'ops-*'], notValues: [ops-banned]}]}]",
    )]);
    assert!(req("GET", "/").header("x-role", "admin").allowed(&a));
    assert!(req("GET", "/").header("x-role", "ops-1").allowed(&a));
    assert!(!req("GET", "/").header("x-role", "ops-banned").allowed(&a));
    assert!(!req("GET", "/").allowed(&a));
    assert!(
        !req("GET", "/").header("x-role", "guest").header("x-role", "admin").allowed(&a),
        "several values are matched joined: 'guest,admin' is not 'admin'"
    );
}

#[test]
fn authz_header_deny_not_evaded_by_duplicates() {
    let a = authorizer(&[policy(
        "deny",
        "service",
        "action: DENY, rules: [{when: [{key: 'request.headers[x-debug]', values: ['*']}]}]",
    )]);
    assert!(!req("GET", "/").header("x-debug", "1").header("x-debug", "2").allowed(&a));
    assert!(req("GET", "/").allowed(&a));
}

#[test]
fn authz_source_and_destination_conditions() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{when: [{key: source.namespace, values: [bar]}, {key: source.principal, values: ['cluster.local/ns/bar/sa/client']}, {key: source.ip, values: [10.0.2.0/24]}, {key: destination.ip, values: [10.96.0.10]}, {key: destination.port, values: ['80']}]}]",
    )]);
    let mut r = req("GET", "/");
    assert!(r.allowed(&a));
    r.port = 81;
    assert!(!r.allowed(&a));
}

#[test]
fn authz_unsupported_condition_fails_closed() {
    let allow = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{when: [{key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: [x]}]}]",
    )]);
    assert!(!req("GET", "/").allowed(&allow), "never matches in ALLOW");
    let deny = authorizer(&[policy(
        "deny",
        "service",
        "action: DENY, rules: [{to: [{operation: {paths: [/x]}}], when: [{key: 'experimental.envoy.filters.network.mysql_proxy[db.table]', values: [x]}]}]",
    )]);
    assert!(!req("GET", "/other").allowed(&deny), "always matches in DENY");
}

#[test]
fn authz_connection_sni_never_set_at_waypoint() {
    let a =
        authorizer(&[policy("allow", "service", "rules: [{when: [{key: connection.sni, values: ['*']}]}]")]);
    assert!(!req("GET", "/").allowed(&a));
}

async fn claims_for(payload: Value) -> Claims {
    let a = authn(&inline_spec(""));
    check(&a, &token("ES256", payload)).await.unwrap().unwrap()
}

#[tokio::test]
async fn authz_request_principals() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        &format!(
            "rules: [{{from: [{{source: {{requestPrincipals: ['{ISS}/*'], notRequestPrincipals: ['{ISS}/mallory']}}}}]}}]"
        ),
    )]);
    let mut r = req("GET", "/");
    assert!(!r.allowed(&a), "no JWT");
    r.claims = Some(claims_for(claims_default()).await);
    assert!(r.allowed(&a));
    let mut c = claims_default();
    c["sub"] = json!("mallory");
    r.claims = Some(claims_for(c).await);
    assert!(!r.allowed(&a));
}

#[tokio::test]
async fn authz_require_any_jwt() {
    let a =
        authorizer(&[policy("allow", "service", "rules: [{from: [{source: {requestPrincipals: ['*']}}]}]")]);
    let mut r = req("GET", "/");
    assert!(!r.allowed(&a));
    r.claims = Some(claims_for(claims_default()).await);
    assert!(r.allowed(&a));
}

#[tokio::test]
async fn authz_request_auth_conditions() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        &format!(
            "rules: [{{when: [{{key: request.auth.principal, values: ['{ISS}/alice']}}, {{key: request.auth.audiences, values: [api]}}, {{key: request.auth.presenter, values: [web-app]}}, {{key: 'request.auth.claims[groups]', values: [admins]}}, {{key: 'request.auth.claims[org][team]', values: [core]}}, {{key: 'request.auth.claims[scope]', values: [write]}}]}}]"
        ),
    )]);
    let mut r = req("GET", "/");
    r.claims = Some(claims_for(claims_default()).await);
    assert!(r.allowed(&a));
    let mut c = claims_default();
    c["org"]["team"] = json!("edge");
    r.claims = Some(claims_for(c).await);
    assert!(!r.allowed(&a));
    let mut c = claims_default();
    c["aud"] = json!(["web"]);
    r.claims = Some(claims_for(c).await);
    assert!(!r.allowed(&a));
}

#[tokio::test]
async fn authz_many_audiences_spill() {
    let a = authorizer(&[policy(
        "allow",
        "service",
        "rules: [{when: [{key: request.auth.audiences, values: [a11]}]}]",
    )]);
    let mut c = claims_default();
    c["aud"] = json!((0..12).map(|i| format!("a{i}")).collect::<Vec<_>>());
    let mut r = req("GET", "/");
    r.claims = Some(claims_for(c).await);
    assert!(r.allowed(&a));
}

#[test]
fn authz_denied_response() {
    let r = denied_response();
    assert_eq!(r.status(), 403);
    assert_eq!(r.body().as_ref(), b"RBAC: access denied");
}

#[tokio::test]
async fn authenticator_for_service_selects_targeted() {
    let jwks = jwks_all().replace('\'', "''");
    let ra = |name: &str, target: &str, iss: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: foo}}\n\
             spec:\n  {target}\n  jwtRules: [{{issuer: '{iss}', jwks: '{jwks}'}}]\n"
        )
    };
    let m = model(
        &[
            ra("svc", "targetRefs: [{kind: Service, group: '', name: server}]", "https://svc"),
            ra(
                "wp",
                "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]",
                "https://wp",
            ),
            ra("sel", "selector: {matchLabels: {app: server}}", "https://sel"),
            ra("oth", "targetRefs: [{kind: Service, group: '', name: other}]", "https://oth"),
        ]
        .join("---\n"),
    );
    let cache = JwksCache::new(JwksCacheConfig::default());
    let sec = ServiceSecurity::build(
        &m,
        &AuthzIndex::new(&m),
        &cache,
        m.service("foo", "server").unwrap(),
        Some(&waypoint()),
    );
    for (iss, ok) in
        [("https://svc", true), ("https://wp", true), ("https://sel", false), ("https://oth", false)]
    {
        let mut c = claims_default();
        c["iss"] = json!(iss);
        let r = check(&sec.authn, &token("RS256", c)).await;
        assert_eq!(r.is_ok(), ok, "{iss}: {r:?}");
    }
}

#[test]
fn request_host_prefers_authority() {
    let p = parts("http://a.example:81/x", &[]);
    assert_eq!(request_host(&p), Some("a.example:81"));
    let p = parts("/x", &[]);
    assert_eq!(request_host(&p), Some("svc.foo:8080"));
}

#[tokio::test]
async fn security_table_covers_services_of_the_waypoint() {
    let m =
        model(&policy("deny", "service", "action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]"));
    let table = SecurityTable::build(&m, &JwksCache::default(), &waypoint());
    assert_eq!(table.len(), 2, "server and other use the namespace's waypoint");
    assert_eq!(table.generation(), m.generation());
    let server = table.get("foo", "server").unwrap();
    assert!(!req("POST", "/").allowed(&server.authz));
    assert!(req("POST", "/").allowed(&table.get("foo", "other").unwrap().authz));
    assert!(table.get("foo", "nope").is_none());
    let other_wp = WaypointRef { namespace: "foo".into(), name: "elsewhere".into() };
    assert!(SecurityTable::build(&m, &JwksCache::default(), &other_wp).is_empty());
}

fn conn<'a>(peer: &'a SpiffeId) -> ConnInfo<'a> {
    ConnInfo {
        source_ip: "10.0.2.20".parse().unwrap(),
        remote_ip: None,
        peer: Some(peer),
        destination_ip: "10.96.0.10".parse().unwrap(),
        destination_port: 80,
    }
}

fn security(docs: &[String], jwt: Option<RequestAuthenticationSpec>) -> ServiceSecurity {
    let m = model(&docs.join("---\n"));
    let index = AuthzIndex::new(&m);
    let svc = m.service("foo", "server").unwrap();
    let authn = match jwt {
        Some(s) => authn(&s),
        None => Authenticator::default(),
    };
    ServiceSecurity {
        authn: Arc::new(authn),
        authz: Arc::new(Authorizer::for_service(&index, &m, svc, Some(&waypoint()))),
    }
}

#[tokio::test]
async fn check_rewrites_path_then_denies() {
    let sec = security(
        &[policy("deny", "service", "action: DENY, rules: [{to: [{operation: {paths: ['/admin*']}}]}]")],
        None,
    );
    let peer: SpiffeId = "spiffe://cluster.local/ns/bar/sa/client".parse().unwrap();
    let mut p = parts("/public/..//admin?x=1", &[]);
    let r = sec.check(&mut p, &conn(&peer)).await.unwrap_err();
    assert_eq!(r.status(), 403);
    assert_eq!(r.details(), "rbac_access_denied_matched_policy");
    assert_eq!(r.response(&p).body().as_ref(), b"RBAC: access denied");
    assert_eq!(p.uri.path_and_query().unwrap().as_str(), "/admin?x=1");
    let mut p = parts("/public/./a", &[]);
    sec.check(&mut p, &conn(&peer)).await.unwrap();
    assert_eq!(p.uri.path(), "/public/a", "upstream gets the normalised path");
}

#[tokio::test]
async fn check_bad_path_is_400() {
    let sec = security(&[], None);
    let peer: SpiffeId = "spiffe://cluster.local/ns/bar/sa/client".parse().unwrap();
    let mut p = parts("/a%2Fb", &[]);
    let r = sec.check(&mut p, &conn(&peer)).await.unwrap_err();
    assert_eq!(r.status(), 400);
    assert_eq!(r.response(&p).status(), 400);
}

#[tokio::test]
async fn check_jwt_then_policy() {
    let sec = security(
        &[policy("allow", "service", "rules: [{from: [{source: {requestPrincipals: ['*']}}]}]")],
        Some(inline_spec("")),
    );
    let peer: SpiffeId = "spiffe://cluster.local/ns/bar/sa/client".parse().unwrap();
    // No token: authentication passes, the policy denies.
    let mut p = parts("/", &[]);
    assert_eq!(sec.check(&mut p, &conn(&peer)).await.unwrap_err().status(), 403);
    // A bad token: 401 before authorization.
    let mut p = parts("/", &[("authorization", "Bearer x.y.z")]);
    let r = sec.check(&mut p, &conn(&peer)).await.unwrap_err();
    assert_eq!(r.status(), 401);
    assert!(r.response(&p).headers().contains_key("www-authenticate"));
    // A good one: allowed, token stripped, claims handed back.
    let mut p = parts("/", &[("authorization", &bearer(&token("EdDSA", claims_default())))]);
    let ok = sec.check(&mut p, &conn(&peer)).await.unwrap();
    assert_eq!(ok.claims.unwrap().subject(), Some("alice"));
    assert_eq!(ok.decision.reason, Reason::AllowMatched);
    assert!(!p.headers.contains_key("authorization"));
}

#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let sec = security(&[], Some(inline_spec("")));
    let peer: SpiffeId = "spiffe://cluster.local/ns/bar/sa/client".parse().unwrap();
    let mut p = parts("/", &[]);
    let mut q = parts("/", &[]);
    let c = conn(&peer);
    send(&sec.check(&mut p, &c));
    send(&sec.authn.authenticate(&mut q));
}

#[test]
fn authz_gateway_class_policy_from_root_applies() {
    let m = model(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: all-waypoints, namespace: istio-system}\n\
         spec: {targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}], action: DENY, \
         rules: [{to: [{operation: {methods: [TRACE]}}]}]}\n",
    );
    let index = AuthzIndex::new(&m);
    let a = Authorizer::for_service(&index, &m, m.service("foo", "server").unwrap(), Some(&waypoint()));
    assert_eq!(a.policies().len(), 1);
    assert!(!req("TRACE", "/").allowed(&a));
    assert!(req("GET", "/").allowed(&a));
}

#[test]
fn authz_policy_targeting_service_and_waypoint_counts_once() {
    let a = authorizer(&[policy(
        "both",
        "service",
        "targetRefs: [{kind: Service, group: '', name: server}, {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}], rules: [{}]",
    )
    .replace("targetRefs: [{kind: Service, group: '', name: server}], ", "")]);
    assert_eq!(a.policies().len(), 1);
}
