//! KEM key rotation through the client and a real relay: a keystore file copied by an attacker
//! before a rotation, or after the grace period, does not open what is wrapped later, or what
//! the relay stored for the deleted key.

use std::time::Duration;

use switchboard_client::{Device, Event, KemRotation};
use switchboard_protocol::{
    CommitAction, Content, ExpectedWrap, Floor, SeenWraps, ThreadState, WrapError,
};

use crate::{Cast, events, secret};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystore_copied_before_rotation_cannot_read_after_the_admin_rekeys() {
    let mut cast = Cast::new().await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    events(&mut cast.admin, 1).await;

    // The attacker copies the customer's keystore file (and knows its passphrase).
    let stolen_path = cast.dir.join("stolen.keystore");
    std::fs::copy(cast.dir.join("customer.keystore"), &stolen_path).unwrap();
    let stolen = Device::open(&stolen_path, &secret(), None).await.unwrap();
    let mut stolen_view =
        ThreadState::restore(stolen.keys(), stolen.thread(thread).unwrap().snapshot()).unwrap();

    // The customer rotates; the admin sees it and rekeys the thread to the new key.
    let before = cast.customer.bundle();
    let published = cast.customer.rotate_kem().await.unwrap();
    assert!(published.created_at > before.created_at);
    assert_ne!(published.kem_key, before.kem_key);
    assert_eq!(
        cast.admin
            .relay()
            .device_bundle(cast.customer.id())
            .await
            .unwrap(),
        published
    );
    let rekeyed = cast.admin.rekey_rotated_members().await.unwrap();
    assert_eq!(
        rekeyed.len(),
        1,
        "the admin rekeys the thread whose member rotated"
    );
    // Every commit wraps to current keys: this one (after the rekey) too.
    let commit = cast
        .admin
        .commit(thread, CommitAction::Rekey)
        .await
        .unwrap();
    assert_eq!(
        commit.roster.get(cast.customer.id()).unwrap().bundle,
        published
    );
    let got = events(&mut cast.customer, 2).await;
    assert!(
        got.iter().all(|e| matches!(e, Event::RosterChanged { .. })),
        "{got:?}"
    );

    // The copy made before the rotation cannot follow: it holds only the old key.
    let state = cast.admin.thread(thread).unwrap();
    let first = rekeyed[0].1;
    assert_eq!(commit.epoch, first.next().unwrap());
    assert!(state.epoch_secret(commit.epoch).is_some());
    let wrap = commit.wrap_for(cast.customer.id()).unwrap();
    let admin_key = cast.admin.keys().identity_public();
    let err = wrap
        .open(
            stolen.keys(),
            &ExpectedWrap {
                sender: cast.admin.id(),
                sender_key: &admin_key,
                thread,
                epoch: commit.epoch,
                roster_hash: commit.roster.hash(),
            },
            switchboard_client::now(),
            &mut SeenWraps::new(),
        )
        .unwrap_err();
    assert!(matches!(err, WrapError::UnknownKemKey { .. }), "{err}");
    assert!(stolen_view.epoch() < commit.epoch);
    let reply = cast
        .admin
        .send(thread, &Content::text("a new card is on its way"), None)
        .await
        .unwrap();
    assert!(
        stolen_view
            .open_message(&reply, switchboard_client::now())
            .is_err()
    );
    let got = events(&mut cast.customer, 1).await;
    assert!(matches!(got[0], Event::Message { .. }), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystore_copied_after_the_grace_period_cannot_open_wraps_to_the_deleted_key() {
    let mut cast = Cast::new().await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    events(&mut cast.admin, 1).await;
    // Epoch 1 is wrapped to the customer's first key; the relay stores the commit.
    let stored = cast
        .admin
        .commit(thread, CommitAction::Rekey)
        .await
        .unwrap();
    events(&mut cast.customer, 1).await;
    let first_key = cast.customer.bundle().kem_key;

    // No grace: the retired key is deleted at the next upkeep.
    cast.customer.set_kem_rotation(KemRotation {
        grace: Duration::ZERO,
        ..KemRotation::default()
    });
    cast.customer.rotate_kem().await.unwrap();
    assert!(cast.customer.keys().holds_kem_key(&first_key));
    cast.customer.maintain_keys().await.unwrap();
    assert!(!cast.customer.keys().holds_kem_key(&first_key));

    // What the attacker copies now (the file on disk) does not hold the deleted key.
    drop(cast.customer);
    let path = cast.dir.join("customer.keystore");
    let captured = Device::open(&path, &secret(), None).await.unwrap();
    assert!(!captured.keys().holds_kem_key(&first_key));
    assert_eq!(captured.keys().retired_kem_keys().count(), 0);
    let admin_key = cast.admin.keys().identity_public();
    let err = stored
        .wrap_for(captured.id())
        .unwrap()
        .open(
            captured.keys(),
            &ExpectedWrap {
                sender: cast.admin.id(),
                sender_key: &admin_key,
                thread,
                epoch: stored.epoch,
                roster_hash: stored.roster.hash(),
            },
            switchboard_client::now(),
            &mut SeenWraps::new(),
        )
        .unwrap_err();
    assert!(matches!(err, WrapError::UnknownKemKey { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_rotates_after_the_configured_number_of_epochs_and_stays_reachable() {
    let mut cast = Cast::new().await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    events(&mut cast.admin, 1).await;
    cast.customer.set_kem_rotation(KemRotation {
        after_epochs: 2,
        ..KemRotation::default()
    });
    let first = cast.customer.bundle();
    // Rekeys do not count (a sweep rekeying every thread of a rotated member must not make it
    // rotate again); other roster commits do.
    cast.admin
        .commit(thread, CommitAction::Rekey)
        .await
        .unwrap();
    for _ in 0..2 {
        cast.admin
            .commit(
                thread,
                CommitAction::SetFloor {
                    floor: Floor::Admin,
                },
            )
            .await
            .unwrap();
    }
    events(&mut cast.customer, 3).await;
    // The next receive runs the upkeep: two epochs applied, so it rotates and publishes.
    cast.customer.receive(Duration::from_secs(0)).await.unwrap();
    let published = cast
        .admin
        .relay()
        .device_bundle(cast.customer.id())
        .await
        .unwrap();
    assert_ne!(published.kem_key, first.kem_key);
    assert_eq!(published, cast.customer.bundle());
    // The admin's next commit is wrapped to the new key, and the customer follows it.
    let commit = cast
        .admin
        .commit(thread, CommitAction::Rekey)
        .await
        .unwrap();
    assert_eq!(
        commit.wrap_for(cast.customer.id()).unwrap().recipient_key,
        published.kem_key_id()
    );
    let got = events(&mut cast.customer, 1).await;
    assert!(matches!(got[0], Event::RosterChanged { .. }), "{got:?}");
    // The rotated key survives a restart (it is in the keystore).
    let key = cast.customer.bundle();
    drop(cast.customer);
    let reopened = Device::open(&cast.dir.join("customer.keystore"), &secret(), None)
        .await
        .unwrap();
    assert_eq!(reopened.bundle(), key);
}

/// A rotation whose bundle never reached the relay: senders still wrap to the old key (all the
/// relay serves), so the device must keep it past the grace period until the new bundle is
/// published (and count the grace from then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_is_kept_while_its_successor_is_unpublished() {
    let cast = Cast::new().await;
    let mut customer = cast.customer;
    customer.set_kem_rotation(KemRotation {
        grace: Duration::ZERO,
        ..KemRotation::default()
    });
    let old = customer.bundle().kem_key;
    // The relay goes away before the rotation can be published.
    drop(cast.server);
    assert!(customer.rotate_kem().await.is_err(), "publishing must fail");
    assert_ne!(customer.keys().kem_public(), &old, "the rotation stands");
    assert!(customer.maintain_keys().await.is_err());
    assert!(
        customer.keys().holds_kem_key(&old),
        "the old key was deleted although the relay still serves it"
    );
}
