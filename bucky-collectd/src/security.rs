//! collectd's Sign and Encrypt modes, a layer in front of the decoder: which packets a
//! security level accepts, signature checks (HMAC-SHA256, compared in constant time),
//! decryption (AES-256-OFB with the SHA-1 check), and the auth file of users and passwords,
//! re-read when it changes.
//!
//! Only the first part of a packet decides its level: 0x0200 signed, 0x0210 encrypted,
//! anything else plain. A packet below the configured level is refused. At level 0 a signed
//! packet's signature part is skipped unverified (as collectd and the original do), and an
//! encrypted packet is decrypted when its user is known.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use thiserror::Error;

use bucky_proto::config::Value;

use crate::packet::part;

/// What a receiver requires of packets (`collectd_security_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    /// Plain, signed and encrypted packets are all accepted.
    #[default]
    None = 0,
    /// Signed or encrypted packets only.
    Sign = 1,
    /// Encrypted packets only.
    Encrypt = 2,
}

impl Level {
    /// Reads `0`/`1`/`2`, `none`/`sign`/`encrypt` (any case, also as strings `"0"`, `"1"`,
    /// `"2"`). Anything else is an error: the original silently fell back to level 0 for
    /// a misspelt level, which turns security off.
    pub fn parse(text: &str) -> Option<Level> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "0" | "none" => Level::None,
            "1" | "sign" => Level::Sign,
            "2" | "encrypt" => Level::Encrypt,
            _ => return None,
        })
    }

    /// The config file's value: an integer or a string as for [`Level::parse`].
    pub fn from_value(v: &Value) -> Option<Level> {
        match v {
            Value::Int(i) => Level::parse(&i.to_string()),
            Value::Str(s) => Level::parse(s),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Sign => "Sign",
            Level::Encrypt => "Encrypt",
        }
    }
}

/// One user's keys, derived once when the auth file is read.
#[derive(Clone)]
struct Credentials {
    /// HMAC-SHA256 keyed with the password, cloned for each packet.
    mac: Hmac<Sha256>,
    /// AES-256 keyed with SHA-256(password), key schedule done once.
    aes: aes::Aes256,
}

/// The users and passwords of an auth file.
#[derive(Clone, Default)]
pub struct Users {
    map: HashMap<Vec<u8>, Credentials>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        let mut names: Vec<String> = self
            .map
            .keys()
            .map(|u| String::from_utf8_lossy(u).into_owned())
            .collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

/// Why an auth file could not be used.
#[derive(Debug, Error)]
pub enum AuthError {
    #[error("auth file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("auth file {origin}: line {line}: expected 'user: password', found no ':'")]
    NoColon { origin: String, line: usize },
}

impl Users {
    pub fn new() -> Users {
        Users::default()
    }

    /// Adds or replaces a user.
    pub fn insert(&mut self, user: &str, password: &str) {
        let Ok(mac) = <Hmac<Sha256> as Mac>::new_from_slice(password.as_bytes()) else {
            return; // HMAC accepts keys of every length
        };
        let key = Sha256::digest(password.as_bytes());
        let aes = aes::Aes256::new(&key);
        self.map
            .insert(user.as_bytes().to_vec(), Credentials { mac, aes });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, user: &str) -> bool {
        self.map.contains_key(user.as_bytes())
    }

    fn get(&self, user: &[u8]) -> Option<&Credentials> {
        self.map.get(user)
    }

    /// Reads the auth file format of the original: one `user: password` a line, both
    /// stripped, split at the first `:`; blank lines and lines starting with `#` are
    /// skipped. A line without `:` is an error. A line without a user or a password, and a
    /// repeated user (the last one wins), are warnings, returned with the users.
    pub fn parse(text: &str, origin: &str) -> Result<(Users, Vec<String>), AuthError> {
        let mut users = Users::new();
        let mut warnings = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, password)) = line.split_once(':') else {
                return Err(AuthError::NoColon {
                    origin: origin.to_string(),
                    line: i + 1,
                });
            };
            let (user, password) = (user.trim(), password.trim());
            if user.is_empty() || password.is_empty() {
                warnings.push(format!(
                    "auth file {origin}: line {}: missing {} (line skipped)",
                    i + 1,
                    if user.is_empty() { "user" } else { "password" }
                ));
                continue;
            }
            if users.contains(user) {
                warnings.push(format!(
                    "auth file {origin}: line {}: user '{user}' again (the last entry wins)",
                    i + 1
                ));
            }
            users.insert(user, password);
        }
        Ok((users, warnings))
    }

    /// Reads an auth file.
    pub fn load(path: &Path) -> Result<(Users, Vec<String>), AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Users::parse(&text, &path.display().to_string())
    }
}

