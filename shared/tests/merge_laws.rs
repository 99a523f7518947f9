//! The merge laws of DESIGN.md ("The document and the merge laws") as
//! property tests, each over 1,000 generated cases.
//!
//! Histories are random runs of the real sync protocol between two or three
//! replicas (`b:local`, `a:d1`, `a:d2`) over a small key space, so that
//! writes collide: local writes, and sync messages computed against the
//! vector the sender last heard from the receiver (agents also send the
//! chunks of a catch-up), which the network delivers out of order,
//! duplicates, drops or replays however late. The generators are in
//! `common/mod.rs`; the simulator and the invariants it checks after every
//! step of every run (registers hold concurrent leaves only, a dropped leaf
//! never comes back, nothing covered is lost) in `common/sim.rs`.
//!
//! `A ⊔ B` below is `A.merge(&B.changes_since(&VersionVector::new()))`: the
//! join of two whole states.

mod common;

use common::{
    assert_same, delete_patch, lost_in_conflict, ops, register, renders, value_at, Msg, Op, Sim,
    Topology, POLICIES,
};
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};
use shade_shared::document::Path;
use shade_shared::merge::stable_vector;
use shade_shared::sync::{self, SyncDown, SyncUp};
use shade_shared::{Limits, Patch, Section, Shadow, VersionVector};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        ..ProptestConfig::default()
    }
}

fn skews() -> impl Strategy<Value = [u64; 3]> {
    prop::array::uniform3(0..4u64)
}

fn topology() -> impl Strategy<Value = Topology> {
    select(vec![Topology::Pair, Topology::Star, Topology::Mesh])
}

/// The states of the three replicas of a mesh after `ops`: states
/// reachable from one shared history, not yet converged.
fn three_states(ops: &[Op], skews: [u64; 3]) -> Result<[Shadow; 3], TestCaseError> {
    let mut sim = Sim::new(Topology::Mesh, skews, false);
    sim.run(ops)?;
    Ok([0, 1, 2].map(|i| sim.shadow(i).clone()))
}

/// `a ⊔ b`.
fn join(a: &Shadow, b: &Shadow) -> Result<Shadow, TestCaseError> {
    let mut out = a.clone();
    let outcome = out.merge(&b.changes_since(&VersionVector::new()));
    prop_assert!(!outcome.gap, "a whole state can never be a gap");
    Ok(out)
}

/// Runs `ops`, lets every message in flight arrive, then a full exchange
/// on every link; returns the run, with every replica asserted equal (in
/// render only when replicas collected tombstones).
fn converge(
    topology: Topology,
    skews: [u64; 3],
    collect: bool,
    ops: &[Op],
    full: bool,
) -> Result<Sim, TestCaseError> {
    converge_sim(Sim::new(topology, skews, collect), ops, full)
}

fn converge_sim(mut sim: Sim, ops: &[Op], full: bool) -> Result<Sim, TestCaseError> {
    let topology = sim.topology();
    let collect = sim.collect;
    sim.run(ops)?;
    sim.drain()?;
    sim.full_exchange(full)?;
    for i in 1..topology.replicas() {
        if collect {
            // Replicas collect on their own: until all collect with the
            // same stable vector they may differ by lone stable tombstones.
            prop_assert_eq!(renders(sim.shadow(0)), renders(sim.shadow(i)));
        } else {
            assert_same(
                sim.shadow(0),
                sim.shadow(i),
                "replicas after a full exchange",
            )?;
        }
    }
    Ok(sim)
}

