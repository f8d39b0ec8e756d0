//! The device keystore: one file holding the device's keys and every secret it keeps (thread
//! states with their epoch secrets, pinned admin keys, the inbox cursor), encrypted at rest.
//!
//! File format (JSON): a header naming the key derivation, then the XChaCha20-Poly1305
//! encryption of the contents with the header as associated data:
//!
//! ```text
//! {"format":"switchboard-keystore","v":1,
//!  "kdf":{"alg":"argon2id","m_kib":19456,"t":2,"p":1,"salt":"<b64url 16 bytes>"} | {"alg":"key_file"},
//!  "nonce":"<b64url 24 bytes>","ciphertext":"<b64url>"}
//! ```
//!
//! The key is Argon2id over a passphrase (19 MiB, 2 passes: OWASP's minimum for Argon2id), or the
//! 32 bytes of a key file. Every save draws a fresh random nonce, writes a temporary file with
//! mode 0600, fsyncs it and renames it over the old one, so a crash leaves either the old or the
//! new keystore, never a torn one. The file is locked while open: a second process opening the
//! same keystore is refused (two processes sending from one device would reuse message keys).
//! A keystore readable by other users is refused too.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use switchboard_protocol::Csprng;
use zeroize::Zeroizing;

const FORMAT: &str = "switchboard-keystore";
const FORMAT_VERSION: u32 = 1;
/// The largest keystore file read (64 MiB): an admin with many threads stays far below.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Why the keystore could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Reading, writing or locking the file failed.
    #[error("keystore {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists already (on create) or does not (on open).
    #[error("keystore {path}: {what}")]
    Exists {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// Another process has the keystore open.
    #[error("keystore {0} is in use by another process")]
    Locked(PathBuf),
    /// The file is readable or writable by other users.
    #[error("keystore {path} is accessible by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Wrong passphrase or key file, or the file was altered.
    #[error("cannot decrypt keystore {0}: wrong passphrase or key file, or the file was altered")]
    Decrypt(PathBuf),
    /// The file is not a keystore this version can read.
    #[error("keystore {path} is not valid: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The key file is not 32 bytes (raw) or 43 characters of base64url.
    #[error("key file {0} must hold 32 random bytes (raw, or 43 characters of base64url)")]
    BadKeyFile(PathBuf),
    /// The passphrase is empty.
    #[error("the keystore passphrase must not be empty")]
    EmptyPassphrase,
    /// No randomness for salts and nonces.
    #[error("no randomness: {0}")]
    Randomness(String),
}

/// What unlocks a keystore.
#[derive(Clone)]
pub enum KeystoreSecret {
    /// A passphrase; the key is Argon2id over it.
    Passphrase(Zeroizing<String>),
    /// A file of 32 random bytes (raw, or base64url), itself kept with mode 0600.
    KeyFile(PathBuf),
}

impl std::fmt::Debug for KeystoreSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Passphrase(_) => f.write_str("Passphrase(..)"),
            Self::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
        }
    }
}

impl KeystoreSecret {
    /// A passphrase.
    #[must_use]
    pub fn passphrase(text: impl Into<String>) -> Self {
        Self::Passphrase(Zeroizing::new(text.into()))
    }

    /// Writes a new key file of 32 random bytes (base64url) at `path`, mode 0600, refusing to
    /// overwrite one.
    ///
    /// # Errors
    /// [`KeystoreError::Exists`] if the file exists, [`KeystoreError::Io`] if it cannot be
    /// written.
    pub fn create_key_file(path: &Path) -> Result<Self, KeystoreError> {
        let mut rng = Csprng::from_os().map_err(|e| KeystoreError::Randomness(e.to_string()))?;
        let key = Zeroizing::new(rng.array::<32>());
        let text = Zeroizing::new(URL_SAFE_NO_PAD.encode(key.as_slice()));
        let io = |source| KeystoreError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = private_file(path, true).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeystoreError::Exists {
                    path: path.to_owned(),
                    what: "a key file exists there already",
                }
            } else {
                io(e)
            }
        })?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self::KeyFile(path.to_owned()))
    }
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfCost {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfCost {
    /// 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// The key derivation named in the file header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alg", rename_all = "snake_case", deny_unknown_fields)]
enum Kdf {
    Argon2id {
        #[serde(flatten)]
        cost: KdfCost,
        salt: String,
    },
    KeyFile,
}

/// The file header; its JSON is the associated data of the encryption.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    v: u32,
    kdf: Kdf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(flatten)]
    header: Header,
    nonce: String,
    ciphertext: String,
}

