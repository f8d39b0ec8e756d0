//! KEM key rotation: a device replaces its KEM key, publishes it in a newer bundle, the admin
//! wraps the next epoch to it (a commit carrying the updated bundle), and the old private key is
//! deleted after a grace period. The attack tests capture a device's keystore (its keys and
//! thread state) at some moment and try to read what the relay stores.

use switchboard_protocol::*;

use crate::support::{NOW, World};

/// Grace period after a rotation during which the retired key still opens wraps (7 days).
const GRACE: u64 = 7 * 24 * 3600;

fn expected_from_admin<'a>(
    w: &'a World,
    commit: &Commit,
    admin_key: &'a IdentityPublicKey,
) -> ExpectedWrap<'a> {
    ExpectedWrap {
        sender: w.admin.device(),
        sender_key: admin_key,
        thread: commit.thread,
        epoch: commit.epoch,
        roster_hash: commit.roster.hash(),
    }
}

/// The customer rotates at `at` and the admin rekeys with the customer's newer bundle. Returns
/// the commit, wrapped to the new key.
fn rotate_customer_and_rekey(w: &mut World, at: Timestamp, admin_view: &mut ThreadState) -> Commit {
    w.customer.rotate_kem(at, &mut w.rng);
    let published = w.customer.bundle(at);
    let updates = admin_view.key_updates([published.clone()]);
    assert_eq!(
        updates,
        vec![published.clone()],
        "the admin sees the rotation"
    );
    let commit = admin_view
        .commit_with_updates(&w.admin, CommitAction::Rekey, updates, at, &mut w.rng)
        .unwrap();
    assert_eq!(
        commit.wrap_for(w.customer.device()).unwrap().recipient_key,
        published.kem_key_id(),
        "the rekey is wrapped to the customer's new key"
    );
    assert_eq!(
        commit.roster.get(w.customer.device()).unwrap().bundle,
        published
    );
    commit
}

/// A keystore captured before the rotation (keys and thread state) cannot open the rekey that
/// follows it, nor read the new epoch.
fn captured_before_rotation_is_locked_out(suite: CipherSuite) {
    let mut w = World::new(suite, 1);
    let (mut customer_view, mut admin_view, mut agent_view, _) = w.assigned_thread();
    // The attacker copies the customer's keystore today.
    let stolen_keys = w.customer.clone();
    let mut stolen_view = ThreadState::restore(&stolen_keys, customer_view.snapshot()).unwrap();

    let later = NOW.plus(3600);
    let rekey = rotate_customer_and_rekey(&mut w, later, &mut admin_view);
    let (customer, agent) = (w.customer.clone(), w.agents[0].clone());
    customer_view
        .apply_commit(&customer, &rekey, later)
        .unwrap();
    agent_view.apply_commit(&agent, &rekey, later).unwrap();
    assert_eq!(customer_view.roster_hash(), admin_view.roster_hash());
    assert_eq!(agent_view.roster_hash(), admin_view.roster_hash());

    // The stolen keystore cannot follow the rekey...
    let err = stolen_view
        .apply_commit(&stolen_keys, &rekey, later)
        .unwrap_err();
    assert!(
        matches!(err, CommitError::Wrap(WrapError::UnknownKemKey { .. })),
        "{suite}: the stolen keystore followed the rekey: {err}"
    );
    // ...nor open the wrap directly with a fresh replay record.
    let admin_key = w.admin.identity_public();
    let wrap = rekey.wrap_for(w.customer.device()).unwrap();
    let err = wrap
        .open(
            &stolen_keys,
            &expected_from_admin(&w, &rekey, &admin_key),
            later,
            &mut SeenWraps::new(),
        )
        .unwrap_err();
    assert!(
        matches!(err, WrapError::UnknownKemKey { .. }),
        "{suite}: {err}"
    );
    // ...nor read what is said in the new epoch.
    let reply = agent_view
        .seal(&agent, &Content::text("your new card ships today"), None)
        .unwrap();
    assert!(stolen_view.open_message(&reply, later).is_err());
    assert_eq!(
        customer_view.open_message(&reply, later).unwrap().content,
        Content::text("your new card ships today")
    );
    // The customer itself continues normally.
    let thanks = customer_view
        .seal(&customer, &Content::text("thanks"), None)
        .unwrap();
    agent_view.open_message(&thanks, later).unwrap();
}