proptest! {
    #![proptest_config(config())]

    // ------------------------------------------------------------ the join

    /// A ⊔ B == B ⊔ A: desired, reported, vector and every render agree.
    #[test]
    fn merge_is_commutative(ops in ops(0..40, false), skews in skews()) {
        let [a, b, c] = three_states(&ops, skews)?;
        for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
            assert_same(&join(x, y)?, &join(y, x)?, "A ⊔ B vs B ⊔ A")?;
        }
    }

    /// (A ⊔ B) ⊔ C == A ⊔ (B ⊔ C).
    #[test]
    fn merge_is_associative(ops in ops(0..40, false), skews in skews()) {
        let [a, b, c] = three_states(&ops, skews)?;
        assert_same(
            &join(&join(&a, &b)?, &c)?,
            &join(&a, &join(&b, &c)?)?,
            "(A ⊔ B) ⊔ C vs A ⊔ (B ⊔ C)",
        )?;
        assert_same(
            &join(&join(&c, &a)?, &b)?,
            &join(&c, &join(&a, &b)?)?,
            "(C ⊔ A) ⊔ B vs C ⊔ (A ⊔ B)",
        )?;
    }

    /// A ⊔ A == A; (A ⊔ B) ⊔ B == A ⊔ B; and a sync message merged twice
    /// leaves the state it left when merged once, changing nothing the
    /// second time.
    #[test]
    fn merge_is_idempotent(ops in ops(0..40, false), skews in skews()) {
        let [a, b, c] = three_states(&ops, skews)?;
        for x in [&a, &b, &c] {
            assert_same(&join(x, x)?, x, "A ⊔ A vs A")?;
        }
        let ab = join(&a, &b)?;
        assert_same(&join(&ab, &b)?, &ab, "(A ⊔ B) ⊔ B vs A ⊔ B")?;
        assert_same(&join(&ab, &a)?, &ab, "(A ⊔ B) ⊔ A vs A ⊔ B")?;
        for msg in [b.changes_since(a.vv()), c.changes_since(&VersionVector::new())] {
            let mut once = a.clone();
            prop_assert!(!once.merge(&msg).gap);
            let mut twice = once.clone();
            let again = twice.merge(&msg);
            prop_assert!(again.is_empty() && !again.gap, "second merge changed {:?}", again);
            assert_same(&twice, &once, "a message merged twice vs once")?;
        }
    }

    // ---------------------------------------------------------- convergence

    /// The broker and one agent, under any interleaving of writes and any
    /// loss, duplication, reordering and replay of their messages, hold
    /// equal shadows and renders once all messages get through.
    #[test]
    fn two_replicas_converge_under_loss_duplication_and_reordering(
        ops in ops(0..60, false),
        skews in skews(),
        full in any::<bool>(),
    ) {
        converge(Topology::Pair, skews, false, &ops, full)?;
    }

    /// Two agents that only talk to the broker converge with it and with
    /// each other.
    #[test]
    fn three_replicas_converge_through_the_broker_under_loss_duplication_and_reordering(
        ops in ops(0..60, false),
        skews in skews(),
        full in any::<bool>(),
    ) {
        converge(Topology::Star, skews, false, &ops, full)?;
    }

    /// Three replicas where every pair syncs directly converge.
    #[test]
    fn three_replicas_converge_in_a_full_mesh_under_loss_duplication_and_reordering(
        ops in ops(0..60, false),
        skews in skews(),
        full in any::<bool>(),
    ) {
        converge(Topology::Mesh, skews, false, &ops, full)?;
    }

    // ------------------------------------------------------- nothing is lost

    /// Once the broker has merged a write (its vector covers the write's
    /// dot, which is what `SyncDown` acknowledges), every leaf of that write
    /// survives in the converged state unless a write that had *seen* it
    /// replaced it: for each leaf `(section, path, dot d)` either
    ///
    /// - the register at that path still holds it, and every render shows
    ///   its value at that path or lists it as a conflict's losing side, or
    /// - the register holds a leaf whose writer's vector covered `d`.
    ///
    /// A concurrent write never silently drops it. The same holds at every
    /// replica after every step of the run (`Sim::check_invariants`).
    #[test]
    fn no_write_acknowledged_by_the_broker_is_lost_to_a_concurrent_write(
        ops in ops(0..60, false),
        skews in skews(),
        topology in topology(),
        full in any::<bool>(),
    ) {
        let sim = converge(topology, skews, false, &ops, full)?;
        let broker = sim.shadow(0);
        let rendered = renders(broker);
        for w in &sim.writes {
            prop_assert!(broker.vv().covers(&w.dot), "the broker never merged {:?}", w.dot);
            for (section, path, leaf) in &w.leaves {
                let reg = register(broker, *section, path);
                if reg.contains(leaf) {
                    if leaf.is_tombstone() {
                        continue;
                    }
                    for (i, _) in POLICIES.iter().enumerate() {
                        let r = &rendered[&(*section, i)];
                        prop_assert!(
                            value_at(&r.state, path) == Some(&leaf.json())
                                || lost_in_conflict(r, path, leaf),
                            "{:?} at {:?} {:?} is held but neither shown nor a conflict: {:?}",
                            leaf, section, path, r
                        );
                    }
                } else {
                    prop_assert!(
                        reg.iter().any(|l| sim.saw(&l.dot, &w.dot)),
                        "{:?} at {:?} {:?} was dropped by a concurrent write: {:?}",
                        leaf, section, path, reg
                    );
                }
            }
        }
    }

    // ------------------------------------------------- deletes stay deleted

    /// Replica X writes `v` at `k`, replica Y receives it, X deletes `k`;
    /// then Y, which has not seen the delete, sends what it holds, and every
    /// message ever sent (those from before the delete included) is
    /// replayed to X among random further steps. At no point does X render
    /// `v` at `k` unless a leaf the delete had not seen holds `v`: a write
    /// made concurrently with the delete or after it.
    #[test]
    fn a_deleted_value_never_comes_back_from_a_stale_replica(
        before in ops(0..30, false),
        after in prop::collection::vec((ops(1..3, false), any::<usize>()), 0..15),
        skews in skews(),
        (x, y) in select(vec![(0usize, 1usize), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)]),
        key in select(vec![vec!["a"], vec!["b"], vec!["a", "x"], vec!["a", "y", "x"]]),
        section in select(vec![Section::Desired, Section::Reported]),
        v in (0i64..4).prop_map(Value::from),
        clear in prop::bool::weighted(0.2),
    ) {
        let k: Vec<String> = key.iter().map(|s| (*s).to_owned()).collect();
        let kp = Path::from(k.clone());
        let mut sim = Sim::new(Topology::Mesh, skews, false);
        sim.run(&before)?;
        let written = sim.write(x, section, &set_patch(&k, v.clone()));
        prop_assert!(written.is_some(), "a scalar write always writes");
        let to_y = sim.message(x, y, false, None);
        sim.deliver(&to_y)?;
        prop_assert!(register(sim.shadow(y), section, &kp).iter().any(|l| l.json() == v));
        // What the stale Y holds, as it would send it: against the last
        // vector it heard from X, and whole.
        let mut stale: Vec<Msg> = vec![sim.message(y, x, false, None), sim.message(y, x, true, None)];
        let patch = if clear { Patch::Clear } else { delete_patch(&k) };
        let Some(delete) = sim.write(x, section, &patch) else {
            return Err(TestCaseError::fail("the delete wrote nothing"));
        };
        let seen_by_delete = sim
            .write_of(&delete)
            .map(|w| w.ctx.clone())
            .ok_or_else(|| TestCaseError::fail("the delete is recorded"))?;
        stale.push(sim.message(y, x, false, None));
        stale.push(sim.message(y, x, true, None));
        stale.extend(sim.sent.iter().filter(|m| m.from == y && m.to == x).cloned());
        let check = |sim: &Sim| -> Result<(), TestCaseError> {
            let sx = sim.shadow(x);
            for policy in POLICIES {
                let r = sx.render(section, policy);
                if value_at(&r.state, &kp) == Some(&v) {
                    let anew = register(sx, section, &kp)
                        .iter()
                        .any(|l| l.json() == v && !seen_by_delete.covers(&l.dot));
                    prop_assert!(anew, "X renders the deleted {} at {:?} again: {:?}", v, k, r);
                }
            }
            Ok(())
        };
        check(&sim)?;
        for (i, m) in stale.clone().iter().enumerate() {
            sim.deliver(m)?;
            sim.check_invariants()?;
            check(&sim)?;
            // Y keeps sending what it holds, seen the delete or not.
            stale.push(sim.message(y, x, i % 2 == 0, None));
        }
        for (steps, pick) in &after {
            sim.run(steps)?;
            check(&sim)?;
            let m = stale[pick % stale.len()].clone();
            sim.deliver(&m)?;
            sim.check_invariants()?;
            check(&sim)?;
        }
        sim.drain()?;
        sim.full_exchange(false)?;
        check(&sim)?;
    }

    // --------------------------------------------------------- tombstones

    /// Replicas collect tombstones at random points, each with the stable
    /// vector it may soundly use (the minimum of the vectors it has merged
    /// the states of; see `common`). Compared with the same run without
    /// collection, the converged renders are equal. After the final
    /// exchange, collecting with the stable vector of all replicas' vectors
    /// changes no render, leaves the replicas equal to each other and to the
    /// run without collection (collected the same way), and leaves no lone
    /// tombstone the stable vector covers.
    #[test]
    fn collecting_stable_tombstones_never_changes_the_converged_render(
        ops in ops(0..80, true),
        skews in skews(),
        topology in topology(),
        full in any::<bool>(),
    ) {
        let mut with = converge(topology, skews, true, &ops, full)?;
        // The same run without collection; the convergence tests check its
        // invariants already.
        let mut without = Sim::new(topology, skews, false);
        without.checks = false;
        let mut without = converge_sim(without, &ops, full)?;
        prop_assert_eq!(renders(with.shadow(0)), renders(without.shadow(0)));
        for sim in [&mut with, &mut without] {
            let before = renders(sim.shadow(0));
            let stable = stable_vector(sim.replicas.iter().map(|r| r.shadow.vv()));
            for r in &mut sim.replicas {
                r.shadow.collect_tombstones(&stable);
                prop_assert_eq!(&renders(&r.shadow), &before, "collection changed a render");
                for s in Section::ALL {
                    for (path, reg) in r.shadow.section(s) {
                        prop_assert!(
                            !(reg.len() == 1 && reg[0].is_tombstone() && stable.covers(&reg[0].dot)),
                            "a stable lone tombstone is left at {:?} {:?}", s, path
                        );
                    }
                }
            }
            for i in 1..sim.replicas.len() {
                assert_same(sim.shadow(0), sim.shadow(i), "replicas after collection")?;
            }
        }
        assert_same(with.shadow(0), without.shadow(0), "collected during the run or only at the end")?;
    }

    // -------------------------------------------------------- encodings

    /// A shadow comes back equal from CBOR (`sync::encode`/`decode`, as
    /// stored and synced) and from serde_json: merged state, `version`,
    /// `exists`, clock, renders, and what it would send a peer (its dot
    /// index is rebuilt on load).
    #[test]
    fn shadow_round_trips_through_cbor_and_json(
        ops in ops(0..40, false),
        skews in skews(),
        version in any::<u64>(),
    ) {
        let states = three_states(&ops, skews)?;
        for mut s in states {
            s.version = version;
            let cbor = sync::encode(&s).map_err(fail)?;
            let from_cbor: Shadow = sync::decode(&cbor, Limits::default().max_depth).map_err(fail)?;
            let json = serde_json::to_vec(&s).map_err(fail)?;
            let from_json: Shadow = serde_json::from_slice(&json).map_err(fail)?;
            for back in [&from_cbor, &from_json] {
                assert_same(back, &s, "a shadow after a round trip")?;
                prop_assert_eq!(back.version, s.version);
                prop_assert_eq!(back.exists, s.exists);
                prop_assert_eq!(back.clock(), s.clock());
                for peer in [VersionVector::new(), s.vv().clone()] {
                    prop_assert_eq!(back.changes_since(&peer), s.changes_since(&peer));
                }
            }
        }
    }

    /// `SyncUp` and `SyncDown` come back equal from their CBOR.
    #[test]
    fn sync_messages_round_trip_through_cbor(
        ops in ops(0..40, false),
        skews in skews(),
        version in any::<u64>(),
    ) {
        let [a, b, c] = three_states(&ops, skews)?;
        let depth = Limits::default().max_depth;
        for changes in [a.changes_since(&VersionVector::new()), b.changes_since(a.vv())] {
            let up = SyncUp { replica: common::replica_ids(2)[1].clone(), changes: changes.clone() };
            let back = SyncUp::from_cbor(&up.to_cbor(), depth).map_err(fail)?;
            prop_assert_eq!(back, up);
            let down = SyncDown {
                replica: common::replica_ids(1)[0].clone(),
                version,
                changes: changes.clone(),
                stable: stable_vector([a.vv(), b.vv(), c.vv()]),
            };
            let back = SyncDown::from_cbor(&down.to_cbor(), depth).map_err(fail)?;
            prop_assert_eq!(back, down);
        }
    }

    /// Arbitrary bytes fed to the decoders give an error or a value, never
    /// a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    /// Valid encodings of shadows and sync messages, with bytes flipped,
    /// set, inserted, removed or cut off, give an error or a value, never a
    /// panic; whatever decodes can be merged, rendered and synced from
    /// without a panic either.
    #[test]
    fn mutated_encodings_never_panic_the_decoders(
        ops in ops(0..25, false),
        which in 0..3usize,
        mutations in prop::collection::vec((0..5u8, any::<usize>(), any::<u8>()), 1..6),
    ) {
        let [a, b, _] = three_states(&ops, [0, 1, 2])?;
        let changes = a.changes_since(&VersionVector::new());
        let mut bytes = match which {
            0 => sync::encode(&a).map_err(fail)?,
            1 => SyncUp { replica: common::replica_ids(2)[1].clone(), changes }.to_cbor(),
            _ => SyncDown {
                replica: common::replica_ids(1)[0].clone(),
                version: 7,
                changes,
                stable: a.vv().clone(),
            }.to_cbor(),
        };
        for (kind, at, byte) in mutations {
            mutate(&mut bytes, kind, at, byte);
        }
        let (shadow, up, down) = decode_all(&bytes);
        if let Some(s) = shadow {
            let _ = renders(&s);
            let _ = s.changes_since(b.vv());
            let mut t = b.clone();
            t.merge(&s.changes_since(&VersionVector::new()));
        }
        for changes in up.map(|u| u.changes).into_iter().chain(down.map(|d| d.changes)) {
            let mut t = b.clone();
            t.merge(&changes);
            let _ = renders(&t);
            let _ = t.changes_since(&VersionVector::new());
        }
    }
}