/// Why a packet was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error("packet of {0} bytes is shorter than a part header")]
    Truncated(usize),
    #[error("{} packet refused at security level {}", .packet.name().to_ascii_lowercase(), .required.name())]
    LowerLevel { packet: Level, required: Level },
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("bad signature from user {0:?} (wrong password or altered packet)")]
    BadSignature(String),
    #[error("bad checksum after decryption for user {0:?} (wrong password or altered packet)")]
    BadChecksum(String),
}

impl Refusal {
    /// The counter this refusal is counted under (`refused_<reason>`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Truncated(_) => "truncated",
            Refusal::LowerLevel {
                required: Level::Encrypt,
                ..
            } => "unencrypted",
            Refusal::LowerLevel { .. } => "unsigned",
            Refusal::Malformed(_) => "malformed",
            Refusal::UnknownUser(_) => "unknown_user",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::BadChecksum(_) => "bad_checksum",
        }
    }
}

/// An accepted packet: the payload to decode and how it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    pub payload: &'a [u8],
    /// The packet's own level.
    pub level: Level,
    /// Whether a signature or checksum was checked.
    pub verified: bool,
}

/// The security layer: the level required and the users known.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub level: Level,
    pub users: Arc<Users>,
}

impl Security {
    pub fn new(level: Level, users: Users) -> Security {
        Security {
            level,
            users: Arc::new(users),
        }
    }

