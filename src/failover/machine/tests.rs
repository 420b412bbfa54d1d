//! Every state x event pair, replay from every stored state, flapping, failback and pinning.

use super::*;

const NOW: u64 = 10_000_000;
const MIN: u64 = 60_000;

fn policy() -> Policy {
    Policy {
        regions: vec!["a".into(), "b".into(), "c".into()],
        min_interval_ms: MIN,
        stabilisation_ms: 2 * MIN,
        auto_failback: true,
        retry_backoff_ms: 30_000,
        live_check_cooldown_ms: MIN,
        alert_expiry_ms: 20 * MIN,
        agents: Default::default(),
    }
}

fn steps() -> Vec<StepSpec> {
    [
        ("app_config", StepKind::AppConfig),
        ("load_balancer:x", StepKind::LoadBalancer),
        ("dns:example.com/1", StepKind::Dns),
    ]
    .into_iter()
    .map(|(name, kind)| StepSpec {
        name: name.into(),
        kind,
    })
    .collect()
}

fn run(s: &State, e: Event, now: u64) -> Decision {
    decide(s, &e, now, &policy(), &steps())
}

fn fire(region: &str) -> Event {
    Event::Alert {
        fingerprint: format!("f-{region}"),
        region: region.into(),
        firing: true,
        starts_at_ms: 100,
        detail: None,
        app: false,
    }
}

fn resolve(region: &str) -> Event {
    Event::Alert {
        fingerprint: format!("f-{region}"),
        region: region.into(),
        firing: false,
        starts_at_ms: 100,
        detail: None,
        app: false,
    }
}

/// Applies events in order at `now`, as the engine does.
fn feed(mut s: State, events: &[Event], now: u64) -> State {
    for e in events {
        let d = run(&s, e.clone(), now);
        assert!(d.rejected.is_none(), "{e:?} rejected: {:?}", d.rejected);
        s = d.state;
    }
    s
}

fn steady_home() -> State {
    State::initial(&policy(), 0)
}

fn steady_away() -> State {
    let mut s = steady_home();
    s.active = "b".into();
    s.app_region = "b".into();
    s.epoch = 3;
    s.last_transition_ms = Some(NOW - 10 * MIN);
    // Home is up again, but only for 30 s: not yet stable.
    s.health.get_mut("a").unwrap().since_ms = NOW - 30_000;
    s
}

fn checking() -> State {
    let s = feed(steady_home(), &[fire("a")], NOW - 1000);
    assert_eq!(s.plan.as_ref().unwrap().status, PlanStatus::Checking);
    s
}

fn running() -> State {
    feed(
        checking(),
        &[
            Event::LiveCheck {
                epoch: 1,
                ok: true,
                detail: "ok".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 0,
                detail: "wrote".into(),
            },
        ],
        NOW - 1000,
    )
}

fn failed() -> State {
    feed(
        running(),
        &[Event::StepFailed {
            epoch: 1,
            index: 1,
            detail: "503".into(),
        }],
        NOW - 1000,
    )
}

fn paused() -> State {
    feed(steady_home(), &[Event::Pause], NOW - 1000)
}

fn blocked() -> State {
    let s = feed(
        steady_home(),
        &[fire("b"), fire("c"), fire("a")],
        NOW - 1000,
    );
    assert!(s.blocked.is_some() && s.plan.is_none());
    s
}

/// A short name for what a decision did, most significant first.
fn outcome(before: &State, d: &Decision) -> &'static str {
    if d.rejected.is_some() {
        return "reject";
    }
    let s = &d.state;
    let has = |f: &dyn Fn(&Effect) -> bool| d.effects.iter().any(f);
    if s.epoch > before.epoch && has(&|e| matches!(e, Effect::CheckTarget { .. })) {
        return "plan";
    }
    if has(&|e| matches!(e, Effect::CheckTarget { .. })) {
        return "retry";
    }
    if has(&|e| matches!(e, Effect::RunSteps { .. })) {
        return "run";
    }
    if s.history.len() > before.history.len() {
        return "done";
    }
    if s.plan
        .as_ref()
        .is_some_and(|p| p.status == PlanStatus::Failed)
        && before
            .plan
            .as_ref()
            .is_some_and(|p| p.status != PlanStatus::Failed)
    {
        return "fail";
    }
    if has(&|e| matches!(e, Effect::Notify(n) if n.kind == NoticeKind::Blocked)) {
        return "block";
    }
    if s != before || !d.effects.is_empty() {
        return "note";
    }
    "noop"
}

