//! Restarts from the keystore, and the keystore's protection at rest.

use switchboard_client::{ClientError, Device, KeystoreError, KeystoreSecret};
use switchboard_protocol::{CommitAction, Content, Sender};

use crate::{Cast, events, messages, secret};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_restarts_mid_conversation_and_it_continues() {
    let mut cast = Cast::new().await;
    let mut bot = cast.agent("bot").await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    cast.customer
        .send(thread, &Content::text("first"), None)
        .await
        .unwrap();
    events(&mut cast.admin, 2).await;
    cast.assign_bot(thread, &mut bot).await;
    bot.send(thread, &Content::text("hello from the bot"), None)
        .await
        .unwrap();
    events(&mut cast.customer, 1).await;

    // Everyone stops (the keystore locks are released) and starts again from disk.
    let paths = [
        cast.dir.join("admin.keystore"),
        cast.dir.join("customer.keystore"),
        cast.dir.join("bot.keystore"),
    ];
    let cursors = (cast.admin.cursor(), cast.customer.cursor(), bot.cursor());
    drop((cast.admin, cast.customer, bot));
    let mut admin = Device::open(&paths[0], &secret(), None).await.unwrap();
    let mut customer = Device::open(&paths[1], &secret(), None).await.unwrap();
    let mut bot = Device::open(&paths[2], &secret(), None).await.unwrap();
    assert_eq!((admin.cursor(), customer.cursor(), bot.cursor()), cursors);

    // Nothing is delivered twice, and new messages use fresh generations (a reused one would
    // be refused as a duplicate by the receivers).
    customer
        .send(thread, &Content::text("second"), None)
        .await
        .unwrap();
    let at_bot = events(&mut bot, 1).await;
    assert_eq!(messages(&at_bot)[0].content, Content::text("second"));
    bot.send(thread, &Content::text("second reply"), None)
        .await
        .unwrap();
    let at_customer = events(&mut customer, 1).await;
    assert!(matches!(
        &messages(&at_customer)[0].sender_info,
        Sender::Agent { display_name, .. } if display_name == "OrderBot"
    ));
    let at_admin = events(&mut admin, 3).await; // the bot's first reply, "second", its reply
    assert_eq!(messages(&at_admin).len(), 3);
    // The restarted admin still holds the thread and can change its roster.
    admin.commit(thread, CommitAction::Rekey).await.unwrap();
    events(&mut bot, 1).await;
    events(&mut customer, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystore_holds_no_plaintext_secret_and_refuses_misuse() {
    let mut cast = Cast::new().await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    let text = "my card number is 4111 1111 1111 1111";
    cast.customer
        .send(thread, &Content::text(text), None)
        .await
        .unwrap();
    events(&mut cast.admin, 2).await;
    let path = cast.dir.join("customer.keystore");

    // What must not appear in the file: the device seed and the thread's epoch secret, raw or
    // in any encoding the contents use, nor the message text.
    let file = std::fs::read(&path).unwrap();
    let seed = *cast.customer.keys().seed();
    let state = cast.customer.thread(thread).unwrap();
    let epoch_secret = *state.epoch_secret(state.epoch()).unwrap().as_bytes();
    let b64 = |bytes: &[u8]| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    for secret_bytes in [&seed[..], &epoch_secret[..]] {
        assert!(!contains(&file, secret_bytes));
        assert!(!contains(&file, b64(secret_bytes).as_bytes()));
        assert!(!contains(&file, hex(secret_bytes).as_bytes()));
    }
    assert!(!contains(&file, text.as_bytes()));
    // The admin's keystore does not hold it either (the admin reads the message but keeps
    // only keys).
    let admin_file = std::fs::read(cast.dir.join("admin.keystore")).unwrap();
    assert!(!contains(&admin_file, b64(&epoch_secret).as_bytes()));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // While the device runs, a second process cannot open its keystore.
    assert!(matches!(
        Device::open(&path, &secret(), None).await,
        Err(ClientError::Keystore(KeystoreError::Locked(_)))
    ));
    drop(cast.customer);
    // Wrong passphrase.
    assert!(matches!(
        Device::open(&path, &KeystoreSecret::passphrase("wrong"), None).await,
        Err(ClientError::Keystore(KeystoreError::Decrypt(_)))
    ));
    // An altered file: flip one character of the ciphertext.
    let original = std::fs::read_to_string(&path).unwrap();
    let at = original.find("\"ciphertext\":\"").unwrap() + 20;
    let mut altered = original.clone().into_bytes();
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, &altered).unwrap();
    assert!(matches!(
        Device::open(&path, &secret(), None).await,
        Err(ClientError::Keystore(KeystoreError::Decrypt(_)))
    ));
    std::fs::write(&path, original).unwrap();
    // Readable by others: refused with the fix in the message.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Device::open(&path, &secret(), None).await.unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // And with everything right, it opens and still holds the thread.
    let customer = Device::open(&path, &secret(), None).await.unwrap();
    assert!(customer.thread(thread).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_keystores_work_and_refuse_the_wrong_key() {
    let dir = crate::scratch();
    let server = crate::relay().await;
    let relay = server.url();
    let key = KeystoreSecret::create_key_file(&dir.join("device.key")).unwrap();
    assert!(
        KeystoreSecret::create_key_file(&dir.join("device.key")).is_err(),
        "never overwrites a key file"
    );
    let path = dir.join("bot.keystore");
    let device = Device::create(
        &path,
        &key,
        switchboard_client::NewDevice::new(&relay, switchboard_client::NewRole::Customer),
    )
    .await
    .unwrap();
    let id = device.id();
    drop(device);
    assert_eq!(Device::open(&path, &key, None).await.unwrap().id(), id);
    let other = KeystoreSecret::create_key_file(&dir.join("other.key")).unwrap();
    assert!(matches!(
        Device::open(&path, &other, None).await,
        Err(ClientError::Keystore(KeystoreError::Decrypt(_)))
    ));
    // A passphrase for a key-file keystore is a clear error, not a decryption failure.
    let err = Device::open(&path, &secret(), None).await.unwrap_err();
    assert!(err.to_string().contains("key file"), "{err}");
    // Creating over an existing keystore is refused.
    assert!(matches!(
        Device::create(
            &path,
            &key,
            switchboard_client::NewDevice::new(&relay, switchboard_client::NewRole::Customer),
        )
        .await,
        Err(ClientError::Keystore(KeystoreError::Exists { .. }))
    ));
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every mutation of a keystore file (bit flips, truncations, insertions, JSON tokens) is
/// refused with an error, or opens to the same contents: never a panic, never other contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_keystore_files_are_refused_not_misread() {
    use switchboard_client::{KdfCost, Keystore};
    let dir = crate::scratch();
    let key = KeystoreSecret::create_key_file(&dir.join("k.key")).unwrap();
    let path = dir.join("k.keystore");
    let contents = br#"{"hello":"world"}"#;
    drop(
        Keystore::create(&path, &key, KdfCost::default(), contents)
            .await
            .unwrap(),
    );
    let original = std::fs::read(&path).unwrap();
    let mut rng = switchboard_protocol::Csprng::from_seed([9; 32]);
    let tokens: [&[u8]; 6] = [
        b"null",
        b"{}",
        b"[]",
        b"\"\"",
        b"-1",
        b"99999999999999999999",
    ];
    for round in 0..300u32 {
        let [op, a, b, c] = rng.array::<4>();
        let mut bytes = original.clone();
        let at = (usize::from(a) << 8 | usize::from(b)) % bytes.len();
        match op % 4 {
            0 => bytes[at] ^= 1 << (c % 8),
            1 => bytes.truncate(at),
            2 => bytes.insert(at, c),
            _ => {
                let token = tokens[usize::from(c) % tokens.len()];
                bytes.splice(at..at, token.iter().copied());
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        match Keystore::open(&path, &key).await {
            Ok((_, opened)) => assert_eq!(
                opened.as_slice(),
                contents,
                "round {round}: a changed file opened to other contents"
            ),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Two keystores whose names differ only after the first dot (`a.keystore`, `a.ks`) in one
/// directory save at the same moments: each save uses its own temporary file, so neither fails
/// and neither keystore is ever replaced by the other's contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystores_sharing_a_stem_never_replace_each_other() {
    use std::sync::{Arc, Barrier};
    use switchboard_client::{KdfCost, Keystore};
    const ROUNDS: usize = 40;
    let dir = crate::scratch();
    let key = KeystoreSecret::create_key_file(&dir.join("k.key")).unwrap();
    let paths = [dir.join("a.keystore"), dir.join("a.ks")];
    let mut stores = Vec::new();
    for path in &paths {
        stores.push(
            Keystore::create(path, &key, KdfCost::default(), b"{}")
                .await
                .unwrap(),
        );
    }
    let barrier = Arc::new(Barrier::new(2));
    let workers: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(who, mut store)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for round in 0..ROUNDS {
                    barrier.wait();
                    let contents = format!(r#"{{"who":{who},"round":{round}}}"#);
                    if let Err(e) = store.save(contents.as_bytes()) {
                        failures.push(format!("round {round}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    for (who, worker) in workers.into_iter().enumerate() {
        let failures = worker.join().unwrap();
        assert!(
            failures.is_empty(),
            "saves of keystore {who} failed: {failures:?}"
        );
    }
    for (who, path) in paths.iter().enumerate() {
        let (_store, contents) = Keystore::open(path, &key).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&contents).unwrap(),
            format!(r#"{{"who":{who},"round":{}}}"#, ROUNDS - 1),
            "{} holds another keystore's contents",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_save_fails_the_send_and_nothing_is_posted() {
    let mut cast = Cast::new().await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    cast.customer
        .send(thread, &Content::text("first"), None)
        .await
        .unwrap();
    assert_eq!(messages(&events(&mut cast.admin, 2).await).len(), 1);

    // The keystore path becomes a directory: the atomic replace (rename over it) fails, even
    // for root, so the new generation cannot reach the disk.
    let path = cast.dir.join("customer.keystore");
    std::fs::rename(&path, cast.dir.join("customer.keystore.moved")).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = cast
        .customer
        .send(thread, &Content::text("never posted"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Keystore(KeystoreError::Io { .. })),
        "{err:?}"
    );

    // `send` returned only after the post would have finished, so the relay would hold it now.
    let at_admin = cast.admin.receive(std::time::Duration::ZERO).await.unwrap();
    assert!(messages(&at_admin).is_empty(), "{at_admin:?}");
}
