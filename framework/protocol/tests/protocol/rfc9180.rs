//! Known-answer tests for the HPKE suites we use, from `../shared/vectors/`: RFC 9180 Appendix A
//! (X25519 + HKDF-SHA256 with AES-128-GCM and with ChaCha20Poly1305) and X-Wing (HKDF-SHA256 and
//! SHAKE256). The hpke crate does not ship these in its package.
//!
//! Both sides are exercised: the receiver is set up from `ikmR` and `enc` and opens every
//! ciphertext; the sender is set up with an RNG that yields `ikmE`, must produce `enc`, and must
//! produce every ciphertext at its sequence number (sealing filler messages to advance over the
//! sequence numbers the vectors skip, which the receiver then opens too).

use hpke::aead::{AesGcm128, ChaCha20Poly1305};
use hpke::kdf::{HkdfSha256, KdfShake256};
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use serde_json::Value;

use crate::support::{hex, shared_vectors_dir};

/// An RNG that yields fixed bytes (the vector's `ikmE`), then refuses to be used further.
struct FixedRng(Vec<u8>);

impl rand_core::TryRng for FixedRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        unreachable!("HPKE only asks for bytes")
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        unreachable!("HPKE only asks for bytes")
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        assert!(
            dst.len() <= self.0.len(),
            "HPKE asked for more randomness than ikmE holds"
        );
        let rest = self.0.split_off(dst.len());
        dst.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}
impl rand_core::TryCryptoRng for FixedRng {}

fn field(v: &Value, name: &str) -> Vec<u8> {
    hex(v[name]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {name} missing")))
}

/// Runs one vector of suite (A, Kdf, K). Returns how many ciphertexts were checked.
fn run<A: hpke::aead::Aead, Kdf: hpke::kdf::Kdf, K: Kem>(v: &Value) -> usize {
    assert_eq!(v["mode"], 0, "only Base mode is used by switchboard/1");
    let (sk, pk) = K::derive_keypair(&field(v, "ikmR"));
    // hpke >= 0.15 serialises X25519 private keys clamped, so compare the vector's skRm as the
    // library reads it; and the vector's skRm must give the vector's pkRm.
    let vector_sk = K::PrivateKey::from_bytes(&field(v, "skRm")).unwrap();
    assert_eq!(sk.to_bytes(), vector_sk.to_bytes(), "derived skR");
    assert_eq!(
        K::sk_to_pk(&vector_sk).to_bytes().as_slice(),
        field(v, "pkRm"),
        "pk(skRm)"
    );
    assert_eq!(pk.to_bytes().as_slice(), field(v, "pkRm"), "derived pkR");
    let info = field(v, "info");

    let mut rng = FixedRng(field(v, "ikmE"));
    let (enc, mut sender) =
        hpke::setup_sender_with_rng::<A, Kdf, K>(&OpModeS::Base, &pk, &info, &mut rng).unwrap();
    assert_eq!(enc.to_bytes().as_slice(), field(v, "enc"), "enc");
    let enc = K::EncappedKey::from_bytes(&field(v, "enc")).unwrap();
    let mut receiver = hpke::setup_receiver::<A, Kdf, K>(&OpModeR::Base, &sk, &enc, &info).unwrap();

    let encryptions = v["encryptions"].as_array().unwrap();
    let mut seq = 0u64;
    for (i, e) in encryptions.iter().enumerate() {
        // RFC file: explicit "seq"; X-Wing file: consecutive from 0.
        let want_seq = e.get("seq").and_then(Value::as_u64).unwrap_or(i as u64);
        while seq < want_seq {
            let filler = sender.seal(b"filler", b"").unwrap();
            assert_eq!(receiver.open(&filler, b"").unwrap(), b"filler");
            seq += 1;
        }
        let pt = e
            .get("plaintext")
            .or_else(|| e.get("pt"))
            .and_then(Value::as_str)
            .unwrap();
        let ct = e
            .get("ciphertext")
            .or_else(|| e.get("ct"))
            .and_then(Value::as_str)
            .unwrap();
        let (pt, ct, aad) = (hex(pt), hex(ct), field(e, "aad"));
        assert_eq!(
            sender.seal(&pt, &aad).unwrap(),
            ct,
            "sender ciphertext at seq {seq}"
        );
        assert_eq!(
            receiver.open(&ct, &aad).unwrap(),
            pt,
            "receiver plaintext at seq {seq}"
        );
        seq += 1;
    }
    for x in v
        .get("exports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let len = usize::try_from(x["L"].as_u64().unwrap()).unwrap();
        let mut out = vec![0u8; len];
        receiver
            .export(&field(x, "exporter_context"), &mut out)
            .unwrap();
        assert_eq!(out, field(x, "exported_value"), "exported value");
    }
    encryptions.len()
}

fn load(name: &str) -> Option<Vec<Value>> {
    let path = shared_vectors_dir()?.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn rfc9180_x25519_vectors_for_aes128gcm_and_chacha20poly1305() {
    let Some(vectors) = load("hpke-rfc9180-x25519.json") else {
        return;
    };
    let mut seen = Vec::new();
    for v in &vectors {
        let ids = (
            v["kem_id"].as_u64(),
            v["kdf_id"].as_u64(),
            v["aead_id"].as_u64(),
        );
        let checked = match ids {
            (Some(0x20), Some(1), Some(1)) => run::<AesGcm128, HkdfSha256, X25519HkdfSha256>(v),
            (Some(0x20), Some(1), Some(3)) => {
                run::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(v)
            }
            other => panic!("unexpected suite {other:?} in the RFC 9180 file"),
        };
        assert!(checked >= 6);
        seen.push(ids.2);
    }
    seen.sort_unstable();
    assert_eq!(seen, [Some(1), Some(3)], "both AEADs must be covered");
}

#[test]
fn xwing_vectors_for_hkdf_sha256_and_shake256() {
    let Some(vectors) = load("hpke-xwing.json") else {
        return;
    };
    let mut kdfs = Vec::new();
    for v in &vectors {
        let ids = (
            v["kem_id"].as_u64(),
            v["kdf_id"].as_u64(),
            v["aead_id"].as_u64(),
        );
        let checked = match ids {
            (Some(0x647a), Some(1), Some(3)) => run::<ChaCha20Poly1305, HkdfSha256, XWing>(v),
            (Some(0x647a), Some(0x11), Some(3)) => run::<ChaCha20Poly1305, KdfShake256, XWing>(v),
            other => panic!("unexpected suite {other:?} in the X-Wing file"),
        };
        assert!(checked >= 1);
        kdfs.push(ids.1);
    }
    kdfs.sort_unstable();
    assert_eq!(kdfs, [Some(1), Some(0x11)]);
}

/// Our suite identifiers are the registered ones the vectors use.
#[test]
fn suite_ids_match_the_registry() {
    use switchboard_protocol::CipherSuite;
    assert_eq!(CipherSuite::X25519Sha256ChaCha20Poly1305.kem_id(), 0x20);
    assert_eq!(CipherSuite::XWingSha256ChaCha20Poly1305.kem_id(), 0x647a);
    for s in CipherSuite::ALL {
        assert_eq!((s.kdf_id(), s.aead_id()), (1, 3));
    }
}
