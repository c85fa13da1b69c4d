//! Table tests of the shard race: events in, actions out, no I/O.

use super::*;
use Action::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Shard `i` on store `i`, all of equal cost.
fn race(k: usize, n: usize, hedge: HedgeDelay) -> Race {
    let placed: Vec<Option<usize>> = (0..n).map(Some).collect();
    Race::new(k, n, order(&placed, &vec![0; n], k), hedge)
}

fn req(shard: usize, store: usize) -> Action {
    Request {
        shard,
        store,
        hedge: None,
    }
}

#[test]
fn order_is_by_cost_then_data_shards_first() {
    // (store of each shard, cost of each store, k, expected shard order)
    type Case<'a> = (&'a [Option<usize>], &'a [u64], usize, &'a [usize]);
    let cases: &[Case] = &[
        (&[Some(0), Some(1), Some(2)], &[0, 0, 0], 2, &[0, 1, 2]),
        (&[Some(0), Some(1), Some(2)], &[9, 5, 1], 2, &[2, 1, 0]),
        // Equal cost: data shards (0, 1) before parity (2, 3), whatever the store.
        (
            &[Some(2), Some(2), Some(0), Some(1)],
            &[3, 3, 3],
            2,
            &[0, 1, 2, 3],
        ),
        (
            &[Some(0), Some(1), Some(0), Some(1)],
            &[7, 3],
            2,
            &[1, 3, 0, 2],
        ),
        // A store this host does not know offers nothing.
        (&[None, Some(1), Some(0)], &[1, 2], 2, &[2, 1]),
        (&[None, None], &[], 1, &[]),
    ];
    for &(placed, cost, k, want) in cases {
        let got: Vec<usize> = order(placed, cost, k).iter().map(|c| c.shard).collect();
        assert_eq!(got, want, "{placed:?} {cost:?}");
    }
    let c = order(&[Some(4), Some(7)], &[0, 0, 0, 0, 0, 0, 0, 0], 1);
    assert_eq!(c[1], Candidate { shard: 1, store: 7 });
}

#[test]
fn k_good_shards_decode_without_a_hedge() {
    let mut r = race(2, 3, HedgeDelay::Fixed(ms(50)));
    assert_eq!(r.start(ms(0)), vec![req(0, 0), req(1, 1), Arm(ms(50))]);
    assert_eq!(r.arrived(1, Outcome::Good, ms(5)), vec![Arm(ms(50))]);
    assert_eq!(r.arrived(0, Outcome::Good, ms(7)), vec![Decode(vec![0, 1])]);
    assert!(r.is_over());
    assert_eq!(r.timer(ms(100)), vec![]);
}

#[test]
fn a_failing_store_or_a_bad_shard_is_replaced_by_the_next_candidate() {
    for bad in [
        Outcome::Failed("s0: down".into()),
        Outcome::Bad("store s0: shard 0: truncated".into()),
    ] {
        let mut r = race(2, 3, HedgeDelay::Fixed(ms(50)));
        r.start(ms(0));
        // The last candidate goes out: nothing is left to hedge with.
        assert_eq!(r.arrived(0, bad, ms(1)), vec![req(2, 2), Disarm]);
        assert_eq!(r.arrived(2, Outcome::Good, ms(2)), vec![]);
        assert_eq!(r.timer(ms(60)), vec![], "nothing armed");
        assert_eq!(r.arrived(1, Outcome::Good, ms(3)), vec![Decode(vec![1, 2])]);
    }
}

#[test]
fn a_late_store_gets_exactly_one_hedge() {
    let mut r = race(2, 4, HedgeDelay::Fixed(ms(50)));
    r.start(ms(0));
    assert_eq!(r.arrived(1, Outcome::Good, ms(10)), vec![Arm(ms(50))]);
    // An old timer that is not due any more does nothing.
    assert_eq!(r.timer(ms(50)), vec![]);
    let hedge = Request {
        shard: 2,
        store: 2,
        hedge: Some(0),
    };
    assert_eq!(r.timer(ms(60)), vec![hedge, Arm(ms(50))]);
    assert_eq!(
        r.arrived(2, Outcome::Good, ms(70)),
        vec![Decode(vec![1, 2])]
    );
    // The late shard arriving afterwards changes nothing.
    assert_eq!(r.arrived(0, Outcome::Good, ms(80)), vec![]);
}

#[test]
fn the_oldest_request_is_the_late_one() {
    let mut r = race(2, 4, HedgeDelay::Fixed(ms(50)));
    r.start(ms(0));
    r.arrived(0, Outcome::Failed("x".into()), ms(10)); // shard 2 goes out at 10
    let out = r.timer(ms(60));
    assert_eq!(
        out[0],
        Request {
            shard: 3,
            store: 3,
            hedge: Some(1)
        }
    );
}

#[test]
fn no_hedge_when_nothing_is_left_to_ask() {
    // Two shards of two on known stores: no timer at all.
    let placed = [Some(0), Some(1), None];
    let mut r = Race::new(2, 3, order(&placed, &[0, 0], 2), HedgeDelay::Fixed(ms(50)));
    assert_eq!(r.start(ms(0)), vec![req(0, 0), req(1, 1)]);
    assert_eq!(r.timer(ms(500)), vec![]);
    // After the only hedge there is no second one.
    let mut r = race(2, 3, HedgeDelay::Fixed(ms(50)));
    r.start(ms(0));
    let hedge = Request {
        shard: 2,
        store: 2,
        hedge: Some(0),
    };
    assert_eq!(r.timer(ms(50)), vec![hedge]);
    assert_eq!(r.timer(ms(100)), vec![]);
    assert_eq!(r.arrived(1, Outcome::Good, ms(110)), vec![]);
}

#[test]
fn give_up_says_how_many_shards_were_readable() {
    let mut r = race(4, 6, HedgeDelay::Fixed(ms(50)));
    assert_eq!(r.start(ms(0)).len(), 5);
    for s in [0, 1] {
        r.arrived(s, Outcome::Failed(format!("s{s}: down")), ms(1));
    }
    r.arrived(
        2,
        Outcome::Bad("store s2: shard 2: not a shard".into()),
        ms(2),
    );
    r.arrived(3, Outcome::Good, ms(3));
    r.arrived(4, Outcome::Good, ms(3));
    let out = r.arrived(5, Outcome::Good, ms(4));
    let [GiveUp(e)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        e.to_string(),
        "3 of 6 shards readable, 4 needed (s0: down; s1: down; store s2: shard 2: not a shard)"
    );
    assert!(r.is_over());
    // A chunk none of whose shards is on a known store.
    let mut r = Race::new(2, 3, Vec::new(), HedgeDelay::Fixed(ms(50)));
    let out = r.start(ms(0));
    let [GiveUp(e)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        e.to_string(),
        "0 of 3 shards readable, 2 needed (no store holds them)"
    );
}

#[test]
fn the_adaptive_delay_follows_the_slowest_store_in_flight() {
    // (latency of stores 0..3, expected delay while shards 0 and 1 are in flight)
    let cases = [
        ([0, 0, 0], UNMEASURED_HEDGE),
        ([10, 40, 1000], ms(120)),
        ([40, 10, 0], ms(120)),
        ([1, 2, 0], MIN_HEDGE),
        ([900, 5, 0], MAX_HEDGE),
    ];
    for (lat, want) in cases {
        let lat = lat.iter().map(|&l| ms(l)).collect();
        let mut r = race(2, 3, HedgeDelay::Adaptive(lat));
        let out = r.start(ms(0));
        assert_eq!(out.last(), Some(&Arm(want)), "{out:?}");
    }
}
