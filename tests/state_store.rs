//! The DynamoDB state store and lease, called directly against both DynamoDB implementations
//! of the test kit (moto and dynalite): conditional saves, the lease taken, renewed, refused,
//! expired and handed over with a rising epoch, release, and the table check. Each scenario runs
//! once per implementation, so a behaviour only one of them has fails one of the pair.

use std::time::Duration;

use dynamo_failover::adapters::state_dynamodb::DynamoStore;
use dynamo_failover::failover::machine::Policy;
use dynamo_failover::failover::state::State;
use dynamo_failover::ports::{Lease, LeaseError, StateStore, StoreError};
use testkit::{client, create_table, Ddb, DdbServer};

const TABLE: &str = "dynamo-failover-state";
const LEASE: Duration = Duration::from_secs(3);

testkit::on_both!(
    saves_are_conditional_on_the_version_read,
    the_lease_is_renewed_by_its_holder_refused_to_others_and_handed_over_after_expiry,
    a_released_lease_is_taken_at_once,
    the_table_check_accepts_a_single_region_table_and_names_a_missing_one,
    an_unreachable_store_is_unavailable_not_a_conflict,
);

async fn store(kind: Ddb) -> (DdbServer, DynamoStore) {
    let server = DdbServer::start(kind).await;
    let c = client("eu-west-1", &server.endpoint()).await;
    create_table(&c, TABLE, false).await;
    let s = DynamoStore::new(c, TABLE, Duration::from_secs(2));
    (server, s)
}

fn policy() -> Policy {
    Policy {
        regions: vec!["us-east-1".into(), "us-west-2".into()],
        min_interval_ms: 0,
        stabilisation_ms: 0,
        auto_failback: true,
        retry_backoff_ms: 0,
        live_check_cooldown_ms: 0,
        alert_expiry_ms: 1_200_000,
        agents: Default::default(),
    }
}

async fn saves_are_conditional_on_the_version_read(kind: Ddb) {
    let (_server, s) = store(kind).await;
    assert!(s.load().await.unwrap().is_none());
    let mut state = State::initial(&policy(), 1_000);
    assert_eq!(s.save(&state, 0).await.unwrap(), 1);
    // A second first save (another replica that also saw nothing) is refused.
    assert!(
        matches!(s.save(&state, 0).await, Err(StoreError::Conflict { .. })),
        "{kind:?}"
    );
    state.epoch = 7;
    assert_eq!(s.save(&state, 1).await.unwrap(), 2);
    // A save over a version that is no longer there is refused and changes nothing.
    let mut stale = state.clone();
    stale.epoch = 99;
    assert!(
        matches!(s.save(&stale, 1).await, Err(StoreError::Conflict { .. })),
        "{kind:?}"
    );
    let got = s.load().await.unwrap().unwrap();
    assert_eq!(got.version, 2);
    assert_eq!(got.state, state);
}

async fn the_lease_is_renewed_by_its_holder_refused_to_others_and_handed_over_after_expiry(
    kind: Ddb,
) {
    let (_server, s) = store(kind).await;
    let t0 = 1_000_000;
    let a = s.acquire("r0", t0, LEASE).await.unwrap();
    assert_eq!(a.epoch, 1, "{kind:?}");
    assert_eq!(a.expires_at_ms, t0 + 3_000);
    // Another replica is refused while it is valid, even one millisecond before expiry.
    for t in [t0 + 1, t0 + 2_999, t0 + 3_000] {
        assert!(
            matches!(
                s.acquire("r1", t, LEASE).await,
                Err(LeaseError::HeldElsewhere)
            ),
            "{kind:?} at {t}"
        );
    }
    // The holder renews: same epoch, later expiry.
    let renewed = s.acquire("r0", t0 + 2_000, LEASE).await.unwrap();
    assert_eq!((renewed.epoch, renewed.expires_at_ms), (1, t0 + 5_000));
    // Expired: the next replica takes it, and the epoch rises (the fencing token).
    let b = s.acquire("r1", t0 + 5_001, LEASE).await.unwrap();
    assert_eq!(b.epoch, 2, "{kind:?}");
    // The old holder cannot renew any more, nor take it back while it is valid.
    assert!(
        matches!(
            s.acquire("r0", t0 + 5_002, LEASE).await,
            Err(LeaseError::HeldElsewhere)
        ),
        "{kind:?}"
    );
}

async fn a_released_lease_is_taken_at_once(kind: Ddb) {
    let (_server, s) = store(kind).await;
    let t0 = 5_000_000;
    assert_eq!(s.acquire("r0", t0, LEASE).await.unwrap().epoch, 1);
    // Only the holder can release it.
    s.release("r1").await;
    assert!(matches!(
        s.acquire("r1", t0 + 1, LEASE).await,
        Err(LeaseError::HeldElsewhere)
    ));
    s.release("r0").await;
    let b = s.acquire("r1", t0 + 2, LEASE).await.unwrap();
    assert_eq!(b.epoch, 2, "{kind:?}");
}

async fn the_table_check_accepts_a_single_region_table_and_names_a_missing_one(kind: Ddb) {
    let (server, s) = store(kind).await;
    s.check_table().await.unwrap();
    let missing = DynamoStore::new(
        client("eu-west-1", &server.endpoint()).await,
        "no-such-table",
        Duration::from_secs(2),
    );
    let e = missing.check_table().await.unwrap_err();
    assert!(e.contains("ResourceNotFoundException"), "{kind:?}: {e}");
    assert!(matches!(
        missing.load().await,
        Err(StoreError::Unavailable(_))
    ));
}

async fn an_unreachable_store_is_unavailable_not_a_conflict(kind: Ddb) {
    let (mut server, s) = store(kind).await;
    server.stop().await;
    assert!(
        matches!(s.load().await, Err(StoreError::Unavailable(_))),
        "{kind:?}"
    );
    assert!(matches!(
        s.save(&State::initial(&policy(), 1), 0).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        s.acquire("r0", 1, LEASE).await,
        Err(LeaseError::Unavailable(_))
    ));
}
