//! JWT validation at the waypoint: arbitrary bytes as the bearer token against a rule with an
//! inline RSA JWKS. Never panics, never accepts: no input here carries a valid signature,
//! so `Ok(Some(_))` would be a forged token accepted.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mesh_api::Origin;
use mesh_api::istio::security::RequestAuthenticationSpec;
use waypoint::security::{Authenticator, JwksCache, JwksCacheConfig};

const SPEC: &str = r#"
jwtRules:
- issuer: https://issuer.example
  audiences: [shop]
  jwks: '{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","e":"AQAB","n":"o_31-dM429qVfm6way-33dqQn5SO-06yRHsB1Df1Tglukijr93r_ZftEy5WnIcp2teWS1NjqzsggcDofqhknWCyMi4hkLh-eB4R1G2vitEGzHZ15k45ADy5Fa-T2tJlnLDwdOHOEaj1eKvRLvxR1bK26pyJuK-5-7wy2AsMC0zfEGw-TgSGPMk52hNheYMuN04dE2DnVI5htf8CfcBvs-z9wGKDSfm4tuyAAdvb_-HnS4Dm5lxo-vu1iHl29-GNkPZ5-S_-CRJxe4eRP6PPj77Mqv-l-HyuJjPKu0xyNac3M3SJLM7D6EAMoOZbgUGV96_RW5w4cbkwVqS1n6Sg6wQ"}]}'
"#;

fn state() -> &'static (tokio::runtime::Runtime, Authenticator) {
    static S: OnceLock<(tokio::runtime::Runtime, Authenticator)> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let spec: RequestAuthenticationSpec = serde_yaml::from_str(SPEC).unwrap();
        let spec: &'static RequestAuthenticationSpec = Box::leak(Box::new(spec));
        let auth = rt.block_on(async {
            let cache = JwksCache::new(JwksCacheConfig::default());
            Authenticator::from_specs([("fuzz", "jwt", spec, Origin::Unknown)], &cache)
        });
        assert!(auth.diagnostics().is_empty(), "{:?}", auth.diagnostics());
        (rt, auth)
    })
}

fuzz_target!(|data: &[u8]| {
    let (rt, auth) = state();
    let token = String::from_utf8_lossy(data);
    // The default location: `Authorization: Bearer <token>`.
    let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) else { return };
    let req = http::Request::builder().uri("/x").header("authorization", v);
    let Ok(req) = req.body(()) else { return };
    let (mut parts, ()) = req.into_parts();
    let r = rt.block_on(auth.authenticate(&mut parts));
    assert!(!matches!(r, Ok(Some(_))), "accepted a token no key signed: {token:?}");
});
