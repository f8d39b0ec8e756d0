//! The receivers of the negative vectors, rebuilt from the stored files, and the tests that feed
//! each vector to its receiver.

use serde_json::{Value, json};
use switchboard_protocol::*;

use super::{case, customer_at};
use crate::support::{NOW, hex};
use crate::vectors::{agent_keys, keys_of, load};

struct Devices {
    suite: CipherSuite,
    entity: EntityId,
    customer: DeviceKeys,
    admin: DeviceKeys,
    agents: Vec<DeviceKeys>,
    commits: Value,
}

impl Devices {
    fn load() -> Self {
        let v = load("commits.json");
        let suite: CipherSuite = serde_json::from_value(v["suite"].clone()).unwrap();
        let d = &v["devices"];
        Self {
            suite,
            entity: serde_json::from_value(v["entity"].clone()).unwrap(),
            customer: keys_of(&d["customer"], suite),
            admin: keys_of(&d["admin"], suite),
            agents: d["agents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| agent_keys(a, suite))
                .collect(),
            commits: v,
        }
    }

    fn named(&self, name: &str) -> &DeviceKeys {
        match name {
            "customer" => &self.customer,
            "admin" => &self.admin,
            "agent0" => &self.agents[0],
            other => panic!("unknown device {other}"),
        }
    }

    /// Agent 2 (rotated keys) joined through the transfer (epoch 7) and at the last epoch.
    fn agent2_at_end(&self) -> ThreadState {
        let mut view: Option<ThreadState> = None;
        let me = &self.agents[2];
        for step in self.commits["commits"].as_array().unwrap() {
            let commit: Commit = decode(step["commit"].to_string().as_bytes()).unwrap();
            let at: Timestamp = serde_json::from_value(step["now"].clone()).unwrap();
            match &mut view {
                Some(v) => v.apply_commit(me, &commit, at).unwrap(),
                None if commit.roster.contains(me.device()) => {
                    view = Some(
                        ThreadState::join(
                            me,
                            &self.entity,
                            self.admin.device(),
                            self.admin.identity_public(),
                            &commit,
                            at,
                            &mut DeviceMemory::new(),
                        )
                        .unwrap(),
                    );
                }
                None => {}
            }
        }
        view.unwrap()
    }

    /// The customer restored from its snapshot, with the stored commits up to `epoch` applied.
    fn customer_at(&self, epoch: u64) -> ThreadState {
        let snapshot: ThreadSnapshot =
            decode(self.commits["customer_snapshot"].to_string().as_bytes()).unwrap();
        let mut view = ThreadState::restore(&self.customer, snapshot).unwrap();
        for step in self.commits["commits"].as_array().unwrap() {
            let commit: Commit = decode(step["commit"].to_string().as_bytes()).unwrap();
            if commit.epoch.0 > epoch {
                break;
            }
            let at: Timestamp = serde_json::from_value(step["now"].clone()).unwrap();
            view.apply_commit(&self.customer, &commit, at).unwrap();
        }
        assert_eq!(view.epoch(), Epoch(epoch));
        view
    }
}

fn de<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

/// Feeds a case's `first` values and then its value to its receiver; the result of the last.
fn receive(d: &Devices, case: &Value) -> Result<(), Error> {
    let now: Timestamp = de(&case["now"]);
    let r = &case["receiver"];
    let mut values: Vec<&Value> = case["first"].as_array().unwrap().iter().collect();
    values.push(&case["value"]);
    let (last, first) = values.split_last().unwrap();
    let text = |v: &Value| v.to_string();
    match case["value_type"].as_str().unwrap() {
        "wrap" => {
            let w = &load("wraps.json")["cases"][0];
            let recipient = keys_of(&w["recipient"], d.suite);
            let sender = keys_of(&w["sender"], d.suite);
            let original: KeyWrap = decode(w["wrap"].to_string().as_bytes()).unwrap();
            let mut seen = SeenWraps::new();
            let mut open = |v: &Value| -> Result<(), Error> {
                let wrap: KeyWrap = decode(text(v).as_bytes())?;
                wrap.open(
                    &recipient,
                    &ExpectedWrap {
                        sender: sender.device(),
                        sender_key: &sender.identity_public(),
                        thread: original.thread,
                        epoch: original.epoch,
                        roster_hash: original.roster_hash,
                    },
                    now,
                    &mut seen,
                )?;
                Ok(())
            };
            for v in first {
                open(v).unwrap();
            }
            open(last)
        }
        "oversized_wrap" => {
            let pad = usize::try_from(last["pad"].as_u64().unwrap()).unwrap();
            let text = format!("{}{}", last["wrap"], " ".repeat(pad));
            decode::<KeyWrap>(text.as_bytes())?;
            Ok(())
        }
        "identity_key" => {
            let bytes: [u8; 32] = hex(last.as_str().unwrap()).try_into().unwrap();
            IdentityPublicKey::from_bytes(&bytes)
                .map(|_| ())
                .map_err(Error::from)
        }
        "kem_key" => {
            let suite: CipherSuite = de(&last["suite"]);
            KemPublicKey::from_bytes(suite, &hex(last["key"].as_str().unwrap()))
                .map(|_| ())
                .map_err(Error::from)
        }
        "key_bundle" => Ok(decode::<KeyBundle>(text(last).as_bytes())?.verify()?),
        "key_bundle_update" => {
            let current: KeyBundle = decode(r["current"].to_string().as_bytes())?;
            Ok(decode::<KeyBundle>(text(last).as_bytes())?.check_update_of(&current)?)
        }
        "credential" => {
            let credential: AgentCredential = decode(text(last).as_bytes())?;
            credential.verify(&d.entity, d.admin.device(), &d.admin.identity_public(), now)?;
            let agent = usize::try_from(r["bundle_of_agent"].as_u64().unwrap()).unwrap();
            Ok(credential.matches_bundle(&d.agents[agent].bundle(NOW))?)
        }
        "thread_open" => {
            let mut seen = SeenWraps::new();
            let mut accept = |v: &Value| -> Result<(), Error> {
                let open: ThreadOpen = decode(text(v).as_bytes())?;
                ThreadState::accept(&d.admin, &d.entity, &open, now, &mut seen).map(|_| ())
            };
            for v in first {
                accept(v).unwrap();
            }
            accept(last)
        }
        "commit" => {
            let mut view = d.customer_at(r["at_epoch"].as_u64().unwrap());
            let commit: Commit = decode(text(last).as_bytes())?;
            Ok(view.apply_commit(&d.customer, &commit, now)?)
        }
        "join" => {
            let me = d.named(r["device"].as_str().unwrap());
            let mut memory = DeviceMemory::new();
            let mut join = |v: &Value| -> Result<(), Error> {
                let commit: Commit = decode(text(v).as_bytes())?;
                ThreadState::join(
                    me,
                    &d.entity,
                    d.admin.device(),
                    d.admin.identity_public(),
                    &commit,
                    now,
                    &mut memory,
                )?;
                Ok(())
            };
            for v in first {
                join(v).unwrap();
            }
            join(last)
        }
        "message" => {
            let mut view = d.customer_at(r["at_epoch"].as_u64().unwrap());
            let mut open = |v: &Value| -> Result<(), Error> {
                let m: SealedMessage = decode(text(v).as_bytes())?;
                view.open_message(&m, now)?;
                Ok(())
            };
            for v in first {
                open(v).unwrap();
            }
            open(last)
        }
        "history_grant" => {
            let mut view = d.agent2_at_end();
            let grant: HistoryGrant = decode(text(last).as_bytes())?;
            view.accept_history(&d.agents[2], &grant, now)?;
            Ok(())
        }
        "snapshot" => {
            let snapshot: ThreadSnapshot = decode(text(last).as_bytes())?;
            ThreadState::restore(d.named(r["device"].as_str().unwrap()), snapshot).map(|_| ())
        }
        other => panic!("unknown value type {other}"),
    }
}

/// Whether `err` is the error of validation-table row `row` (a match on the variant).
fn is_rows_error(row: &str, err: &Error) -> bool {
    use CommitError as C;
    use CredentialError as Cr;
    use HistoryError as H;
    use KeyError as K;
    use MessageError as M;
    use WireError as V;
    use WrapError as W;
    match row {
        "V1" => matches!(err, Error::Wire(V::UnsupportedVersion { .. })),
        "V2" | "V3" | "V4" => matches!(err, Error::Wire(V::Malformed { .. })),
        "K1" => matches!(
            err,
            Error::Key(K::InvalidIdentityKey { .. } | K::WeakIdentityKey)
        ),
        "K2" => matches!(err, Error::Key(K::InvalidKemKey { .. })),
        "K3" => matches!(err, Error::Key(K::WeakKemKey)),
        "K4" => matches!(err, Error::Key(K::BadBundleSignature { .. })),
        "K5" => matches!(
            err,
            Error::Key(
                K::WrongDevice { .. }
                    | K::IdentityChanged { .. }
                    | K::NotNewer { .. }
                    | K::BadBundleSignature { .. }
            )
        ),
        "C1" => matches!(err, Error::Credential(Cr::WrongIssuer { .. })),
        "C2" => matches!(err, Error::Credential(Cr::BadSignature { .. })),
        "C3" => matches!(err, Error::Credential(Cr::InvalidDisplayName { .. })),
        "C4" => matches!(err, Error::Credential(Cr::Expired { .. })),
        "C5" => matches!(err, Error::Credential(Cr::KeyMismatch { .. })),
        "W1" => matches!(err, Error::Wrap(W::SuiteMismatch { .. })),
        "W2" => matches!(err, Error::Wrap(W::WrongRecipient { .. })),
        "W3" => matches!(err, Error::Wrap(W::UnexpectedSender { .. })),
        "W4" => matches!(err, Error::Wrap(W::ContextMismatch { .. })),
        "W5" => matches!(err, Error::Wrap(W::Expired { .. })),
        "W6" => matches!(err, Error::Wrap(W::BadSignature { .. })),
        "W7" => matches!(err, Error::Wrap(W::Replayed { .. })),
        "W7a" => matches!(err, Error::Wrap(W::UnknownKemKey { .. })),
        "W8" => matches!(err, Error::Wrap(W::Decrypt { .. })),
        "O1" => matches!(err, Error::WrongEntity { .. }),
        "O2" => matches!(err, Error::Key(_) | Error::SelfThread),
        "O3" => matches!(err, Error::Wrap(_)),
        "O4" => matches!(err, Error::Wrap(W::Replayed { .. })),
        "R1" => matches!(err, Error::Commit(C::WrongThread { .. })),
        "R2" => matches!(err, Error::Commit(C::EpochMismatch { .. })),
        "R3" => matches!(err, Error::Commit(C::BadSignature { .. })),
        "R4" => matches!(err, Error::Commit(C::RosterMismatch { .. })),
        "R5" => matches!(err, Error::Commit(C::InvalidAction(_))),
        "R5a" => matches!(err, Error::Commit(C::KeyUpdate { .. })),
        "R6" => matches!(
            err,
            Error::Commit(C::Credential(_) | C::Key(_) | C::InvalidAction(_))
        ),
        "R7" => matches!(
            err,
            Error::Commit(C::Removed { .. } | C::MissingWrap { .. })
        ),
        "R8" => matches!(err, Error::Commit(C::Wrap(_))),
        "R9" => matches!(err, Error::Commit(C::ConfirmationMismatch { .. })),
        "R10" => matches!(err, Error::Commit(C::WrongEntity { .. })),
        "R11" => matches!(err, Error::Commit(C::StaleJoin { .. })),
        "R12" => matches!(err, Error::Commit(C::Wrap(W::Replayed { .. }))),
        "M1" => matches!(err, Error::Message(M::WrongThread { .. })),
        "M2" => matches!(err, Error::Message(M::SenderRemoved { .. })),
        "M3" => matches!(err, Error::Message(M::UnknownEpoch { .. })),
        "M4" => matches!(err, Error::Message(M::RosterMismatch { .. })),
        "M5" => matches!(err, Error::Message(M::UnknownSender { .. })),
        "M6" => matches!(err, Error::Message(M::BadSignature { .. })),
        "M7" => matches!(err, Error::Message(M::Duplicate { .. })),
        "M7a" => matches!(err, Error::Message(M::Equivocation { .. })),
        "M8" => matches!(err, Error::Message(M::GenerationOutOfWindow { .. })),
        "M8a" => matches!(err, Error::Message(M::StaleEpoch { .. })),
        "M9" => matches!(err, Error::Message(M::NoFloor { .. })),
        "M9a" => matches!(err, Error::Message(M::AdminOnly { .. })),
        "M9b" => matches!(err, Error::Message(M::SenderExpired { .. })),
        "M10" => matches!(err, Error::Message(M::Decrypt)),
        "M11" => matches!(err, Error::Message(M::InvalidContent(_))),
        "S1" | "S2" | "S4" => matches!(err, Error::Snapshot(_)),
        "H1" => matches!(err, Error::History(H::WrongThread { .. })),
        "H2" => matches!(
            err,
            Error::History(H::NotForMe { .. } | H::NotAMember { .. } | H::NotAdmin)
        ),
        "H3" => matches!(err, Error::History(H::BadSignature)),
        "H4" => matches!(
            err,
            Error::History(H::NotEarlier { .. } | H::RosterMismatch { .. } | H::Wrap(_))
        ),
        "H5" => matches!(
            err,
            Error::History(H::Message { .. } | H::NotEarlier { .. })
        ),
        "H6" => matches!(err, Error::History(H::InvalidRoster { .. })),
        "H7" => matches!(err, Error::History(H::BrokenChain { .. })),
        other => panic!("no error listed for row {other}"),
    }
}

/// The variant path of `err` as the vectors write it (`WrapError::Expired`,
/// `CommitError::Wrap(WrapError::BadSignature)`), from its Debug form.
fn variant_path(err: &Error) -> String {
    fn name(debug: &str) -> &str {
        debug.split([' ', '(', '{', ')']).next().unwrap()
    }
    fn inner(debug: &str) -> &str {
        debug.split_once('(').map_or("", |(_, rest)| rest)
    }
    let debug = format!("{err:?}");
    let outer = name(&debug);
    let (ty, rest) = match outer {
        "Wire" => ("WireError", inner(&debug)),
        "Key" => ("KeyError", inner(&debug)),
        "Credential" => ("CredentialError", inner(&debug)),
        "Wrap" => ("WrapError", inner(&debug)),
        "Commit" => ("CommitError", inner(&debug)),
        "Message" => ("MessageError", inner(&debug)),
        "History" => ("HistoryError", inner(&debug)),
        other => return format!("Error::{other}"),
    };
    let variant = name(rest);
    let nested = match (ty, variant) {
        ("CommitError", "Wrap") => Some("WrapError"),
        ("CommitError", "Credential") => Some("CredentialError"),
        ("CommitError" | "WrapError", "Key") => Some("KeyError"),
        _ => None,
    };
    match nested {
        Some(t) => format!("{ty}::{variant}({t}::{})", name(inner(rest))),
        None => format!("{ty}::{variant}"),
    }
}

#[test]
fn every_negative_vector_is_refused_with_its_rows_error() {
    let d = Devices::load();
    let cases = load("negative.json")["cases"].as_array().unwrap().clone();
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for case in &cases {
        let row = case["row"].as_str().unwrap();
        rows.push(row.to_owned());
        let err = match receive(&d, case) {
            Ok(()) => {
                wrong.push(format!("{row}: accepted {}", case["description"]));
                continue;
            }
            Err(err) => err,
        };
        let expected = case["expected_error"].as_str().unwrap();
        if !is_rows_error(row, &err) || variant_path(&err) != expected {
            wrong.push(format!("{row}: expected {expected}, refused with {err:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every row a value can break has its vector (docs/protocol.md §11 lists the others).
    for row in [
        "V1", "V2", "V3", "V4", "K1", "K2", "K3", "K4", "K5", "C1", "C2", "C3", "C4", "C5", "W1",
        "W2", "W3", "W4", "W5", "W6", "W7", "W7a", "W8", "O1", "O2", "O3", "O4", "R1", "R2", "R3",
        "R4", "R5", "R5a", "R6", "R7", "R8", "R9", "R10", "R11", "R12", "M1", "M2", "M3", "M4",
        "M5", "M6", "M7", "M7a", "M8", "M8a", "M9", "M9a", "M9b", "M10", "M11", "S1", "S2", "S4",
        "H1", "H2", "H3", "H4", "H5", "H6", "H7",
    ] {
        assert!(
            rows.iter().any(|r| r == row),
            "no negative vector for {row}"
        );
    }
}

/// Each negative vector changes what makes the receiver refuse it: the unchanged base values
/// are accepted by the same receivers (so a refusal is the row's check, not a broken setup).
#[test]
fn the_receivers_of_the_negative_vectors_accept_the_unchanged_values() {
    let d = Devices::load();
    let w = &load("wraps.json")["cases"][0];
    let commits = &d.commits;
    let base = |kind: &str, receiver: Value, value: Value| {
        let mut c = case("-", "-", kind, receiver, value, "unchanged");
        c["now"] = json!(NOW);
        c
    };
    for c in [
        base("wrap", json!({}), w["wrap"].clone()),
        base("thread_open", json!({}), commits["thread_open"].clone()),
        base(
            "commit",
            customer_at(0),
            commits["commits"][0]["commit"].clone(),
        ),
        base(
            "join",
            json!({ "device": "agent0" }),
            commits["commits"][0]["commit"].clone(),
        ),
        base(
            "snapshot",
            json!({ "device": "customer" }),
            commits["customer_snapshot"].clone(),
        ),
    ] {
        receive(&d, &c).unwrap();
    }
    let negatives = load("negative.json");
    let m7 = negatives["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["row"] == "M7")
        .unwrap();
    receive(&d, &base("message", customer_at(3), m7["first"][0].clone())).unwrap();
}
