//! Secrets at rest that the server must read back (an org's model-provider API key): sealed with
//! ChaCha20-Poly1305 (an authenticated cipher) under the server's master key.
//!
//! The master key comes from `ENCLAVE_MASTER_KEY` (64 hex characters or base64 of 32 bytes), or
//! from the file of `--master-key-file`; without either, `data/master.key` is generated on first
//! start (mode 0600) and read on later starts. Losing it makes sealed keys unreadable (they must
//! be set again); it is never logged.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::{Error, Result};

/// Name of the generated master key file in the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where the master key came from (for the start-up log line; never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeySource {
    Environment,
    File,
    Generated,
    Stored,
}

/// The master key. `Debug` never shows it.
pub struct MasterKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// A sealed secret: a random 96-bit nonce and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn parse_key(text: &str) -> Result<[u8; 32]> {
    let t = text.trim();
    let bytes = if t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|_| Error::invalid("master key: bad hex"))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| {
                Error::invalid("master key must be 64 hex characters or base64 of 32 bytes")
            })?
    };
    bytes
        .try_into()
        .map_err(|_| Error::invalid("master key must be exactly 32 bytes (64 hex characters)"))
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
        }
    }

    /// Parses a key given as 64 hex characters or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<MasterKey> {
        Ok(Self::from_bytes(parse_key(text)?))
    }

    /// Loads the master key: `env` (the value of `ENCLAVE_MASTER_KEY`), else `file`, else the
    /// data directory's `master.key`, generated (0600) when missing.
    pub fn load(
        env: Option<&str>,
        file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(MasterKey, MasterKeySource)> {
        if let Some(text) = env {
            return Ok((Self::parse(text)?, MasterKeySource::Environment));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Error::invalid(format!(
                    "cannot read master key file {}: {e}",
                    path.display()
                ))
            })?;
            return Ok((Self::parse(&text)?, MasterKeySource::File));
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((Self::parse(&text)?, MasterKeySource::Stored)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes: [u8; 32] = {
                    use rand::RngCore;
                    let mut b = [0u8; 32];
                    rand::rng().fill_bytes(&mut b);
                    b
                };
                write_private(&path, &hex::encode(bytes))?;
                Ok((Self::from_bytes(bytes), MasterKeySource::Generated))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Seals `plain`, binding it to `context` (associated data, e.g. the org id).
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> Result<Sealed> {
        let nonce: [u8; 12] = {
            use rand::RngCore;
            let mut n = [0u8; 12];
            rand::rng().fill_bytes(&mut n);
            n
        };
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .map_err(|_| Error::internal("sealing failed"))?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed secret; fails when the key, the context or the bytes differ.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>> {
        if sealed.nonce.len() != 12 {
            return Err(Error::internal("sealed secret has a bad nonce"));
        }
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| {
                Error::internal(
                    "a sealed secret does not open with this master key (was the master key changed?)",
                )
            })
    }
}

/// Writes a new file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// `bytes` random bytes as lowercase hex (secrets, key ids).
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_opens_only_with_the_same_key_and_context() {
        let k = MasterKey::from_bytes([7; 32]);
        let s = k.seal(b"sk-secret", b"org-a").expect("seal");
        assert_eq!(k.open(&s, b"org-a").expect("open"), b"sk-secret");
        assert!(k.open(&s, b"org-b").is_err(), "bound to its org");
        assert!(MasterKey::from_bytes([8; 32]).open(&s, b"org-a").is_err());
        let mut tampered = s.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(k.open(&tampered, b"org-a").is_err());
        assert!(!s.ciphertext.windows(9).any(|w| w == b"sk-secret"));
    }

    #[test]
    fn generated_key_is_private_and_stable() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, src) = MasterKey::load(None, None, tmp.path()).expect("gen");
        assert_eq!(src, MasterKeySource::Generated);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(tmp.path().join(MASTER_KEY_FILE))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (b, src) = MasterKey::load(None, None, tmp.path()).expect("load");
        assert_eq!(src, MasterKeySource::Stored);
        let s = a.seal(b"x", b"c").expect("seal");
        assert_eq!(b.open(&s, b"c").expect("open"), b"x");
    }

    #[test]
    fn parses_hex_and_base64_and_refuses_short_keys() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(MasterKey::parse(&b64).is_ok());
        assert!(MasterKey::parse("short").is_err());
        assert!(MasterKey::parse(&"ab".repeat(16)).is_err());
    }
}