/// An open keystore: the file, locked, and the key that encrypts it.
pub struct Keystore {
    path: PathBuf,
    header: Header,
    key: Zeroizing<[u8; 32]>,
    /// Held for the lock; the lock goes when the keystore is dropped.
    _lock: File,
    rng: Csprng,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Keystore {
    /// Creates a keystore at `path` holding `contents`, refusing to overwrite an existing file.
    /// Derives the key (Argon2id with `cost`, for a passphrase) on a blocking thread.
    ///
    /// # Errors
    /// [`KeystoreError::Exists`] if a file is there; I/O, key file and randomness errors.
    pub async fn create(
        path: &Path,
        secret: &KeystoreSecret,
        cost: KdfCost,
        contents: &[u8],
    ) -> Result<Self, KeystoreError> {
        let mut rng = Csprng::from_os().map_err(|e| KeystoreError::Randomness(e.to_string()))?;
        let kdf = match secret {
            KeystoreSecret::Passphrase(_) => Kdf::Argon2id {
                cost,
                salt: URL_SAFE_NO_PAD.encode(rng.array::<16>()),
            },
            KeystoreSecret::KeyFile(_) => Kdf::KeyFile,
        };
        let header = Header {
            format: FORMAT.to_owned(),
            v: FORMAT_VERSION,
            kdf,
        };
        let key = derive(path, secret, &header.kdf).await?;
        let lock = lock_patiently(path).await?;
        if path.exists() {
            return Err(KeystoreError::Exists {
                path: path.to_owned(),
                what: "a keystore exists there already",
            });
        }
        let mut store = Self {
            path: path.to_owned(),
            header,
            key,
            _lock: lock,
            rng,
        };
        store.save(contents)?;
        Ok(store)
    }

    /// Opens the keystore at `path` and returns it with its decrypted contents.
    ///
    /// # Errors
    /// [`KeystoreError::Exists`] if there is no file; [`KeystoreError::Locked`] if another
    /// process has it open; [`KeystoreError::Permissions`] if others can read it;
    /// [`KeystoreError::Decrypt`] for a wrong secret or an altered file;
    /// [`KeystoreError::Invalid`] for a file that is not a keystore.
    pub async fn open(
        path: &Path,
        secret: &KeystoreSecret,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), KeystoreError> {
        let io = |source| KeystoreError::Io {
            path: path.to_owned(),
            source,
        };
        let lock = lock_patiently(path).await?;
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::Exists {
                    path: path.to_owned(),
                    what: "no keystore there (create one first)",
                });
            }
            Err(e) => return Err(io(e)),
        };
        check_private(path, &meta)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(invalid(path, "larger than 64 MiB"));
        }
        let text = std::fs::read(path).map_err(io)?;
        let envelope: Envelope = serde_json::from_slice(&text)
            .map_err(|e| invalid(path, &format!("not a keystore file: {e}")))?;
        if envelope.header.format != FORMAT {
            return Err(invalid(path, "not a keystore file"));
        }
        if envelope.header.v != FORMAT_VERSION {
            return Err(invalid(
                path,
                &format!(
                    "keystore format version {} (this build reads {FORMAT_VERSION})",
                    envelope.header.v
                ),
            ));
        }
        let key = derive(path, secret, &envelope.header.kdf).await?;
        let nonce: [u8; 24] = b64(path, &envelope.nonce, "nonce")?
            .try_into()
            .map_err(|_| invalid(path, "nonce is not 24 bytes"))?;
        let ciphertext = b64(path, &envelope.ciphertext, "ciphertext")?;
        let aad = header_aad(&envelope.header)?;
        let plaintext = XChaCha20Poly1305::new(&(*key).into())
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeystoreError::Decrypt(path.to_owned()))?;
        let rng = Csprng::from_os().map_err(|e| KeystoreError::Randomness(e.to_string()))?;
        Ok((
            Self {
                path: path.to_owned(),
                header: envelope.header,
                key,
                _lock: lock,
                rng,
            },
            Zeroizing::new(plaintext),
        ))
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encrypts `contents` and replaces the file atomically (temporary file, fsync, rename,
    /// fsync of the directory).
    ///
    /// # Errors
    /// [`KeystoreError::Io`] if the file cannot be written; nothing is replaced then.
    pub fn save(&mut self, contents: &[u8]) -> Result<(), KeystoreError> {
        let nonce = self.rng.array::<24>();
        let aad = header_aad(&self.header)?;
        let ciphertext = XChaCha20Poly1305::new(&(*self.key).into())
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: contents,
                    aad: &aad,
                },
            )
            .map_err(|_| invalid(&self.path, "encryption failed"))?;
        let envelope = Envelope {
            header: self.header.clone(),
            nonce: URL_SAFE_NO_PAD.encode(nonce),
            ciphertext: URL_SAFE_NO_PAD.encode(&ciphertext),
        };
        let bytes =
            serde_json::to_vec(&envelope).map_err(|e| invalid(&self.path, &e.to_string()))?;
        let tmp = temp_path(&self.path);
        let io = |source| KeystoreError::Io {
            path: tmp.clone(),
            source,
        };
        // A stale temporary file from a crash is ours to replace.
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let mut file = private_file(&tmp, true).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(|source| KeystoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Makes the rename durable; some platforms cannot open directories, which is fine.
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

fn invalid(path: &Path, detail: &str) -> KeystoreError {
    KeystoreError::Invalid {
        path: path.to_owned(),
        detail: detail.to_owned(),
    }
}

fn b64(path: &Path, text: &str, what: &str) -> Result<Vec<u8>, KeystoreError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid(path, &format!("{what} is not base64url")))
}