/// A keystore captured after the rotation and the end of the grace period cannot open the
/// wraps sealed to the deleted key, which the relay still stores and which have not expired.
fn captured_after_rotation_cannot_open_stored_wraps(suite: CipherSuite) {
    let mut w = World::new(suite, 0);
    let (mut customer_view, mut admin_view, _) = w.open_thread();
    // Epoch 1: a rekey wrapped to the customer's first key; the relay keeps a copy.
    let stored = w.commit(&mut admin_view, CommitAction::Rekey);
    customer_view
        .apply_commit(&w.customer, &stored, NOW)
        .unwrap();
    let first_key = w.customer.kem_public().clone();

    // Rotation and rekey (epoch 2), then one more rekey so epoch 1's secret is pruned too.
    let later = NOW.plus(3600);
    let rekey = rotate_customer_and_rekey(&mut w, later, &mut admin_view);
    let customer = w.customer.clone();
    customer_view
        .apply_commit(&customer, &rekey, later)
        .unwrap();
    let again = admin_view
        .commit(&w.admin, CommitAction::Rekey, later, &mut w.rng)
        .unwrap();
    customer_view
        .apply_commit(&customer, &again, later)
        .unwrap();
    assert!(customer_view.epoch_secret(Epoch(1)).is_none());

    // During the grace period the old key is still held; after it, it is deleted.
    assert!(w.customer.holds_kem_key(&first_key));
    let after_grace = later.plus(GRACE);
    assert_eq!(w.customer.delete_retired_kem_keys(after_grace, GRACE), 1);
    assert!(!w.customer.holds_kem_key(&first_key));

    // The attacker copies the keystore now, and the stored epoch-1 wrap (still valid: wraps
    // live 30 days) from the relay.
    let stolen_keys = w.customer.clone();
    let stolen_view = ThreadState::restore(&stolen_keys, customer_view.snapshot()).unwrap();
    assert!(stolen_view.epoch_secret(Epoch(1)).is_none());
    let admin_key = w.admin.identity_public();
    let wrap = stored.wrap_for(w.customer.device()).unwrap();
    assert!(after_grace < wrap.expires_at);
    let err = wrap
        .open(
            &stolen_keys,
            &expected_from_admin(&w, &stored, &admin_key),
            after_grace,
            &mut SeenWraps::new(),
        )
        .unwrap_err();
    assert!(
        matches!(err, WrapError::UnknownKemKey { .. }),
        "{suite}: a keystore captured after the rotation opened a stored wrap: {err}"
    );
    // The keystore form of the keys (what is on disk) does not hold it either.
    let reloaded = DeviceKeys::from_parts(
        stolen_keys.device(),
        suite,
        stolen_keys.seed(),
        &stolen_keys.kem_secrets(),
    );
    assert!(!reloaded.holds_kem_key(&first_key));
    assert!(
        wrap.open(
            &reloaded,
            &expected_from_admin(&w, &stored, &admin_key),
            after_grace,
            &mut SeenWraps::new(),
        )
        .is_err()
    );
}

#[test]
fn keystore_captured_before_rotation_cannot_open_the_rekey_after_it() {
    captured_before_rotation_is_locked_out(CipherSuite::default());
}

#[test]
fn keystore_captured_after_rotation_cannot_open_wraps_sealed_to_the_deleted_key() {
    captured_after_rotation_cannot_open_stored_wraps(CipherSuite::default());
}

#[test]
fn xwing_device_rotates_its_kem_key_too() {
    let suite = CipherSuite::XWingSha256ChaCha20Poly1305;
    let mut rng = Csprng::from_seed([0x77; 32]);
    let mut keys = DeviceKeys::generate(DeviceId::random(&mut rng), suite, &mut rng);
    let before = keys.kem_public().clone();
    let identity = keys.identity_public();
    keys.rotate_kem(NOW, &mut rng);
    assert_eq!(keys.suite(), suite);
    assert_eq!(keys.kem_public().suite(), suite);
    assert_ne!(keys.kem_public(), &before);
    assert_eq!(keys.identity_public(), identity);
    keys.bundle(NOW).verify().unwrap();
    captured_before_rotation_is_locked_out(suite);
    captured_after_rotation_cannot_open_stored_wraps(suite);
}

#[test]
fn generated_kem_keys_are_random_not_derived_from_the_seed() {
    for suite in CipherSuite::ALL {
        let mut rng = Csprng::from_seed([0x42; 32]);
        let keys = DeviceKeys::generate(DeviceId::random(&mut rng), suite, &mut rng);
        let from_seed = DeviceKeys::from_seed(keys.device(), suite, keys.seed());
        assert_eq!(from_seed.identity_public(), keys.identity_public());
        assert_ne!(
            from_seed.kem_public(),
            keys.kem_public(),
            "{suite}: the seed alone must not give the KEM key"
        );
    }
}

