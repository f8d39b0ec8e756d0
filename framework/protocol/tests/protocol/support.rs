//! Shared helpers: a small world of devices (customer, admin, agents) and hex decoding.

use std::io::Write as _;
use std::path::PathBuf;

use hkdf::Hkdf;
use sha2::Sha256;
use switchboard_protocol::*;

pub const NOW: Timestamp = Timestamp(1_800_000_000);

pub fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `../shared/vectors` beside the checkout, or `$SWITCHBOARD_VECTORS_DIR`. `None` (after saying
/// so) when absent outside CI; in CI its absence is a failure.
pub fn shared_vectors_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SWITCHBOARD_VECTORS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
        PathBuf::from,
    );
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have the shared HPKE vectors at {}",
        dir.display()
    );
    // The real stderr, not captured by the test harness, so that the skip is visible.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: shared HPKE vectors not found at {} (set SWITCHBOARD_VECTORS_DIR)",
        dir.display()
    );
    None
}

/// A deterministic world: one entity with an admin, a customer, and agents, all from fixed seeds.
pub struct World {
    pub rng: Csprng,
    pub entity: EntityId,
    pub customer: DeviceKeys,
    pub admin: DeviceKeys,
    pub agents: Vec<DeviceKeys>,
}

impl World {
    pub fn new(suite: CipherSuite, agents: u8) -> Self {
        let keys = |n: u8| DeviceKeys::from_seed(DeviceId::from_bytes([n; 16]), suite, &[n; 32]);
        Self {
            rng: Csprng::from_seed([0x5b; 32]),
            entity: EntityId::new("acme").unwrap(),
            customer: keys(1),
            admin: keys(2),
            agents: (0..agents).map(|i| keys(10 + i)).collect(),
        }
    }

    /// An agent member with a credential from the admin.
    pub fn member(&self, agent: usize, kind: AgentKind) -> Member {
        let keys = &self.agents[agent];
        let bundle = keys.bundle(NOW);
        let name = format!("Agent{agent}");
        let credential = AgentCredential::issue(
            &self.admin,
            &CredentialRequest {
                entity: &self.entity,
                agent: &bundle,
                display_name: &name,
                kind,
                issued_at: NOW,
                expires_at: NOW.plus(86_400),
            },
        )
        .unwrap();
        Member::agent(bundle, credential)
    }

    /// The admin commits `action` on `admin_view` at `NOW`.
    pub fn commit(&mut self, admin_view: &mut ThreadState, action: CommitAction) -> Commit {
        admin_view
            .commit(&self.admin, action, NOW, &mut self.rng)
            .unwrap()
    }

    /// Agent `agent` joins the thread through `commit`.
    pub fn join(&self, agent: usize, commit: &Commit) -> ThreadState {
        ThreadState::join(
            &self.agents[agent],
            &self.entity,
            self.admin.device(),
            self.admin.identity_public(),
            commit,
            NOW,
            &mut DeviceMemory::new(),
        )
        .unwrap()
    }

    /// Customer opens a thread; admin accepts. Returns (customer view, admin view, the open).
    pub fn open_thread(&mut self) -> (ThreadState, ThreadState, ThreadOpen) {
        let (customer_view, open) = ThreadState::open(
            &self.customer,
            self.entity.clone(),
            &self.admin.bundle(NOW),
            NOW,
            &mut self.rng,
        )
        .unwrap();
        let admin_view =
            ThreadState::accept(&self.admin, &self.entity, &open, NOW, &mut SeenWraps::new())
                .unwrap();
        (customer_view, admin_view, open)
    }

    /// Opens a thread and assigns it to agent 0. Returns (customer, admin, agent 0, commit).
    pub fn assigned_thread(&mut self) -> (ThreadState, ThreadState, ThreadState, Commit) {
        let (mut customer_view, mut admin_view, _) = self.open_thread();
        let member = self.member(0, AgentKind::Bot);
        let commit = admin_view
            .commit(
                &self.admin,
                CommitAction::Assign {
                    agent: Box::new(member),
                },
                NOW,
                &mut self.rng,
            )
            .unwrap();
        customer_view
            .apply_commit(&self.customer, &commit, NOW)
            .unwrap();
        let agent_view = ThreadState::join(
            &self.agents[0],
            &self.entity,
            self.admin.device(),
            self.admin.identity_public(),
            &commit,
            NOW,
            &mut DeviceMemory::new(),
        )
        .unwrap();
        (customer_view, admin_view, agent_view, commit)
    }
}

// ---- the message construction of docs/protocol.md, written independently of the crate ----

