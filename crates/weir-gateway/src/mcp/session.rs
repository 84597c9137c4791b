//! Session ids Weir hands to MCP clients: self-contained and sealed, so any replica that holds
//! the route's key can continue a session and a restarted gateway loses none. The id carries
//! the client's protocol version and the upstream session of every server behind the route,
//! encrypted and authenticated (ChaCha20-Poly1305, a random nonce per id).

use std::collections::BTreeMap;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// What a session id stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The protocol version the client and Weir agreed on.
    #[serde(rename = "v")]
    pub version: String,
    /// Server name to the session id that server gave Weir for this client.
    #[serde(rename = "u", default)]
    pub upstream: BTreeMap<String, String>,
}

/// Seals and opens session ids with one route's key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    /// A sealer keyed by `secret` (hashed to 256 bits), or by a random key of this process.
    pub fn new(secret: Option<&str>) -> Self {
        let bytes: [u8; 32] = match secret {
            Some(s) => {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
                d.as_ref().try_into().unwrap_or([0; 32])
            }
            None => random(),
        };
        // A 32-byte key always makes a ChaCha20-Poly1305 key.
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes).map(LessSafeKey::new);
        Self { key: key.unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key")) }
    }

    /// The id for `s`: nonce and ciphertext, base64url.
    pub fn seal(&self, s: &Session) -> String {
        let nonce: [u8; NONCE_LEN] = random();
        let mut data = serde_json::to_vec(s).unwrap_or_default();
        if self.key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data).is_err() {
            data.clear();
        }
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// What `id` stands for, if this key sealed it and nobody changed it.
    pub fn open(&self, id: &str) -> Option<Session> {
        let mut raw = URL_SAFE_NO_PAD.decode(id.trim()).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let mut data = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).ok()?;
        let plain = self.key.open_in_place(nonce, Aad::empty(), &mut data).ok()?;
        serde_json::from_slice(plain).ok()
    }
}

pub(super) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // The system's generator failing is not something a session id can recover from;
        // fall back to a weaker source rather than to zeros.
        b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_opens_with_the_same_key_only() {
        let s = Session {
            version: "2025-11-25".into(),
            upstream: [("math".to_owned(), "abc".to_owned())].into_iter().collect(),
        };
        let a = Sealer::new(Some("0123456789abcdef0123456789abcdef"));
        let id = a.seal(&s);
        assert_eq!(a.open(&id), Some(s.clone()));
        assert_eq!(Sealer::new(Some("0123456789abcdef0123456789abcdef")).open(&id), Some(s.clone()));
        assert_eq!(Sealer::new(Some("another key, another fleet......")).open(&id), None);
        assert_ne!(a.seal(&s), id, "a fresh nonce each time");
        let mut bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(a.open(&URL_SAFE_NO_PAD.encode(bytes)), None, "tampering is detected");
        assert_eq!(a.open("not base64 !"), None);
    }
}
