//! docs/protocol.md §2.2 and §2.3a written out byte by byte, recomputed here from the page alone
//! (HKDF, SHAKE256, X25519; no switchboard or hpke key derivation) and compared with the stored
//! X-Wing key bundle vector: the spec, not only the Rust code, gives the vector's key.

use hkdf::Hkdf;
use sha2::Sha256;
use shake::{ExtendableOutput as _, Shake256, Update as _, XofReader as _};

use crate::support::hex;

fn stored_xwing_case() -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test_vectors/key_bundles.json");
    let all: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    all["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["suite"] == "xwing-sha256-chacha20poly1305")
        .unwrap()
        .clone()
}

fn b64url(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .unwrap()
}

#[test]
fn xwing_key_pair_follows_the_spec_byte_by_byte() {
    let case = stored_xwing_case();
    let seed = hex(case["seed"].as_str().unwrap());
    let public = b64url(case["bundle"]["kem_key"]["key"].as_str().unwrap());
    assert_eq!(public.len(), 1216);

    // §2.2 (test-vector devices): kem_ikm = HKDF-SHA256(salt, seed).expand(suite name, 32).
    let hk = Hkdf::<Sha256>::new(Some(b"switchboard/1 device-keys"), &seed);
    let mut ikm = [0u8; 32];
    hk.expand(b"xwing-sha256-chacha20poly1305", &mut ikm)
        .unwrap();

    // §2.3a: sk = SHAKE256(ikm || "HPKE-v1" || "KEM" || 0x647a || be16(13) || "DeriveKeyPair"
    //                      || be16(32))[0..32]
    let mut h = Shake256::default();
    h.update(&ikm);
    h.update(b"HPKE-v1");
    h.update(b"KEM\x64\x7a");
    h.update(&13u16.to_be_bytes());
    h.update(b"DeriveKeyPair");
    h.update(&32u16.to_be_bytes());
    let mut sk = [0u8; 32];
    h.finalize_xof().read(&mut sk);

    // The library's derivation gives the same private key.
    let (lib_sk, lib_pk) = <hpke::kem::XWing as hpke::Kem>::derive_keypair(&ikm);
    assert_eq!(hpke::Serializable::to_bytes(&lib_sk).as_slice(), &sk);
    assert_eq!(
        hpke::Serializable::to_bytes(&lib_pk).as_slice(),
        &public[..]
    );

    // expandDecapsulationKey: expanded = SHAKE256(sk, 96); sk_X = expanded[64..96];
    // pk = pk_M (1184 bytes) || X25519(sk_X, 9).
    let mut h = Shake256::default();
    h.update(&sk);
    let mut expanded = [0u8; 96];
    h.finalize_xof().read(&mut expanded);
    let mut sk_x = [0u8; 32];
    sk_x.copy_from_slice(&expanded[64..]);
    let pk_x = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sk_x));
    assert_eq!(&public[1184..], pk_x.as_bytes());
}