/// `{"a": {"x": v}}` for the path `a.x`.
fn set_patch(path: &[String], v: Value) -> Patch {
    let mut value = v;
    for key in path.iter().rev() {
        let mut m = Map::new();
        m.insert(key.clone(), value);
        value = Value::Object(m);
    }
    match value {
        Value::Object(m) => Patch::Merge(m),
        _ => Patch::Clear,
    }
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Decodes `bytes` as each message type the broker and agents read.
fn decode_all(bytes: &[u8]) -> (Option<Shadow>, Option<SyncUp>, Option<SyncDown>) {
    let depth = Limits::default().max_depth;
    let _ = serde_json::from_slice::<Shadow>(bytes);
    (
        sync::decode::<Shadow>(bytes, depth).ok(),
        SyncUp::from_cbor(bytes, depth).ok(),
        SyncDown::from_cbor(bytes, depth).ok(),
    )
}

fn mutate(bytes: &mut Vec<u8>, kind: u8, at: usize, byte: u8) {
    if bytes.is_empty() {
        bytes.push(byte);
        return;
    }
    let i = at % bytes.len();
    match kind {
        0 => bytes[i] ^= 1 << (byte % 8),
        1 => bytes[i] = byte,
        2 => bytes.insert(i, byte),
        3 => {
            bytes.remove(i);
        }
        _ => bytes.truncate(i),
    }
}
