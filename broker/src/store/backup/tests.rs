use super::*;
use crate::store::{DeviceRecord, HistoryEntry, PresenceRecord, ReadStore, Store, StoredShadow};
use shade_shared::{ShadowId, ThingName};

fn id(thing: &str) -> ShadowId {
    ShadowId::classic(ThingName::new(thing).expect("a valid name"))
}

/// Writes one shadow, one history entry, one device and one presence
/// record of `thing`, in one transaction.
fn put_thing(store: &Store, thing: &str) {
    store
        .write(|t| {
            t.save(&id(thing), &StoredShadow::default())?;
            let entry = HistoryEntry {
                time: 1,
                author: "test".into(),
                replica: "b:local".into(),
                version: 1,
                kind: "update".into(),
                change: serde_json::json!({"desired": {"on": true}}),
            };
            t.append_history(&id(thing), &entry, 10)?;
            let device = DeviceRecord {
                hash: format!("hash-of-{thing}"),
                created_ms: 7,
            };
            t.put_device(thing, &device)?;
            let presence = PresenceRecord {
                connected: true,
                last_seen: 9,
                client_id: thing.into(),
            };
            t.put_presence(thing, &presence)
        })
        .expect("the write commits");
}

const ONE_EACH: Counts = Counts {
    shadows: 1,
    history: 1,
    devices: 1,
    presence: 1,
};

#[test]
fn a_backup_holds_every_record_and_restores_under_a_new_node_name() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(&dir.path().join("data")).expect("the store opens");
    put_thing(&store, "lamp");
    let out = dir.path().join("lamp.backup");
    let about = store
        .snapshots()
        .write(&out, 42, Some("b:local"))
        .expect("the backup is written");
    assert_eq!(about.counts, ONE_EACH);
    assert_eq!(about.node.as_deref(), Some("b:local"));
    assert_eq!(verify(&out).expect("the backup verifies"), about);

    let restored = dir.path().join("restored");
    restore(&out, &restored, "restored-1").expect("the restore succeeds");
    assert_eq!(
        node_of(&restored).expect("readable").as_deref(),
        Some("restored-1")
    );
    let back = ReadStore::open(&restored).expect("the restored data opens");
    assert_eq!(
        back.get(&id("lamp")).expect("readable"),
        Some(StoredShadow::default())
    );
    assert_eq!(back.history(&id("lamp"), 10).expect("readable").len(), 1);
    let (devices, _) = back.devices_page(None, 10).expect("readable");
    assert_eq!(devices[0].1.hash, "hash-of-lamp");
}

#[test]
fn a_backup_sees_the_state_of_its_read_transaction_while_writes_go_on() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(&dir.path().join("data")).expect("the store opens");
    put_thing(&store, "lamp");
    let txn = store.db.begin_read().expect("a read transaction");
    // Committed after the backup's transaction began: not in the backup.
    put_thing(&store, "pump");
    let out = dir.path().join("b");
    let about = write_backup(&txn, &out, 1, None).expect("the backup is written");
    assert_eq!(about.counts, ONE_EACH);
    let later = dir.path().join("later");
    let about = store.snapshots().write(&later, 2, None).expect("written");
    assert_eq!(about.counts.shadows, 2);
}

#[test]
fn a_restore_refuses_a_directory_in_use_and_a_file_that_is_not_a_backup() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().join("data");
    let store = Store::open(&data).expect("the store opens");
    put_thing(&store, "lamp");
    let out = dir.path().join("b");
    store.snapshots().write(&out, 1, None).expect("written");
    assert!(matches!(
        restore(&out, &data, "n"),
        Err(StoreError::NotEmpty(_))
    ));
    // The database itself is not a backup: it does not say what it is.
    drop(store);
    let target = dir.path().join("empty");
    assert!(matches!(
        restore(&data.join(DB_FILE), &target, "n"),
        Err(StoreError::NotABackup(..))
    ));
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a database").expect("written");
    assert!(matches!(
        restore(&junk, &target, "n"),
        Err(StoreError::NotABackup(..))
    ));
    assert!(!target.exists(), "a refused restore leaves nothing behind");
    assert!(matches!(
        store_again(&data).snapshots().write(&out, 1, None),
        Err(StoreError::Exists(_))
    ));
}

fn store_again(dir: &Path) -> Store {
    Store::open(dir).expect("the store opens again")
}
