//! The environment marker that tells a re-executed binary it is a child.
//!
//! It is not a door (DESIGN.md, mechanism 2): it names the parent pid, the
//! channel descriptor and a random token that the parent also sends through
//! the channel. A child refuses to run anything unless all three match, and
//! a marker inherited by a grandchild (whose parent differs) is ignored.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::fd::RawFd;

/// The environment variable carrying the marker.
pub(crate) const MARKER_VAR: &str = "BOMBSQUAD_CHILD";

pub(crate) const TOKEN_LEN: usize = 16;

/// The most descriptors that come with the token: a call's reply
/// descriptor and progress pipe, or a worker's arena and its two pipes.
pub(crate) const MAX_TOKEN_FDS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marker {
    pub(crate) parent_pid: i32,
    pub(crate) fd: RawFd,
    /// The nesting depth the child runs at (1 for a top-level call).
    pub(crate) depth: u32,
    pub(crate) token: [u8; TOKEN_LEN],
}

impl Marker {
    /// `v1:<ppid>:<fd>:<depth>:<token as hex>`.
    pub(crate) fn encode(&self) -> String {
        let mut out = format!("v1:{}:{}:{}:", self.parent_pid, self.fd, self.depth);
        for byte in self.token {
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    pub(crate) fn parse(raw: &OsStr) -> Result<Self, String> {
        let raw = raw.to_str().ok_or("the marker is not UTF-8")?;
        let fields: Vec<&str> = raw.split(':').collect();
        let [version, ppid, fd, depth, token] = fields[..] else {
            return Err(format!("expected 5 fields, found {}", fields.len()));
        };
        if version != "v1" {
            return Err(format!("unknown marker version {version:?}"));
        }
        Ok(Self {
            parent_pid: ppid.parse().map_err(|_| "bad parent pid")?,
            fd: fd.parse().map_err(|_| "bad descriptor")?,
            depth: depth.parse().map_err(|_| "bad depth")?,
            token: parse_token(token).ok_or("bad token")?,
        })
    }
}

fn parse_token(hex: &str) -> Option<[u8; TOKEN_LEN]> {
    if hex.len() != TOKEN_LEN * 2 || !hex.is_ascii() {
        return None;
    }
    let mut token = [0; TOKEN_LEN];
    for (i, byte) in token.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(token)
}

/// A fresh random token.
fn new_token() -> std::io::Result<[u8; TOKEN_LEN]> {
    let mut token = [0; TOKEN_LEN];
    getrandom::fill(&mut token).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(token)
}

impl Marker {
    /// A marker naming this process as the parent, the channel as stdin
    /// (fd 0), `depth`, and a fresh random token.
    ///
    /// # Errors
    ///
    /// The OS could not provide randomness.
    pub(crate) fn for_new_child(depth: u32) -> std::io::Result<Self> {
        Ok(Self {
            parent_pid: std::process::id().cast_signed(),
            fd: 0,
            depth,
            token: new_token()?,
        })
    }
}

/// Compares tokens in constant time.
pub(crate) fn tokens_match(a: &[u8; TOKEN_LEN], b: &[u8; TOKEN_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let marker = Marker {
            parent_pid: 4242,
            fd: 0,
            depth: 2,
            token: *b"0123456789abcdef",
        };
        let encoded = marker.encode();
        assert_eq!(Marker::parse(OsStr::new(&encoded)).unwrap(), marker);
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        assert_eq!(
            Marker::parse(OsStr::new("garbage")).unwrap_err(),
            "expected 5 fields, found 1"
        );
        assert_eq!(
            Marker::parse(OsStr::new("v1:1:0:1:zz")).unwrap_err(),
            "bad token"
        );
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match(&[7; 16], &[7; 16]));
        assert!(!tokens_match(&[7; 16], &[8; 16]));
    }
}