    /// Checks `packet` against the level and returns the payload to decode. A decrypted
    /// payload lives in `scratch`.
    pub fn open<'a>(
        &self,
        packet: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<Opened<'a>, Refusal> {
        let [k0, k1, l0, l1, ..] = packet else {
            return Err(Refusal::Truncated(packet.len()));
        };
        let kind = u16::from_be_bytes([*k0, *k1]);
        let part_len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let level = match kind {
            part::SIGNATURE => Level::Sign,
            part::ENCRYPTION => Level::Encrypt,
            _ => Level::None,
        };
        if level < self.level {
            return Err(Refusal::LowerLevel {
                packet: level,
                required: self.level,
            });
        }
        match level {
            Level::None => Ok(Opened {
                payload: packet,
                level,
                verified: false,
            }),
            Level::Sign => self.signed(packet, part_len),
            Level::Encrypt => self.encrypted(packet, part_len, scratch),
        }
    }

    fn signed<'a>(&self, packet: &'a [u8], part_len: usize) -> Result<Opened<'a>, Refusal> {
        if part_len < 4 || part_len > packet.len() {
            return Err(Refusal::Malformed("signature part length"));
        }
        let payload = &packet[part_len..];
        if self.level == Level::None {
            return Ok(Opened {
                payload,
                level: Level::Sign,
                verified: false,
            });
        }
        if part_len <= 36 {
            return Err(Refusal::Malformed("signature part: no user name"));
        }
        let tag = &packet[4..36];
        let user = &packet[36..part_len];
        let creds = self
            .users
            .get(user)
            .ok_or_else(|| Refusal::UnknownUser(String::from_utf8_lossy(user).into_owned()))?;
        let mut mac = creds.mac.clone();
        mac.update(user);
        mac.update(payload);
        // verify_slice compares in constant time.
        mac.verify_slice(tag)
            .map_err(|_| Refusal::BadSignature(String::from_utf8_lossy(user).into_owned()))?;
        Ok(Opened {
            payload,
            level: Level::Sign,
            verified: true,
        })
    }

    fn encrypted<'a>(
        &self,
        packet: &'a [u8],
        part_len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Opened<'a>, Refusal> {
        if part_len != packet.len() {
            return Err(Refusal::Malformed(
                "encryption part: it does not run to the end of the packet",
            ));
        }
        let rest = &packet[4..];
        if rest.len() <= 38 {
            return Err(Refusal::Malformed("encryption part: too short"));
        }
        let ulen = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() - 2 <= ulen + 36 {
            return Err(Refusal::Malformed(
                "encryption part: user name longer than the part",
            ));
        }
        let user = &rest[2..2 + ulen];
        let iv = &rest[2 + ulen..18 + ulen];
        let cipher_text = &rest[18 + ulen..];
        let creds = self
            .users
            .get(user)
            .ok_or_else(|| Refusal::UnknownUser(String::from_utf8_lossy(user).into_owned()))?;
        scratch.clear();
        scratch.extend_from_slice(cipher_text);
        let mut iv_block = aes::Block::default();
        iv_block.copy_from_slice(iv);
        let mut cipher = ofb::Ofb::<aes::Aes256>::from_core(ofb::OfbCore::inner_iv_init(
            creds.aes.clone(),
            &iv_block,
        ));
        cipher.apply_keystream(scratch);
        let (sum, payload) = scratch.split_at(20);
        let want = Sha1::digest(payload);
        if !constant_time_eq(sum, &want) {
            return Err(Refusal::BadChecksum(
                String::from_utf8_lossy(user).into_owned(),
            ));
        }
        Ok(Opened {
            payload,
            level: Level::Encrypt,
            verified: true,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What identifies a version of a file cheaply: device, inode, size, mtime and ctime in
/// nanoseconds. A rewrite in place, a replacement by rename and a `touch` all change it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

fn content_hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A file modified this recently is read again at every poll: file times tick coarsely
/// (milliseconds), so two writes of the same size can leave the same stamp.
const SETTLE_SECS: i64 = 2;

/// The auth file, watched for changes: [`poll`](Self::poll) looks at most once per
/// `period` (a `stat`; the file is read only when it changed or was modified in the last
/// two seconds), so the receive path never waits on it and no change is missed.
#[derive(Debug)]
pub struct AuthFile {
    path: PathBuf,
    stamp: Option<Stamp>,
    /// Hash of the content last read (used or refused), so a re-read of the same content
    /// changes nothing.
    seen: Option<u64>,
    last_check: Instant,
    period: Duration,
}

/// What [`AuthFile::poll`] found.
#[derive(Debug)]
pub enum Reload {
    /// The file changed and was read: the new users, and warnings about its lines.
    Users(Users, Vec<String>),
    /// The file changed but cannot be used now; the users in force stay.
    Failed(String),
}

impl AuthFile {
    /// Reads the file once; later changes are picked up by [`poll`](Self::poll).
    pub fn open(path: &Path) -> Result<(AuthFile, Users, Vec<String>), AuthError> {
        let stamp_now = stamp(path).ok();
        let bytes = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let (users, warnings) = Users::parse(
            &String::from_utf8_lossy(&bytes),
            &path.display().to_string(),
        )?;
        Ok((
            AuthFile {
                path: path.to_path_buf(),
                stamp: stamp_now,
                seen: Some(content_hash(&bytes)),
                last_check: Instant::now(),
                period: Duration::from_secs(1),
            },
            users,
            warnings,
        ))
    }

    /// How often [`poll`](Self::poll) looks at the file (default 1 s).
    pub fn set_period(&mut self, period: Duration) {
        self.period = period;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the file if `period` has passed since the last check; returns the new users
    /// when it changed.
    pub fn poll(&mut self, now: Instant) -> Option<Reload> {
        if now.duration_since(self.last_check) < self.period {
            return None;
        }
        self.last_check = now;
        let current = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                self.stamp = None;
                if self.seen.take().is_some() {
                    return Some(Reload::Failed(format!(
                        "auth file {}: {e}; keeping the users read before",
                        self.path.display()
                    )));
                }
                return None;
            }
        };
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let settling = wall - current.mtime.0 <= SETTLE_SECS;
        if Some(current) == self.stamp && !settling {
            return None;
        }
        self.stamp = Some(current);
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                self.seen = None;
                return Some(Reload::Failed(format!(
                    "auth file {}: {e}; keeping the users read before",
                    self.path.display()
                )));
            }
        };
        let hash = content_hash(&bytes);
        if self.seen == Some(hash) {
            return None;
        }
        self.seen = Some(hash);
        Some(
            match Users::parse(
                &String::from_utf8_lossy(&bytes),
                &self.path.display().to_string(),
            ) {
                Ok((users, warnings)) => Reload::Users(users, warnings),
                Err(e) => Reload::Failed(format!("{e}; keeping the users read before")),
            },
        )
    }
}

#[cfg(test)]
mod tests;