#[test]
fn admin_opens_a_thread_wrapped_to_its_retired_key_only_during_the_grace_period() {
    let mut w = World::new(CipherSuite::default(), 0);
    // The customer wrapped to the bundle the directory served before the admin rotated.
    let (_, open) = ThreadState::open(
        &w.customer,
        w.entity.clone(),
        &w.admin.bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    w.admin.rotate_kem(NOW.plus(10), &mut w.rng);
    let during = NOW.plus(GRACE - 1);
    assert_eq!(w.admin.delete_retired_kem_keys(during, GRACE), 0);
    ThreadState::accept(&w.admin, &w.entity, &open, during, &mut SeenWraps::new()).unwrap();
    let after = NOW.plus(10 + GRACE);
    assert_eq!(w.admin.delete_retired_kem_keys(after, GRACE), 1);
    let err =
        ThreadState::accept(&w.admin, &w.entity, &open, after, &mut SeenWraps::new()).unwrap_err();
    assert!(matches!(err, Error::Key(KeyError::StaleKeys)), "{err}");
}

#[test]
fn key_update_that_rolls_back_changes_identity_or_is_forged_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, _) = w.open_thread();
    let customer = w.customer.device();
    let old = admin_view.roster().get(customer).unwrap().bundle.clone();
    let mut refused = |updates: Vec<KeyBundle>, why: &str| {
        let err = admin_view
            .commit_with_updates(&w.admin, CommitAction::Rekey, updates, NOW, &mut w.rng)
            .unwrap_err();
        assert!(matches!(err, CommitError::KeyUpdate { .. }), "{why}: {err}");
    };
    // Same created_at (not newer), and older: a rollback.
    let mut rotated = w.customer.clone();
    rotated.rotate_kem(NOW, &mut Csprng::from_seed([3; 32]));
    refused(vec![rotated.bundle(old.created_at)], "not newer");
    refused(
        vec![rotated.bundle(Timestamp(old.created_at.0 - 1))],
        "older",
    );
    // Another identity key under the customer's device id.
    let impostor = DeviceKeys::from_seed(customer, CipherSuite::default(), &[0xee; 32]);
    refused(vec![impostor.bundle(NOW.plus(1))], "another identity");
    // A bundle whose KEM key was swapped after signing.
    let mut forged = rotated.bundle(NOW.plus(1));
    forged.kem_key = impostor.kem_public().clone();
    refused(vec![forged], "bad signature");
    // A device that is not a member, and the same device twice.
    refused(vec![w.agents[0].bundle(NOW.plus(1))], "not a member");
    refused(
        vec![rotated.bundle(NOW.plus(1)), rotated.bundle(NOW.plus(2))],
        "twice",
    );
    // A valid update goes through, and the customer applies it.
    let commit = admin_view
        .commit_with_updates(
            &w.admin,
            CommitAction::Rekey,
            vec![rotated.bundle(NOW.plus(1))],
            NOW.plus(1),
            &mut w.rng,
        )
        .unwrap();
    customer_view
        .apply_commit(&rotated, &commit, NOW.plus(1))
        .unwrap();
    assert_eq!(customer_view.roster_hash(), admin_view.roster_hash());
}

#[test]
fn key_updates_picks_only_newer_rotations_of_members() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, admin_view, _) = w.open_thread();
    let current = w.customer.bundle(NOW);
    let mut rotated = w.customer.clone();
    rotated.rotate_kem(NOW, &mut w.rng);
    let newer = rotated.bundle(NOW.plus(5));
    let newest = {
        rotated.rotate_kem(NOW.plus(6), &mut w.rng);
        rotated.bundle(NOW.plus(6))
    };
    // Same key re-signed later, an older rotation, a non-member: none of them is an update.
    assert!(
        admin_view
            .key_updates([w.customer.bundle(NOW.plus(9))])
            .is_empty()
    );
    assert!(admin_view.key_updates([current]).is_empty());
    assert!(
        admin_view
            .key_updates([w.agents[0].bundle(NOW.plus(9))])
            .is_empty()
    );
    let mut stale = newer.clone();
    stale.created_at = Timestamp(0);
    assert!(admin_view.key_updates([stale]).is_empty());
    // Of two rotations, the newest wins.
    assert_eq!(
        admin_view.key_updates([newest.clone(), newer]),
        vec![newest]
    );
}