fn header_aad(header: &Header) -> Result<Vec<u8>, KeystoreError> {
    serde_json::to_vec(header).map_err(|e| KeystoreError::Invalid {
        path: PathBuf::new(),
        detail: e.to_string(),
    })
}

/// The temporary file a save writes before renaming it over the keystore: the whole file name
/// plus `.tmp` (not `with_extension`, under which `a.keystore` and `a.ks` would share `a.tmp`
/// and one device's save could replace another's keystore).
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// How long opening waits for a lock held elsewhere before it reports it as held.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// [`lock`], waiting up to [`LOCK_PATIENCE`] for a lock held elsewhere: a lock file's
/// descriptor lives on in a child process between its fork and its exec (the descriptor is
/// close-on-exec, the lock is shared until then), so a keystore just closed here may look held
/// for a moment while this process starts another one. A keystore another process keeps open
/// is still reported as [`KeystoreError::Locked`], a second later.
async fn lock_patiently(path: &Path) -> Result<File, KeystoreError> {
    let started = tokio::time::Instant::now();
    loop {
        match lock(path) {
            Err(KeystoreError::Locked(_)) if started.elapsed() < LOCK_PATIENCE => {
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

/// Opens (creating) the keystore's lock file and takes its lock, held while the file stays
/// open.
fn lock(path: &Path) -> Result<File, KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: lock_path(path),
        source,
    };
    let lock = private_file(&lock_path(path), false).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(KeystoreError::Locked(path.to_owned())),
        Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
    }
}

/// Opens `path` for writing with mode 0600 (on Unix); `new` refuses an existing file.
fn private_file(path: &Path, new: bool) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true);
    if new {
        options.create_new(true);
    } else {
        options.create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeystoreError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), KeystoreError> {
    Ok(())
}

/// The encryption key: Argon2id over the passphrase (on a blocking thread), or the key file.
async fn derive(
    path: &Path,
    secret: &KeystoreSecret,
    kdf: &Kdf,
) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    match (secret, kdf) {
        (KeystoreSecret::Passphrase(passphrase), Kdf::Argon2id { cost, salt }) => {
            if passphrase.is_empty() {
                return Err(KeystoreError::EmptyPassphrase);
            }
            let salt = b64(path, salt, "salt")?;
            let params = argon2::Params::new(cost.m_kib, cost.t, cost.p, Some(32))
                .map_err(|e| invalid(path, &format!("argon2 parameters: {e}")))?;
            if cost.m_kib > 4 * 1024 * 1024 || cost.t > 64 || cost.p > 64 {
                return Err(invalid(
                    path,
                    "argon2 cost is beyond what this build accepts",
                ));
            }
            let passphrase = passphrase.clone();
            let task_path = path.to_owned();
            tokio::task::spawn_blocking(move || {
                let mut key = Zeroizing::new([0u8; 32]);
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into(passphrase.as_bytes(), &salt, key.as_mut())
                    .map_err(|e| invalid(&task_path, &format!("key derivation: {e}")))?;
                Ok(key)
            })
            .await
            .map_err(|e| invalid(path, &format!("key derivation task: {e}")))?
        }
        (KeystoreSecret::KeyFile(file), Kdf::KeyFile) => read_key_file(file),
        (KeystoreSecret::Passphrase(_), Kdf::KeyFile) => Err(invalid(
            path,
            "this keystore is unlocked by a key file, not a passphrase",
        )),
        (KeystoreSecret::KeyFile(_), Kdf::Argon2id { .. }) => Err(invalid(
            path,
            "this keystore is unlocked by a passphrase, not a key file",
        )),
    }
}

fn read_key_file(file: &Path) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let meta = std::fs::metadata(file).map_err(|source| KeystoreError::Io {
        path: file.to_owned(),
        source,
    })?;
    check_private(file, &meta)?;
    if meta.len() > 1024 {
        return Err(KeystoreError::BadKeyFile(file.to_owned()));
    }
    let bytes = Zeroizing::new(std::fs::read(file).map_err(|source| KeystoreError::Io {
        path: file.to_owned(),
        source,
    })?);
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() == 32 {
        key.copy_from_slice(&bytes);
        return Ok(key);
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| KeystoreError::BadKeyFile(file.to_owned()))?;
    let decoded = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(text.trim())
            .map_err(|_| KeystoreError::BadKeyFile(file.to_owned()))?,
    );
    if decoded.len() != 32 {
        return Err(KeystoreError::BadKeyFile(file.to_owned()));
    }
    key.copy_from_slice(&decoded);
    Ok(key)
}
