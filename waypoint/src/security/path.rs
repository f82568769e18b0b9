//! Path normalisation: the one form of a request path that authorization matches and that is
//! forwarded upstream, so a rule on `/admin` cannot be bypassed by spelling `/admin`
//! differently (`/x/../admin`, `/%61dmin`, `//admin`, `/./admin`).
//!
//! What Envoy does for Istio's `MERGE_SLASHES` path normalisation (`normalize_path: true`,
//! `merge_slashes: true`) plus `path_with_escaped_slashes_action: REJECT_REQUEST`:
//!
//! 1. Percent-encoded **unreserved** characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are
//!    decoded (`%61` → `a`, `%2e` → `.`); every other escape is kept, with upper-case hex
//!    (`%3f` → `%3F`, RFC 3986 §6.2.2.1).
//! 2. Escaped slashes and backslashes (`%2F`, `%5C`, any case) are **refused**: decoding them
//!    would change the segments, not decoding them lets a backend that decodes see another
//!    path than the one authorized. Envoy's default under Istio keeps them unchanged; refusing
//!    is the strict choice a policy can rely on.
//! 3. A raw backslash is **refused**: some servers treat it as a separator (Envoy, through
//!    Chromium's URL canonicaliser, turns it into `/`; rewriting it would forward a different
//!    path than the client sent to an unknown backend, so we refuse instead).
//! 4. NUL (raw or `%00`), other raw control characters, `#` and malformed escapes (`%zz`,
//!    a trailing `%`) are refused.
//! 5. Repeated slashes are merged and `.`/`..` segments removed (RFC 3986 §5.2.4
//!    remove_dot_segments; `..` above the root stays at the root). Decoding comes first, so
//!    `/%2e%2e/admin` is `/admin`.
//!
//! Paths stay case-sensitive (`/ADMIN` is not `/admin`), as in Istio: a DENY rule for
//! `/admin` does not cover `/ADMIN`, and a backend that folds case needs an ALLOW-list
//! policy. The query (after the first `?`) is kept byte for byte and is not matched by
//! `paths`. A refused path is answered `400 Bad Request`.

use std::borrow::Cow;

/// Why a path was refused (the request is answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F` or `%5C`: an escaped separator.
    #[error("escaped slash or backslash in path")]
    EscapedSlash,
    /// A raw `\`.
    #[error("backslash in path")]
    Backslash,
    /// NUL, raw or `%00`.
    #[error("NUL in path")]
    Nul,
    /// A raw control character, space, DEL or `#`.
    #[error("invalid character in path")]
    InvalidChar,
    /// `%` not followed by two hex digits.
    #[error("malformed percent-encoding in path")]
    BadEscape,
    /// Neither `/...` nor `*`.
    #[error("path is not absolute")]
    NotAbsolute,
}

impl PathError {
    /// The status the request is answered with.
    pub fn status(self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises `raw_path` (the request target's path and query as received, origin form).
/// Returns the input unchanged (borrowed, no allocation) when it is already normal.
pub fn normalize_path(raw_path: &str) -> Result<Cow<'_, str>, PathError> {
    if raw_path == "*" {
        return Ok(Cow::Borrowed(raw_path));
    }
    let (path, query) = match raw_path.find('?') {
        Some(i) => raw_path.split_at(i),
        None => (raw_path, ""),
    };
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if !scan(path)? {
        return Ok(Cow::Borrowed(raw_path));
    }
    let decoded = decode(path)?;
    let mut out = String::with_capacity(raw_path.len());
    remove_dot_segments(&decoded, &mut out);
    out.push_str(query);
    if out == raw_path {
        return Ok(Cow::Borrowed(raw_path));
    }
    Ok(Cow::Owned(out))
}

/// Validates raw characters; returns whether the path may need rewriting (an escape, an
/// empty segment or a dot segment).
fn scan(path: &str) -> Result<bool, PathError> {
    let b = path.as_bytes();
    let mut work = false;
    for (i, &c) in b.iter().enumerate() {
        match c {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b'#' | b' ' | 0x7f => return Err(PathError::InvalidChar),
            c if c < 0x20 => return Err(PathError::InvalidChar),
            b'%' => work = true,
            b'/' => {
                // `//`, `/./`, `/../`, `/.` and `/..` at the end.
                let rest = &b[i + 1..];
                let seg_end = rest.iter().position(|&x| x == b'/').unwrap_or(rest.len());
                let seg = &rest[..seg_end];
                if (seg.is_empty() && seg_end < rest.len()) || seg == b"." || seg == b".." {
                    work = true;
                }
            }
            _ => {}
        }
    }
    Ok(work)
}

/// Decodes escaped unreserved characters, upper-cases the hex of the others, refuses the
/// dangerous ones.
fn decode(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex))
        else {
            return Err(PathError::BadEscape);
        };
        let v = h << 4 | l;
        match v {
            b'/' | b'\\' => return Err(PathError::EscapedSlash),
            0 => return Err(PathError::Nul),
            v if is_unreserved(v) => out.push(v),
            _ => {
                out.push(b'%');
                out.push(b[i + 1].to_ascii_uppercase());
                out.push(b[i + 2].to_ascii_uppercase());
            }
        }
        i += 3;
    }
    // Only ASCII bytes were produced from escapes; the rest is the input's UTF-8.
    String::from_utf8(out).map_err(|_| PathError::InvalidChar)
}

/// RFC 3986 §5.2.4 on an absolute path, with empty segments dropped (merge slashes). A
/// trailing `/`, `/.` or `/..` leaves a trailing slash.
fn remove_dot_segments(path: &str, out: &mut String) {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path[1..].split('/') {
        trailing = true;
        match seg {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            s => {
                stack.push(s);
                trailing = false;
            }
        }
    }
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if trailing || stack.is_empty() {
        out.push('/');
    }
}