/// The message key (32 bytes) and nonce (12 bytes) per docs/protocol.md §5.
pub fn spec_key_nonce(secret: &EpochSecret, header: &MessageHeader) -> [u8; 44] {
    let hk = Hkdf::<Sha256>::new(Some(b"switchboard/1 message-keys"), secret.as_bytes());
    let mut info = b"sb1 msgk".to_vec();
    info.extend_from_slice(header.thread.as_bytes());
    info.extend_from_slice(&header.epoch.0.to_be_bytes());
    info.extend_from_slice(header.sender.as_bytes());
    info.extend_from_slice(&header.generation.to_be_bytes());
    info.extend_from_slice(&header.reuse_guard);
    let mut okm = [0u8; 44];
    hk.expand(&info, &mut okm).unwrap();
    okm
}

fn tbs_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The message AAD exactly as docs/protocol.md §5 specifies it (written independently of the
/// crate, so the test also checks the spec).
pub fn spec_aad(h: &MessageHeader) -> Vec<u8> {
    let mut out = Vec::new();
    tbs_bytes(&mut out, b"switchboard/1 message");
    out.extend_from_slice(&1u64.to_be_bytes());
    out.extend_from_slice(h.thread.as_bytes());
    out.extend_from_slice(&h.epoch.0.to_be_bytes());
    out.extend_from_slice(h.sender.as_bytes());
    out.extend_from_slice(&h.generation.to_be_bytes());
    out.extend_from_slice(&h.reuse_guard);
    out.push(match h.content_type {
        ContentType::Text => 1,
        ContentType::Reply => 2,
        ContentType::Receipt => 3,
        ContentType::Typing => 4,
        ContentType::HandoffRequest => 5,
        ContentType::SystemNotice => 6,
    });
    match h.quoted {
        Some(q) => {
            out.push(1);
            out.extend_from_slice(q.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&h.roster_hash.0);
    out
}

/// Seals a message per the spec from an epoch secret, signing with `signer`: what any member
/// holding the epoch secret can compute.
pub fn spec_seal(
    secret: &EpochSecret,
    header: MessageHeader,
    content: &Content,
    signer: &IdentityKeyPair,
) -> SealedMessage {
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    let okm = spec_key_nonce(secret, &header);
    let aad = spec_aad(&header);
    let cipher = ChaCha20Poly1305::new_from_slice(&okm[..32]).unwrap();
    let nonce = chacha20poly1305::Nonce::try_from(&okm[32..]).unwrap();
    let plaintext = serde_json::to_vec(content).unwrap();
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    let mut signed = Vec::new();
    tbs_bytes(&mut signed, b"switchboard/1 message-signature");
    tbs_bytes(&mut signed, &aad);
    tbs_bytes(&mut signed, &ciphertext);
    let signature = signer.sign(&signed);
    let json = serde_json::json!({
        "v": 1,
        "header": header,
        "ciphertext": base64_url(&ciphertext),
        "signature": base64_url(&signature.to_bytes()),
    });
    decode(json.to_string().as_bytes()).unwrap()
}

pub fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

pub fn header_for(state: &ThreadState, sender: DeviceId, generation: u64) -> MessageHeader {
    MessageHeader {
        thread: state.thread(),
        epoch: state.epoch(),
        sender,
        generation,
        reuse_guard: [0x5a; 16],
        content_type: ContentType::Text,
        quoted: None,
        roster_hash: state.roster_hash(),
    }
}

/// Signs a history grant per docs/protocol.md §6a (written independently of the crate): what
/// the admin's key signs, so that tests can make admin-signed grants with chosen contents.
pub fn spec_sign_grant(grant: &mut HistoryGrant, admin: &IdentityKeyPair) {
    let mut out = Vec::new();
    tbs_bytes(&mut out, b"switchboard/1 history-grant");
    out.extend_from_slice(grant.thread.as_bytes());
    out.extend_from_slice(grant.to.as_bytes());
    out.extend_from_slice(grant.admin.as_bytes());
    out.extend_from_slice(&(grant.epochs.len() as u64).to_be_bytes());
    for e in &grant.epochs {
        out.extend_from_slice(&e.epoch.0.to_be_bytes());
        out.extend_from_slice(&e.prev_roster_hash.0);
        out.extend_from_slice(&e.roster.hash().0);
        out.extend_from_slice(e.wrap.wrap_id.as_bytes());
    }
    out.extend_from_slice(&(grant.messages.len() as u64).to_be_bytes());
    for m in &grant.messages {
        out.extend_from_slice(m.header.message_id().as_bytes());
        out.extend_from_slice(&m.signature.to_bytes());
    }
    grant.signature = admin.sign(&out);
}