#[test]
fn every_state_and_event_pair_has_the_intended_outcome() {
    let states: Vec<(&str, State)> = vec![
        ("steady_home", steady_home()),
        ("steady_away", steady_away()),
        ("checking", checking()),
        ("running", running()),
        ("failed", failed()),
        ("paused", paused()),
        ("blocked", blocked()),
    ];
    let events = |s: &State| -> Vec<(&'static str, Event)> {
        let other = if s.active == "a" { "b" } else { "a" };
        let e = s.epoch;
        let next = s
            .plan
            .as_ref()
            .and_then(|p| p.steps.iter().position(|x| !x.done))
            .unwrap_or(0);
        vec![
            ("fire_active", fire(&s.active)),
            ("fire_other", fire(other)),
            ("resolve_active", resolve(&s.active)),
            ("tick", Event::Tick),
            ("failover_b", Event::Failover { to: "b".into() }),
            ("failback", Event::Failback),
            ("pause", Event::Pause),
            ("resume", Event::Resume),
            (
                "live_ok",
                Event::LiveCheck {
                    epoch: e,
                    ok: true,
                    detail: "ok".into(),
                },
            ),
            (
                "live_fail",
                Event::LiveCheck {
                    epoch: e,
                    ok: false,
                    detail: "timeout".into(),
                },
            ),
            (
                "step_done",
                Event::StepDone {
                    epoch: e,
                    index: next,
                    detail: "ok".into(),
                },
            ),
            (
                "step_failed",
                Event::StepFailed {
                    epoch: e,
                    index: next,
                    detail: "503".into(),
                },
            ),
            (
                "stale_step",
                Event::StepDone {
                    epoch: e.wrapping_sub(1),
                    index: next,
                    detail: "late".into(),
                },
            ),
        ]
    };
    // Rows: states; columns: the events above, in order.
    let expected: &[(&str, [&str; 13])] = &[
        (
            "steady_home",
            [
                "plan", "note", "note", "noop", "plan", "reject", "note", "noop", "noop", "noop",
                "noop", "noop", "noop",
            ],
        ),
        (
            "steady_away",
            [
                "plan", "note", "note", "noop", "reject", "plan", "note", "noop", "noop", "noop",
                "noop", "noop", "noop",
            ],
        ),
        (
            "checking",
            [
                "noop", "note", "note", "noop", "reject", "reject", "note", "noop", "run", "plan",
                "noop", "noop", "noop",
            ],
        ),
        (
            "running",
            [
                "noop", "note", "note", "noop", "reject", "reject", "note", "noop", "noop", "noop",
                "note", "fail", "noop",
            ],
        ),
        (
            "failed",
            [
                "noop", "note", "note", "noop", "retry", "plan", "note", "noop", "noop", "noop",
                "noop", "noop", "noop",
            ],
        ),
        (
            "paused",
            [
                "block", "note", "note", "noop", "reject", "reject", "noop", "note", "noop",
                "noop", "noop", "noop", "noop",
            ],
        ),
        (
            "blocked",
            [
                "noop", "noop", "note", "noop", "plan", "reject", "note", "noop", "noop", "noop",
                "noop", "noop", "noop",
            ],
        ),
    ];
    let mut wrong = Vec::new();
    for ((name, state), (row, want)) in states.iter().zip(expected) {
        assert_eq!(name, row);
        for ((ev_name, ev), want) in events(state).into_iter().zip(want) {
            let d = run(state, ev, NOW);
            let got = outcome(state, &d);
            if got != *want {
                wrong.push(format!("{name} x {ev_name}: got {got}, want {want}"));
            }
            // Invariants that hold for every pair.
            assert!(
                d.state.epoch >= state.epoch,
                "{name} x {ev_name}: epoch went back"
            );
            if d.rejected.is_some() {
                assert_eq!(
                    &d.state, state,
                    "{name} x {ev_name}: a refusal changed the state"
                );
            }
            for e in &d.effects {
                if let Effect::CheckTarget { epoch } | Effect::RunSteps { epoch } = e {
                    assert_eq!(
                        Some(*epoch),
                        d.state.plan.as_ref().map(|p| p.epoch),
                        "{name} x {ev_name}: an effect for a plan that is not current"
                    );
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_failing_target_is_skipped_for_the_next_region_in_priority_order() {
    let s = checking();
    let d = run(
        &s,
        Event::LiveCheck {
            epoch: 1,
            ok: false,
            detail: "timeout".into(),
        },
        NOW,
    );
    let p = d.state.plan.as_ref().unwrap();
    assert_eq!((p.to.as_str(), p.epoch), ("c", 2));
    assert!(d.state.health["b"].live_failed_ms.is_some());
    // And when c fails too, it stays and says so.
    let d = run(
        &d.state,
        Event::LiveCheck {
            epoch: 2,
            ok: false,
            detail: "refused".into(),
        },
        NOW,
    );
    assert!(d.state.plan.is_none());
    assert_eq!(d.state.active, "a");
    assert!(d
        .state
        .blocked
        .as_deref()
        .unwrap()
        .contains("no other region is healthy"));
}

fn app_alert(region: &str, firing: bool) -> Event {
    Event::Alert {
        fingerprint: format!("app-{region}"),
        region: region.into(),
        firing,
        starts_at_ms: 100,
        detail: None,
        app: true,
    }
}

#[test]
fn an_application_down_alert_never_moves_traffic_and_takes_its_region_out_of_the_targets() {
    // On the active region: recorded, nothing moves.
    let d = run(&steady_home(), app_alert("a", true), NOW);
    assert!(d.state.plan.is_none() && d.state.blocked.is_none());
    assert!(d.state.health["a"].app_down && !d.state.health["a"].down);
    assert_eq!(d.state.active, "a");
    // On b: a's DynamoDB failing moves traffic past b, to c.
    let s = feed(steady_home(), &[app_alert("b", true), fire("a")], NOW);
    assert_eq!(s.plan.as_ref().unwrap().to, "c");
    // On b and c: blocked, saying why.
    let s = feed(
        steady_home(),
        &[app_alert("b", true), app_alert("c", true), fire("a")],
        NOW,
    );
    assert!(s.plan.is_none());
    let why = s.blocked.clone().unwrap();
    assert!(
        why.contains("b: application-down alert firing")
            && why.contains("c: application-down alert firing"),
        "{why}"
    );
    // b's application comes back: the move goes there.
    let s = feed(s, &[app_alert("b", false)], NOW + 1);
    assert_eq!(s.plan.as_ref().unwrap().to, "b");
    // A home whose application is down is not failed back to.
    let s = feed(moved_to_b(NOW), &[resolve("a"), app_alert("a", true)], NOW);
    let d = run(&s, Event::Tick, NOW + 10 * MIN);
    assert!(d.state.plan.is_none(), "{:?}", d.state.plan);
    let d = run(&d.state, app_alert("a", false), NOW + 10 * MIN);
    let d = run(&d.state, Event::Tick, NOW + 13 * MIN);
    assert_eq!(d.state.plan.as_ref().map(|p| p.to.as_str()), Some("a"));
}

#[test]
fn agents_hear_of_a_target_only_after_its_live_check_and_hear_back_if_the_plan_is_dropped() {
    let steps = vec![
        StepSpec {
            name: "agents".into(),
            kind: StepKind::Agents,
        },
        StepSpec {
            name: "load_balancer:x".into(),
            kind: StepKind::LoadBalancer,
        },
    ];
    let go = |s: &State, e: Event, now: u64| {
        let d = decide(s, &e, now, &policy(), &steps);
        assert!(d.rejected.is_none(), "{e:?}: {:?}", d.rejected);
        d.state
    };
    let s = go(&steady_home(), fire("a"), NOW);
    let epoch = s.plan.as_ref().unwrap().epoch;
    // Checking b: the agents still hear a.
    assert_eq!(placement(&s), ("a".to_string(), 0));
    let s = go(
        &s,
        Event::LiveCheck {
            epoch,
            ok: true,
            detail: "ok".into(),
        },
        NOW,
    );
    assert_eq!(placement(&s), ("b".to_string(), epoch));
    // The agents step fails; the plan waits for its retry, still announced.
    let s = go(
        &s,
        Event::StepFailed {
            epoch,
            index: 0,
            detail: "deadline".into(),
        },
        NOW,
    );
    assert_eq!(placement(&s), ("b".to_string(), epoch));
    // The retry checks b again, and b fails: the plan is dropped (c is tried next), and the agents
    // hear a again under a newer epoch, so none stays on b.
    let s = go(&s, Event::Tick, NOW + 10 * MIN);
    assert_eq!(s.plan.as_ref().unwrap().status, PlanStatus::Checking);
    let s = go(
        &s,
        Event::LiveCheck {
            epoch,
            ok: false,
            detail: "refused".into(),
        },
        NOW + 10 * MIN,
    );
    let (region, announced) = placement(&s);
    assert_eq!(region, "a");
    assert!(announced > epoch, "{announced} <= {epoch}");
    assert_eq!(s.plan.as_ref().unwrap().to, "c");
    assert!(s.plan.as_ref().unwrap().epoch > announced);
}

#[test]
fn an_acknowledgement_never_goes_back_and_a_repeat_changes_nothing() {
    let mut p = policy();
    p.agents.expected.insert("wp-1".into(), "b".into());
    let ack = |epoch: u64, ok: bool| Event::AgentAck {
        agent: "wp-1".into(),
        epoch,
        region: "b".into(),
        ok,
        detail: "x".into(),
    };
    let d = decide(&steady_home(), &ack(5, true), NOW, &p, &steps());
    let s = d.state;
    assert_eq!(s.agents["wp-1"].epoch, 5);
    // A late, older one is not recorded.
    let d = decide(&s, &ack(4, true), NOW + 1, &p, &steps());
    assert_eq!(d.state, s);
    // The same outcome again: the state is unchanged (not even its time), so it is not written.
    let d = decide(&s, &ack(5, true), NOW + 2, &p, &steps());
    assert_eq!(d.state, s);
    // A different outcome for the same epoch is recorded.
    let d = decide(&s, &ack(5, false), NOW + 3, &p, &steps());
    assert!(!d.state.agents["wp-1"].ok);
}

#[test]
fn completing_every_step_moves_traffic_and_records_the_transition() {
    let s = feed(
        running(),
        &[
            Event::StepDone {
                epoch: 1,
                index: 1,
                detail: "lb".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 2,
                detail: "dns".into(),
            },
        ],
        NOW,
    );
    assert!(s.plan.is_none());
    assert_eq!((s.active.as_str(), s.app_region.as_str()), ("b", "b"));
    assert_eq!(s.history[0].to, "b");
    assert_eq!(s.history[0].trigger, Trigger::Alert);
    assert_eq!(s.last_transition_ms, Some(NOW));
}

#[test]
fn the_app_region_changes_when_the_app_config_step_is_done() {
    let s = checking();
    assert_eq!(s.app_region, "a");
    assert_eq!(running().app_region, "b");
}

fn moved_to_b(at: u64) -> State {
    feed(
        steady_home(),
        &[
            fire("a"),
            Event::LiveCheck {
                epoch: 1,
                ok: true,
                detail: "ok".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 0,
                detail: "".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 1,
                detail: "".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 2,
                detail: "".into(),
            },
        ],
        at,
    )
}

#[test]
fn failback_waits_for_the_stabilisation_window_and_the_minimum_interval() {
    let t0 = NOW;
    let s = moved_to_b(t0);
    let s = feed(s, &[resolve("a")], t0 + 1000);
    // Stable for less than the window: nothing.
    let d = run(&s, Event::Tick, t0 + 1000 + 2 * MIN - 1);
    assert!(d.state.plan.is_none());
    // Window passed: failback to home.
    let d = run(&s, Event::Tick, t0 + 1000 + 2 * MIN);
    let p = d.state.plan.as_ref().unwrap();
    assert_eq!(
        (p.kind, p.to.as_str(), p.trigger),
        (Kind::Failback, "a", Trigger::Stabilised)
    );
}

#[test]
fn a_home_region_that_flaps_is_never_failed_back_to() {
    let t0 = NOW;
    let mut s = moved_to_b(t0);
    let mut t = t0;
    // Down/up cycles of 90 s (shorter than the 120 s window) for half an hour.
    for cycle in 0..20u64 {
        t += 45_000;
        s = feed(
            s,
            &[Event::Alert {
                fingerprint: "f-a".into(),
                region: "a".into(),
                firing: false,
                starts_at_ms: 100 + cycle,
                detail: None,
                app: false,
            }],
            t,
        );
        s = feed(s, &[Event::Tick], t + 30_000);
        assert!(
            s.plan.is_none(),
            "failback started while home flaps (cycle {cycle})"
        );
        t += 45_000;
        s = feed(
            s,
            &[Event::Alert {
                fingerprint: "f-a".into(),
                region: "a".into(),
                firing: true,
                starts_at_ms: 101 + cycle,
                detail: None,
                app: false,
            }],
            t,
        );
    }
    assert_eq!(s.active, "b");
    assert_eq!(s.history.len(), 1);
}

#[test]
fn with_automatic_failback_off_only_an_operator_fails_back() {
    let mut p = policy();
    p.auto_failback = false;
    let s = moved_to_b(NOW);
    let s = decide(&s, &resolve("a"), NOW + 1000, &p, &steps()).state;
    let d = decide(&s, &Event::Tick, NOW + 100 * MIN, &p, &steps());
    assert!(d.state.plan.is_none());
    let d = decide(&s, &Event::Failback, NOW + 100 * MIN, &p, &steps());
    let plan = d.state.plan.as_ref().unwrap();
    assert_eq!((plan.to.as_str(), plan.trigger), ("a", Trigger::Operator));
}

#[test]
fn a_resolved_that_overtakes_its_firing_causes_no_transition() {
    let s = feed(steady_home(), &[resolve("a")], NOW);
    let d = run(&s, fire("a"), NOW + 10);
    assert!(d.state.plan.is_none() && d.effects.is_empty());
    assert!(!d.state.health["a"].down);
    // A later episode (a new startsAt) does count.
    let d = run(
        &s,
        Event::Alert {
            fingerprint: "f-a".into(),
            region: "a".into(),
            firing: true,
            starts_at_ms: 200,
            detail: None,
            app: false,
        },
        NOW + 20,
    );
    assert!(d.state.plan.is_some());
}

#[test]
fn the_known_alert_shortcut_agrees_with_decide() {
    let states = [
        steady_home(),
        checking(),
        running(),
        failed(),
        paused(),
        blocked(),
        feed(steady_home(), &[resolve("a")], NOW),
        // Fired long ago: a repeat now refreshes when it was last sent.
        feed(steady_home(), &[fire("a")], NOW - 10 * MIN),
        // Expired: a firing copy revives it.
        feed(
            feed(steady_home(), &[fire("a")], NOW - 30 * MIN),
            &[Event::Tick],
            NOW - MIN,
        ),
    ];
    let mut events = Vec::new();
    for region in ["a", "b", "c", "mars"] {
        for firing in [true, false] {
            for starts_at_ms in [50, 100, 150] {
                for fp in [format!("f-{region}"), "f-other".to_string()] {
                    events.push(Event::Alert {
                        fingerprint: fp,
                        region: region.into(),
                        firing,
                        starts_at_ms,
                        detail: None,
                        app: false,
                    });
                }
            }
        }
    }
    for s in &states {
        for e in &events {
            if is_known_alert(s, e, NOW, &policy()) {
                let mut probe = s.clone();
                let mut fx = Vec::new();
                apply(&mut probe, e, NOW, &policy(), &steps(), &mut fx).unwrap();
                assert_eq!(&probe, s, "{e:?} is called known but changes the state");
                assert!(fx.is_empty());
            }
        }
    }
    // And it does recognise the common case.
    assert!(is_known_alert(&checking(), &fire("a"), NOW, &policy()));
    assert!(!is_known_alert(&steady_home(), &fire("a"), NOW, &policy()));
}

#[test]
fn repeats_and_duplicates_change_nothing() {
    let s = checking();
    for _ in 0..50 {
        let d = run(&s, fire("a"), NOW);
        assert_eq!(d.state, s);
        assert!(d.effects.is_empty());
    }
}

#[test]
fn a_failed_plan_is_retried_after_its_backoff_keeping_done_steps() {
    let s = failed();
    let failed_at = s.plan.as_ref().unwrap().failed_ms.unwrap();
    let d = run(&s, Event::Tick, failed_at + 29_999);
    assert_eq!(d.state.plan.as_ref().unwrap().status, PlanStatus::Failed);
    let d = run(&s, Event::Tick, failed_at + 30_000);
    let p = d.state.plan.as_ref().unwrap();
    assert_eq!(
        (p.status, p.attempts, p.epoch),
        (PlanStatus::Checking, 2, 1)
    );
    assert!(p.steps[0].done && !p.steps[1].done);
}

#[test]
fn an_operator_failover_pins_the_region_against_automatic_failback() {
    let s = feed(steady_home(), &[Event::Failover { to: "b".into() }], NOW);
    let s = feed(
        s,
        &[
            Event::LiveCheck {
                epoch: 1,
                ok: true,
                detail: "".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 0,
                detail: "".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 1,
                detail: "".into(),
            },
            Event::StepDone {
                epoch: 1,
                index: 2,
                detail: "".into(),
            },
        ],
        NOW,
    );
    assert!(s.pinned && s.active == "b");
    let d = run(&s, Event::Tick, NOW + 100 * MIN);
    assert!(d.state.plan.is_none());
    // But if the pinned region goes down, safety wins.
    let d = run(&s, fire("b"), NOW + 100 * MIN);
    assert_eq!(d.state.plan.as_ref().unwrap().to, "a");
}

#[test]
fn paused_decides_and_notifies_but_moves_nothing() {
    let s = paused();
    let d = run(&s, fire("a"), NOW);
    assert!(d.state.plan.is_none());
    let why = d.state.blocked.clone().unwrap();
    assert!(why.contains("paused: would failover a -> b"), "{why}");
    // Resuming makes the move.
    let d = run(&d.state, Event::Resume, NOW);
    assert_eq!(d.state.plan.as_ref().unwrap().to, "b");
}

/// Drives a plan to its end the way the executor does after a restart: a checking plan is
/// checked again, a running plan applies its first step not done. Counts step applications.
fn resume_to_end(mut s: State, applied: &mut Vec<usize>) -> State {
    while let Some(p) = s.plan.clone() {
        let e = match p.status {
            PlanStatus::Checking => Event::LiveCheck {
                epoch: p.epoch,
                ok: true,
                detail: "ok".into(),
            },
            PlanStatus::Running => {
                let i = p.steps.iter().position(|x| !x.done).unwrap();
                applied.push(i);
                Event::StepDone {
                    epoch: p.epoch,
                    index: i,
                    detail: format!("step {i}"),
                }
            }
            PlanStatus::Failed => unreachable!(),
        };
        s = run(&s, e, NOW).state;
    }
    s
}

#[test]
fn replaying_a_plan_from_every_intermediate_state_reaches_the_same_end_without_repeating_steps() {
    // Record every stored state of one uninterrupted failover.
    let mut stored = vec![run(&steady_home(), fire("a"), NOW).state];
    let mut applied = Vec::new();
    let end = {
        let mut s = stored[0].clone();
        while let Some(p) = s.plan.clone() {
            let e = match p.status {
                PlanStatus::Checking => Event::LiveCheck {
                    epoch: p.epoch,
                    ok: true,
                    detail: "ok".into(),
                },
                _ => {
                    let i = p.steps.iter().position(|x| !x.done).unwrap();
                    applied.push(i);
                    Event::StepDone {
                        epoch: p.epoch,
                        index: i,
                        detail: format!("step {i}"),
                    }
                }
            };
            s = run(&s, e, NOW).state;
            stored.push(s.clone());
        }
        s
    };
    assert_eq!(applied, vec![0, 1, 2]);
    for (k, crashed_at) in stored.iter().enumerate() {
        let mut again = Vec::new();
        let resumed = resume_to_end(crashed_at.clone(), &mut again);
        assert_eq!(
            resumed, end,
            "resuming from stored state {k} ended elsewhere"
        );
        let not_done: Vec<usize> = crashed_at
            .plan
            .as_ref()
            .map(|p| {
                p.steps
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.done)
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            again, not_done,
            "resuming from stored state {k} repeated a finished step"
        );
    }
}

#[test]
fn adopting_a_new_region_list_keeps_known_health() {
    let mut s = steady_home();
    s.health.get_mut("b").unwrap().down = true;
    let mut p = policy();
    p.regions = vec!["a".into(), "b".into(), "d".into()];
    let s = s.adopt(&p, NOW);
    assert!(s.health["b"].down);
    assert!(s.health.contains_key("d") && !s.health.contains_key("c"));
}

fn alert(fp: String, region: &str, firing: bool, starts_at_ms: u64) -> Event {
    Event::Alert {
        fingerprint: fp,
        region: region.into(),
        firing,
        starts_at_ms,
        detail: None,
        app: false,
    }
}

#[test]
fn a_flood_of_distinct_alerts_keeps_the_bound_and_the_region_down_until_every_one_resolves() {
    let mut s = steady_home();
    for i in 0..20_000 {
        s = run(&s, alert(format!("flood-{i}"), "b", true, 100), NOW).state;
    }
    let kept = |s: &State| s.alerts.values().filter(|a| a.region == "b").count();
    assert_eq!(kept(&s), MAX_ALERTS_PER_REGION);
    assert!(s.health["b"].down);
    assert!(s.plan.is_none(), "b is not where traffic is");
    for i in 0..20_000 {
        s = run(&s, alert(format!("flood-{i}"), "b", false, 100), NOW + 1).state;
    }
    assert!(kept(&s) <= MAX_ALERTS_PER_REGION);
    assert!(
        !s.health["b"].down,
        "b stays down after every instance resolved"
    );
    // And the real alert still moves traffic, once.
    let d = run(&s, fire("a"), NOW + 2);
    assert_eq!(d.state.plan.as_ref().map(|p| p.to.as_str()), Some("b"));
}

#[test]
fn a_firing_alert_not_sent_again_within_the_expiry_counts_as_resolved_until_it_is_sent() {
    let expiry = policy().alert_expiry_ms;
    let s = feed(steady_home(), &[fire("b")], NOW);
    assert!(s.health["b"].down);
    let s = feed(s, &[Event::Tick], NOW + expiry - 1);
    assert!(s.health["b"].down, "expired too early");
    let s = feed(s, &[Event::Tick], NOW + expiry);
    assert!(!s.health["b"].down, "a lost resolved pins b down");
    assert!(s.alerts["f-b"].expired);
    // Alertmanager sends it again (same episode): b is down again.
    let s = feed(s, &[fire("b")], NOW + expiry + 1000);
    assert!(s.health["b"].down);
    // A resolved that overtook its firing still wins over the late firing.
    let s = feed(s, &[resolve("b"), fire("b")], NOW + expiry + 2000);
    assert!(!s.health["b"].down);
}

#[test]
fn repeats_are_written_at_most_every_quarter_of_the_expiry_and_keep_the_alert_alive() {
    let p = policy();
    let quarter = p.alert_expiry_ms / 4;
    let s = feed(steady_home(), &[fire("b")], NOW);
    assert!(is_known_alert(&s, &fire("b"), NOW + quarter - 1, &p));
    assert_eq!(run(&s, fire("b"), NOW + quarter - 1).state, s);
    assert!(!is_known_alert(&s, &fire("b"), NOW + quarter, &p));
    let s = run(&s, fire("b"), NOW + quarter).state;
    assert_eq!(s.alerts["f-b"].seen_ms, NOW + quarter);
    // Refreshed: it outlives the first expiry.
    let s = feed(s, &[Event::Tick], NOW + p.alert_expiry_ms + 1);
    assert!(s.health["b"].down);
}

/// The worst case the runbook documents: every bound filled with the longest values the config
/// and the parsers allow.
#[test]
fn the_stored_state_stays_under_128_kib_whatever_is_sent() {
    let regions: Vec<String> = (0..crate::config::MAX_REGIONS)
        .map(|i| format!("{i:02}-{}", "r".repeat(61)))
        .collect();
    let p = Policy {
        regions: regions.clone(),
        ..policy()
    };
    let long = "x".repeat(10_000);
    let steps: Vec<StepSpec> = (0..20)
        .map(|i| StepSpec {
            name: format!("load_balancer:{i:02}{}", "l".repeat(60)),
            kind: StepKind::LoadBalancer,
        })
        .collect();
    let mut s = State::initial(&p, NOW);
    for (ri, r) in regions.iter().enumerate() {
        for i in 0..100 {
            let fp = format!(
                "{ri:02}{i:04}{}",
                "f".repeat(crate::alert::MAX_FINGERPRINT - 6)
            );
            s = decide(&s, &alert(fp, r, i % 2 == 0, 100 + i), NOW, &p, &steps).state;
        }
    }
    // Fifty transitions whose steps and live checks all said the most they may.
    let (a, b) = (&regions[0], &regions[1]);
    for k in 0..60u64 {
        let t = NOW + k * 1000;
        let (down, up) = if k % 2 == 0 { (a, b) } else { (b, a) };
        s = decide(&s, &Event::Failover { to: up.clone() }, t, &p, &steps).state;
        let _ = down;
        let epoch = s.epoch;
        s = decide(
            &s,
            &Event::LiveCheck {
                epoch,
                ok: true,
                detail: long.clone(),
            },
            t,
            &p,
            &steps,
        )
        .state;
        for index in 0..steps.len() {
            s = decide(
                &s,
                &Event::StepDone {
                    epoch,
                    index,
                    detail: long.clone(),
                },
                t,
                &p,
                &steps,
            )
            .state;
        }
    }
    // And a plan left failed, with every step's detail filled.
    s = decide(
        &s,
        &Event::Failover {
            to: regions[2].clone(),
        },
        NOW,
        &p,
        &steps,
    )
    .state;
    let epoch = s.epoch;
    s = decide(
        &s,
        &Event::LiveCheck {
            epoch,
            ok: true,
            detail: long.clone(),
        },
        NOW,
        &p,
        &steps,
    )
    .state;
    for index in 0..steps.len() - 1 {
        s = decide(
            &s,
            &Event::StepDone {
                epoch,
                index,
                detail: long.clone(),
            },
            NOW,
            &p,
            &steps,
        )
        .state;
    }
    s = decide(
        &s,
        &Event::StepFailed {
            epoch,
            index: steps.len() - 1,
            detail: long.clone(),
        },
        NOW,
        &p,
        &steps,
    )
    .state;
    assert_eq!(s.history.len(), HISTORY_LEN);
    assert!(s.plan.is_some());
    let size = serde_json::to_vec(&s).unwrap().len();
    println!(
        "worst-case state: {size} bytes, {} alerts, {} transitions",
        s.alerts.len(),
        s.history.len()
    );
    assert!(size < 128 * 1024, "{size} bytes");
}

#[test]
fn alertmanagers_resolved_for_an_expired_alert_wins_over_a_late_firing_copy() {
    let expiry = policy().alert_expiry_ms;
    let s = feed(steady_home(), &[fire("b")], NOW);
    let s = feed(s, &[Event::Tick], NOW + expiry);
    assert!(s.alerts["f-b"].expired);
    // The resolved arrives, then a stale firing copy from the other Alertmanager.
    let s = feed(s, &[resolve("b")], NOW + expiry + 1);
    assert!(!s.alerts["f-b"].expired && !s.alerts["f-b"].firing);
    assert!(is_known_alert(&s, &fire("b"), NOW + expiry + 2, &policy()));
    let s = feed(s, &[fire("b")], NOW + expiry + 2);
    assert!(
        !s.health["b"].down,
        "a late firing copy revived a resolved alert"
    );
}

#[test]
fn a_failed_plan_is_retried_with_the_steps_configured_now() {
    let s = failed(); // failed at load_balancer:x, app_config done
    let fewer: Vec<StepSpec> = steps()
        .into_iter()
        .filter(|st| st.name != "load_balancer:x")
        .collect();
    let d = decide(
        &s,
        &Event::Failover { to: "b".into() },
        NOW,
        &policy(),
        &fewer,
    );
    let p = d.state.plan.as_ref().unwrap();
    let names: Vec<&str> = p.steps.iter().map(|st| st.name.as_str()).collect();
    assert_eq!(names, ["app_config", "dns:example.com/1"]);
    assert!(p.steps[0].done, "what was done stays done");
    assert!(!p.steps[1].done);
}
