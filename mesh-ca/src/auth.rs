//! Who is calling: a node by bearer token (from the node tokens file) or by its node
//! certificate. Tokens are compared in constant time, and every entry is compared.

use std::path::{Path, PathBuf};

/// The node tokens file is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {}", problems.join("; "))]
    Invalid { path: String, problems: Vec<String> },
}

/// `<node-name> <token>` lines; blank lines and `#` comments ignored. Re-read at each use so
/// tokens can be rotated without a restart.
#[derive(Debug, Clone)]
pub struct NodeTokens {
    path: PathBuf,
}

/// Compares without an early exit, so timing does not reveal how much of a token matched.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

impl NodeTokens {
    /// Checks the file once now so a bad file stops the start.
    pub fn open(path: &Path) -> Result<Self, TokenFileError> {
        let t = NodeTokens { path: path.to_path_buf() };
        t.entries()?;
        Ok(t)
    }

    /// Parses the file; all problems are reported at once with their line numbers.
    pub fn entries(&self) -> Result<Vec<(String, String)>, TokenFileError> {
        let path = self.path.display().to_string();
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| TokenFileError::Read { path: path.clone(), reason: e.to_string() })?;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(node), Some(token), None) => {
                    if out.iter().any(|(n, _)| n == node) {
                        problems.push(format!("line {}: node {node:?} appears twice", i + 1));
                    } else if token.len() < 16 {
                        problems.push(format!(
                            "line {}: token of node {node:?} is shorter than 16 characters",
                            i + 1
                        ));
                    } else {
                        out.push((node.to_string(), token.to_string()));
                    }
                }
                _ => problems.push(format!("line {}: expected `<node-name> <token>`", i + 1)),
            }
        }
        if problems.is_empty() { Ok(out) } else { Err(TokenFileError::Invalid { path, problems }) }
    }

    /// The node whose token this is, if any.
    pub fn node_for(&self, presented: &str) -> Result<Option<String>, TokenFileError> {
        let mut found = None;
        for (node, token) in self.entries()? {
            if ct_eq(token.as_bytes(), presented.as_bytes()) {
                found = Some(node);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(!ct_eq(b"", b"a"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        std::fs::write(&p, "# nodes\nnode-a 0123456789abcdef0\n\nnode-b fedcba98765432100\n").unwrap();
        let t = NodeTokens::open(&p).unwrap();
        assert_eq!(t.node_for("fedcba98765432100").unwrap().as_deref(), Some("node-b"));
        assert_eq!(t.node_for("nope").unwrap(), None);
        std::fs::write(&p, "node-a short\nnode-a 0123456789abcdef0 x\n").unwrap();
        let e = t.entries().unwrap_err().to_string();
        assert!(e.contains("line 1: token of node \"node-a\" is shorter"), "{e}");
        assert!(e.contains("line 2: expected"), "{e}");
    }
}
