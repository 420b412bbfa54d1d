#!/usr/bin/env python3
"""Writes the promtool rule unit tests from the scenarios below, once with the production timings
and once with the fast profile. The tests are not committed: scripts/lib/check-monitoring writes
them into a temporary directory, next to copies of the rules, and runs them there.

  gen.py OUT_DIR    write OUT_DIR/prod/*.yml (production timings) and OUT_DIR/fast/*.yml (fast)

Each test file loads `rules/dynamo-failover.yml`, which promtool resolves relative to the test file:
OUT_DIR/prod/rules/ must hold a copy of prometheus/rules/ and OUT_DIR/fast/rules/ the fast
profile's rules (`scripts/lib/profile.py OUT_DIR/fast --fast` writes them there). To read the
generated YAML: `python3 prometheus/tests/gen.py /tmp/rule-tests`, then look in /tmp/rule-tests/.

The input series model the exporter and Prometheus rather than draw the metric by hand:

- each prober probes every (region, table) pair once per probe interval; a region's tables share
  a phase (groups of up to 8, as the exporter's scheduler does), regions have phases of their own;
  a probe runs the read, write and replication operations, each of which ends with one result;
- a result lands when its operation ends: a timeout after the probe timeout plus the scheduler's
  0.1 s cut-off margin (the worst case), anything else after 30 ms (or a scenario's slow latency).
  On landing exactly one series of dynamodb_probe_total goes up by one and dynamodb_probe_success
  is set to 1 or 0; scenarios about latency also observe the duration in the histogram
  dynamodb_probe_duration_seconds (the exporter's buckets);
- every counter exists from the process start (at 0, or at a warm count for a process that was
  already running when the scenario starts); the success gauge only after the first probe;
- Prometheus scrapes each prober every scrape interval. A prober that is down answers no scrape:
  `up` is 0 and everything it exported is marked stale. When it comes back it is a new process:
  counters from 0, no success gauge until its first probe, a new phase.

Scenarios with application checks (`app_checks`, the region's [[region.app_check]] names) also
model those: each prober that runs them (`app_probers`, default all) runs every check once per
probe interval from its own phase; a result lands after the check's timeout plus the 0.1 s cut-off
(a timeout) or after 30 ms; app_probe_total{check, result} (every result pre-created at 0, like
the DynamoDB counters) goes up by one and app_probe_success is set. Faults of the application
are AppFault, which never touch DynamoDB probes (and Fault never touches application checks).

The readiness scenarios (readiness.yml, class Readiness) model the responder replicas' readiness
evaluations: each replica evaluates at its start and every interval (5 m; fast 3 s, the test
kit's), start to start, each evaluation finishing a little later (2 s; fast 300 ms) unless it hangs; a row's value
is its latest evaluation's (rows appear at the first), and the timestamp is 0 until then.

The agent scenarios (agents.yml, class Fleet) model the responder replicas instead: each exports
the placement's epoch, each agent's acknowledged epoch (the shared state, the same everywhere) and
when the agent last reached that replica (0 since the replica's process started until it does);
an agent long-polls one replica at a time, every 30 s (fast 2 s, the test kit's poll_wait), moves
on when its replica goes down, and acknowledges a placement after its own delay.

Most scenarios scrape at the evaluation timestamps (one input sample per scrape interval, which
promtool's `vxN` / `a+bxN` notation keeps short); the probes' phases still put results anywhere
between two scrapes. The worst-case detection scenario uses a 100 ms grid instead, to put the
result just after a scrape and the scrape just after an evaluation.

The scrape and evaluation intervals are read from prometheus/prometheus.yml (value and `# fast:`
value); the probe interval and timeout are the exporter's defaults (5 s, 2.5 s) and the fast
profile's (1 s, 800 ms, the chain of crates/testkit that tests/e2e.rs and the demo run). The expected alerts are written by hand
per profile: the tests pin the thresholds, so changing a window or an interval breaks them.
"""
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
LATENCY = 30  # ms for a probe result other than timeout
BUCKETS = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"]  # src/metrics.rs
CUTOFF_MARGIN = 100  # ms the scheduler waits past the probe timeout before it cuts a probe off
APP_RESULTS = ["success", "timeout", "connect_error", "tls_error", "bad_status", "body_mismatch"]  # src/probe/app.rs
WARM = 100  # success count of a process already running when a scenario starts
RESULTS = ["success", "timeout", "connect_error", "throttled", "server_error", "access_denied",
           "no_credentials", "table_not_found", "client_error", "missing_item", "condition_failed"]
OPS = ["read", "write", "replication"]
EAST, WEST = "us-east-1", "us-west-2"
VOTING = ["DynamoDBRegionUnavailable", "DynamoDBRegionOperationFailing", "DynamoDBTableUnavailable"]


def ms(text):
    total = 0
    for num, unit in re.findall(r"(\d+)(ms|s|m)", text):
        total += int(num) * {"ms": 1, "s": 1000, "m": 60000}[unit]
    return total


def dur(t_ms):
    return f"{t_ms // 1000}s" if t_ms % 1000 == 0 else f"{t_ms}ms"


def prometheus_setting(key, fast):
    text = (ROOT / "prometheus/prometheus.yml").read_text()
    m = re.search(rf"^\s*{key}:\s*(\S+)\s*#\s*fast:\s*(\S+)", text, re.M)
    if not m:
        sys.exit(f"gen.py: no `{key}: X # fast: Y` line in prometheus/prometheus.yml")
    return ms(m.group(2) if fast else m.group(1))


class Profile:
    def __init__(self, name, fast):
        self.name, self.fast = name, fast
        self.scrape = prometheus_setting("scrape_interval", fast)
        self.eval = prometheus_setting("evaluation_interval", fast)
        self.probe = 1000 if fast else 5000
        self.timeout = (800 if fast else 2500) + CUTOFF_MARGIN
        # An application check's timeout: the config's default 2 s; the test kit's 800 ms.
        self.app_timeout = (800 if fast else 2000) + CUTOFF_MARGIN
        self.dir = "fast" if fast else "prod"  # under OUT_DIR
        self.rules = "rules/dynamo-failover.yml"  # relative to the test file

    def pick(self, production, fast):
        """A time in seconds (or any value) for this profile."""
        return fast if self.fast else production


# --- The world: what a probe started at time t sees ----------------------------------------------

class Fault:
    """Probes matching every given field and started in [start, end) (seconds) end with `result`,
    after `latency` ms when given (else the timeout for a timeout, LATENCY for anything else)."""

    def __init__(self, result, start=0, end=None, regions=None, probers=None, tables=None, ops=None,
                 latency=None):
        self.result, self.start, self.end = result, start * 1000, None if end is None else end * 1000
        self.latency = latency
        self.regions, self.probers, self.tables, self.ops = regions, probers, tables, ops

    def matches(self, prober, region, table, op, t):
        return (self.start <= t and (self.end is None or t < self.end)
                and all(s is None or v in s for s, v in
                        ((self.regions, region), (self.probers, prober), (self.tables, table), (self.ops, op))))


class AppFault(Fault):
    """Application checks matching every given field and started in [start, end) (seconds) end
    with `result` (one of APP_RESULTS)."""

    def __init__(self, result, start=0, end=None, regions=None, probers=None, checks=None, latency=None):
        assert result in APP_RESULTS, result
        super().__init__(result, start, end, regions, probers, tables=checks, latency=latency)


class Prober:
    """`phase` (s) of its first probe; `offset` (s) of its scrapes; `lives` of its later processes:
    (down_at, up_at, new_phase) in seconds, `up_at` None for never."""

    def __init__(self, name, phase, offset, restarts=()):
        self.name, self.phase, self.offset = name, round(phase * 1000), round(offset * 1000)
        self.restarts = [(round(a * 1000), None if b is None else round(b * 1000), round(p * 1000)) for a, b, p in restarts]
        self.instance = f"{name}:9464"

    def lives(self, duration):
        """(start, stop, first_probe, warm) per process."""
        out, start, first, warm = [], 0, self.phase, True
        for down, up, phase in self.restarts:
            out.append((start, down, first, warm))
            if up is None:
                return out
            start, first, warm = up, up + phase, False
        out.append((start, duration + 1, first, warm))
        return out


class Scenario:
    def __init__(self, pf, title, seconds, probers, faults=(), regions=(EAST,), tables=("posts",),
                 required=None, grid=None, ops=("read", "write"), durations=False, app_checks=None,
                 app_probers=None):
        self.pf, self.title, self.duration = pf, title, round(seconds * 1000)
        self.ops = ops  # the replication probe never votes; scenarios where it matters include it
        self.grid = grid or pf.scrape  # ms between input samples; scrape offsets are multiples of it
        self.probers, self.faults, self.regions, self.tables = probers, list(faults), regions, tables
        self.required = required  # None: an exporter without dynamodb_probe_table_required
        self.durations = durations  # also the duration histogram (only latency scenarios read it)
        self.app_checks = app_checks or {}  # region -> names of its application checks
        self.app_probers = app_probers  # the probers that run them (None: every prober)
        self.alert_tests, self.expr_tests = [], []

    def outcome(self, prober, region, table, op, t):
        """(result, duration in ms) of the probe started at t (ms); op "app" is the application
        check `table` instead."""
        app = op == "app"
        for f in reversed(self.faults):
            if isinstance(f, AppFault) == app and f.matches(prober, region, table, op, t):
                if f.latency is not None:
                    return f.result, f.latency
                timeout = self.pf.app_timeout if app else self.pf.timeout
                return f.result, timeout if f.result == "timeout" else LATENCY
        return "success", LATENCY

    # --- expectations ---

    def alerts(self, t, name, expected):
        self.alert_tests.append((t, name, expected))

    def check(self, t, down=(), ops=(), tables=(), misconfigured=()):
        """At t (s): exactly these alerts of the vote and of misconfiguration fire."""
        self.alerts(t, "DynamoDBRegionUnavailable", list(down))
        self.alerts(t, "DynamoDBRegionOperationFailing", list(ops))
        self.alerts(t, "DynamoDBTableUnavailable", list(tables))
        self.alerts(t, "DynamoDBProbeMisconfigured", list(misconfigured))

    def expr(self, t, expr, samples):
        self.expr_tests.append((t, expr, samples))

    def never_fired(self, t, names=VOTING):
        """No alert of `names` was firing at any evaluation up to t (s)."""
        self.expr(t, f'count_over_time(ALERTS{{alertname=~"{"|".join(names)}",alertstate="firing"}}[{t}s])', None)

    # --- the simulation ---

    def series(self):
        pf = self.pf
        slots = {}  # series text -> {slot: token}

        def put(key, t, value):
            assert t % self.grid == 0, (key, t)
            slots.setdefault(key, {})[t // self.grid] = value

        pairs = [(r, tb) for r in self.regions for tb in self.tables]
        app_pairs = [(r, c) for r in self.regions for c in self.app_checks.get(r, ())]
        for p in self.probers:
            # Results landing, per life: (land_time, life, region, table, op, result, duration);
            # an application check's has its check as table and op "app".
            timeline = []
            for li, (start, stop, first, warm) in enumerate(p.lives(self.duration)):
                for region, table in pairs:
                    # A region's tables (up to 8 of them) share a phase within the interval, as
                    # in the exporter; each region has its own.
                    group = (self.regions.index(region), self.tables.index(table) // 8)
                    s = first + ((group[0] * 3 + group[1]) * 110) % pf.probe
                    while s < stop:
                        for op in self.ops:
                            res, took = self.outcome(p.name, region, table, op, s)
                            land = s + took
                            if land < stop:
                                timeline.append((land, li, region, table, op, res, took))
                        s += pf.probe
                if self.app_probers is None or p.name in self.app_probers:
                    for ci, (region, check) in enumerate(app_pairs):
                        # Each check has its own phase too, apart from the DynamoDB probes'.
                        s = first + (ci * 170 + 50) % pf.probe
                        while s < stop:
                            res, took = self.outcome(p.name, region, check, "app", s)
                            if s + took < stop:
                                timeline.append((s + took, li, region, check, "app", res, took))
                            s += pf.probe
            timeline.sort()
            lives = p.lives(self.duration)
            present_before = set()
            t = p.offset
            while t <= self.duration:
                life = next((i for i, (a, b, _, _) in enumerate(lives) if a <= t < b), None)
                up_key = f'up{{job="dynamo-failover-exporter",instance="{p.instance}"}}'
                put(up_key, t, 1 if life is not None else 0)
                present = {}
                if life is not None:
                    warm = lives[life][3]
                    base = f'job="dynamo-failover-exporter",instance="{p.instance}",prober="{p.name}"'
                    for region, table in pairs:
                        for op in self.ops:
                            landed = [x for x in timeline if x[1] == life and x[0] <= t and x[2:5] == (region, table, op)]
                            lbl = f'{base},region="{region}",table="{table}",operation="{op}"'
                            for res in RESULTS:
                                n = sum(1 for x in landed if x[5] == res) + (WARM if warm and res == "success" else 0)
                                present[f'dynamodb_probe_total{{{lbl},result="{res}"}}'] = n
                            if landed:
                                present[f"dynamodb_probe_success{{{lbl}}}"] = int(landed[-1][5] == "success")
                            elif warm:
                                present[f"dynamodb_probe_success{{{lbl}}}"] = 1
                            if self.durations:
                                # A warm process's earlier probes all took LATENCY.
                                took = [x[6] for x in landed] + ([LATENCY] * WARM if warm else [])
                                name = "dynamodb_probe_duration_seconds"
                                for le in BUCKETS:
                                    present[f'{name}_bucket{{{lbl},le="{le}"}}'] = sum(1 for d in took if d <= float(le) * 1000)
                                present[f'{name}_bucket{{{lbl},le="+Inf"}}'] = len(took)
                                present[f"{name}_count{{{lbl}}}"] = len(took)
                                present[f"{name}_sum{{{lbl}}}"] = round(sum(took) / 1000, 3)
                        if self.required is not None:
                            lbl = f'{base},region="{region}",table="{table}"'
                            present[f"dynamodb_probe_table_required{{{lbl}}}"] = self.required.get(table, 1)
                    if self.app_probers is None or p.name in self.app_probers:
                        for region, check in app_pairs:
                            landed = [x for x in timeline if x[1] == life and x[0] <= t and x[2:5] == (region, check, "app")]
                            lbl = f'{base},region="{region}",check="{check}"'
                            for res in APP_RESULTS:
                                n = sum(1 for x in landed if x[5] == res) + (WARM if warm and res == "success" else 0)
                                present[f'app_probe_total{{{lbl},result="{res}"}}'] = n
                            if landed:
                                present[f"app_probe_success{{{lbl}}}"] = int(landed[-1][5] == "success")
                            elif warm:
                                present[f"app_probe_success{{{lbl}}}"] = 1
                for key in present_before - set(present):
                    put(key, t, "stale")
                for key, v in present.items():
                    put(key, t, v)
                present_before = set(present)
                t += pf.scrape
        t = 0
        while t <= self.duration:
            put('up{job="dynamo-failover-responder",instance="r:9465"}', t, 1)
            t += pf.scrape
        return slots

    def render(self):
        out = [f"  # {line}" if line else "  #" for line in self.title.strip().splitlines()]
        out.append(f"  - interval: {dur(self.grid)}")
        out.append("    input_series:")
        for key, toks in self.series().items():
            out.append(f"      - series: '{key}'")
            out.append(f"        values: '{values(toks)}'")
        if self.alert_tests:
            out.append("    alert_rule_test:")
            for t, name, expected in sorted(self.alert_tests, key=lambda x: (x[0], x[1])):
                out.append(f"      - eval_time: {dur(round(t * 1000))}")
                out.append(f"        alertname: {name}")
                if not expected:
                    out.append("        exp_alerts: []")
                    continue
                out.append("        exp_alerts:")
                for a in sorted(expected, key=lambda a: sorted(a["labels"].items())):
                    out.append("          - exp_labels:")
                    out += [f"              {k}: {q(v)}" for k, v in sorted(a["labels"].items())]
                    out.append("            exp_annotations:")
                    out += [f"              {k}: {q(v)}" for k, v in sorted(a["annotations"].items())]
        if self.expr_tests:
            out.append("    promql_expr_test:")
            for t, expr, samples in sorted(self.expr_tests, key=lambda x: x[0]):
                out.append(f"      - expr: {q(expr)}")
                out.append(f"        eval_time: {dur(round(t * 1000))}")
                if not samples:
                    out.append("        exp_samples: []")
                    continue
                out.append("        exp_samples:")
                for labels, value in sorted(samples):
                    out.append(f"          - labels: {q(labels)}")
                    out.append(f"            value: {value}")
        return "\n".join(out)


def q(v):
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def values(toks):
    """promtool's notation: `_xN` is N missing samples, `a+bxN` the N+1 samples a, a+b, .., a+Nb,
    `vxN` N+1 samples v, `stale` a stale marker."""
    seq = [toks.get(i, "_") for i in range(max(toks) + 1)]
    out, i = [], 0
    while i < len(seq):
        v = seq[i]
        j = i + 1
        if isinstance(v, int) and j < len(seq) and isinstance(seq[j], int) and seq[j] >= v:
            step = seq[j] - v
            while j < len(seq) and isinstance(seq[j], int) and seq[j] - seq[j - 1] == step:
                j += 1
        else:
            while j < len(seq) and seq[j] == v:
                j += 1
        n = j - i
        if v == "_":
            out.append("_" if n == 1 else f"_x{n}")
        elif v == "stale":
            out += ["stale"] * n
        elif n == 1:
            out.append(str(v))
        elif n == 2 and seq[i + 1] != v:
            out += [str(v), str(seq[i + 1])]
        else:
            step = seq[i + 1] - v
            out.append(f"{v}x{n - 1}" if step == 0 else f"{v}+{step}x{n - 1}")
        i = j
    return " ".join(out)


# --- Expected alerts, with their annotations as the rules render them -----------------------------

def region_down(region, n, operation):
    return {
        "labels": {"region": region, "severity": "page", "action": "failover"},
        "annotations": {
            "summary": f"DynamoDB in {region} is unavailable ({n} probers agree)",
            "operation": operation,
            "description": f"{n} probers, at least the quorum, see reads or writes of a required table in "
                           f"{region} fail with timeouts, connection errors, 5xx answers or sustained "
                           "throttling, for the whole window. The responder fails traffic over to the next "
                           "healthy region.",
            "runbook_url": "docs/runbook.md#dynamodbregionunavailable",
        },
    }


def op_failing(region, operation, n):
    return {
        "labels": {"region": region, "operation": operation, "severity": "ticket"},
        "annotations": {
            "summary": f"Only {operation}s fail in {region} ({n} probers agree)",
            "description": f"{n} probers, at least the quorum, see DynamoDB {operation}s of a required table "
                           f"in {region} fail for the whole window while the other operation works: a partial "
                           "outage. DynamoDBRegionUnavailable fires as well and moves traffic.",
            "runbook_url": "docs/runbook.md#dynamodbregionoperationfailing",
        },
    }


def table_failing(region, table, n, operation):
    return {
        "labels": {"region": region, "table": table, "severity": "ticket"},
        "annotations": {
            "summary": f"Table {table} fails in {region} ({n} probers agree) while other tables work",
            "operation": operation,
            "description": f"{n} probers, at least the quorum, see reads or writes of {table} in {region} fail "
                           "for the whole window while another table there works. If the table is required "
                           "(the default), DynamoDBRegionUnavailable fires as well and moves traffic; if not, "
                           "nothing moves.",
            "runbook_url": "docs/runbook.md#dynamodbtableunavailable",
        },
    }


def misconfigured(prober, region, table, result):
    return {
        "labels": {"prober": prober, "region": region, "table": table, "result": result, "severity": "page"},
        "annotations": {
            "summary": f"Prober {prober} gets {result} from table {table} in {region}",
            "description": f"Probes of {table} in {region} from {prober} have failed with {result} for the "
                           "whole window. That is a mistake on our side, not an outage: it never moves traffic, "
                           "but the prober is blind there, and the responder's live check (the same reads and "
                           "writes) refuses to move traffic into a region where it fails.",
            "runbook_url": "docs/runbook.md#dynamodbprobemisconfigured",
        },
    }


def prober_down(instance):
    return {
        "labels": {"job": "dynamo-failover-exporter", "instance": instance, "severity": "ticket"},
        "annotations": {
            "summary": f"Prober {instance} cannot be scraped",
            "description": "This prober casts no vote while it is down, so fewer probers remain to make the "
                           "quorum for a region-down decision.",
            "runbook_url": "docs/runbook.md#dynamodbproberdown",
        },
    }


def region_slow(region, probers):
    n = len(probers)
    return {
        "labels": {"region": region, "severity": "ticket"},
        "annotations": {
            "summary": f"DynamoDB reads in {region} are slow ({n} probers see a p99 over 500 ms)",
            "probers": ",".join(sorted(probers)),
            "description": f"{n} probers, at least the quorum, have seen the 99th percentile of consistent "
                           f"reads of the health items in {region} above 500 ms for the whole window (5 "
                           "minutes); the probers annotation names them. One prober alone, which may be "
                           "its own network path, does not raise this. Traffic is not moved for slowness.",
            "runbook_url": "docs/runbook.md#dynamodbregiondegraded",
        },
    }


def app_down(region, n, results):
    return {
        "labels": {"region": region, "severity": "page", "action": "avoid"},
        "annotations": {
            "summary": f"The application in {region} is unavailable ({n} probers see every check fail)",
            "results": results,
            "description": f"{n} probers, at least the quorum, see every application check of {region} fail "
                           "for the whole window; the results annotation names the kinds seen in the last "
                           f"minute. Users there are not served. The responder will not move traffic into "
                           f"{region} while this fires; it does not move traffic out of it for this alert.",
            "runbook_url": "docs/runbook.md#appregionunavailable",
        },
    }


def app_check_failing(region, check, n, results):
    return {
        "labels": {"region": region, "check": check, "severity": "ticket"},
        "annotations": {
            "summary": f"Application check {check} fails in {region} ({n} probers agree) while other checks work",
            "results": results,
            "description": f"{n} probers, at least the quorum, see application check {check} of {region} fail "
                           "for the whole window while another check there works, so AppRegionUnavailable does "
                           "not fire. The responder's live check requires every check to pass: it will not move "
                           f"traffic into {region} until this one does.",
            "runbook_url": "docs/runbook.md#appcheckfailing",
        },
    }


def by_prober(rule, values, **labels):
    """exp_samples of a per-prober recording rule: values maps prober -> value."""
    extra = "".join(f',{k}="{v}"' for k, v in sorted(labels.items()))
    return [(f'{rule}{{prober="{p}"{extra}}}', v) for p, v in values.items()]


def probers(pf, restarts=None):
    """Three probers with different probe phases and scrape offsets."""
    restarts = restarts or {}
    phases = pf.pick([0.7, 2.1, 3.9], [0.15, 0.45, 0.85])
    return [Prober(n, ph, 0, restarts.get(n, ())) for n, ph in zip("abc", phases)]


# --- The scenarios --------------------------------------------------------------------------------
# Times in seconds. With production timings a region outage is detected at most 28.6 s after it
# starts (README, "Thresholds") and the window is 15 s; with the fast profile 6.9 s and 3 s. So a
# fault at t0 fires at the first evaluation at or after t0 + 28.6 (fast t0 + 6.9) at the latest, and
# never before t0 + 15 (fast t0 + 3).

def outage_scenarios(pf):
    out = []
    t0 = pf.pick(30, 10)
    before = pf.pick(42, 12)  # the last evaluation before t0 + the window
    fired = pf.pick(60, 17)  # the first evaluation at or after t0 + worst-case detection
    end = pf.pick(75, 25)

    s = Scenario(pf, """
Write-only outage: every prober's writes to us-east-1 time out, its reads succeed. Either operation
alone is enough: the region fails over, and the partial-outage ticket names the writes.
""", end, probers(pf), [Fault("timeout", t0, regions={EAST}, ops={"write"})], regions=(EAST, WEST))
    s.check(before)
    for t in (fired, end):
        s.check(t, down=[region_down(EAST, 3, "write")], ops=[op_failing(EAST, "write", 3)])
    s.expr(end, "dynamodb:region_operation:failing_probers", [
        (f'dynamodb:region_operation:failing_probers{{operation="{op}",region="{r}"}}', 3 if (r, op) == (EAST, "write") else 0)
        for r in (EAST, WEST) for op in ("read", "write")])
    out.append(s)

    s = Scenario(pf, """
Read-only outage: every prober's reads of us-east-1 get 5xx answers, its writes succeed. The exporter
exports dynamodb_probe_table_required (the table is required).
""", end, probers(pf), [Fault("server_error", t0, regions={EAST}, ops={"read"})], required={})
    s.check(before)
    for t in (fired, end):
        s.check(t, down=[region_down(EAST, 3, "read")], ops=[op_failing(EAST, "read", 3)])
    s.expr(end, 'dynamodb:region_prober_operation:failing{region="us-east-1"}',
           by_prober("dynamodb:region_prober_operation:failing", dict.fromkeys("abc", 1), operation="read", region=EAST)
           + by_prober("dynamodb:region_prober_operation:failing", dict.fromkeys("abc", 0), operation="write", region=EAST))
    out.append(s)

    t1 = pf.pick(80, 25)
    resolved = pf.pick(93, 29)  # t1 + probe interval + scrape + evaluation, on the evaluation grid
    end2 = pf.pick(105, 33)
    s = Scenario(pf, """
Everything fails: the region's DynamoDB is gone (connection refused on every operation), then comes
back. A full outage raises the failover alert only, with both operations in its hint; it resolves
once a probe succeeds again.
""", end2, probers(pf), [Fault("connect_error", t0, t1, regions={EAST})], regions=(EAST, WEST), ops=OPS)
    s.check(before)
    s.check(fired, down=[region_down(EAST, 3, "read,write")])
    s.check(t1 - pf.pick(2, 1), down=[region_down(EAST, 3, "read,write")])
    s.check(resolved)
    s.check(end2)
    s.expr(fired, "dynamodb:region:failing_probers", [
        ('dynamodb:region:failing_probers{region="us-east-1"}', 3), ('dynamodb:region:failing_probers{region="us-west-2"}', 0)])
    s.expr(fired, "dynamodb:region:reporting_probers", [
        ('dynamodb:region:reporting_probers{region="us-east-1"}', 3), ('dynamodb:region:reporting_probers{region="us-west-2"}', 3)])
    out.append(s)

    tables = ("posts", "users", "sessions")
    s = Scenario(pf, """
One table of three: every probe of `sessions` in us-east-1 times out, `posts` and `users` work.
Every table is required (an exporter without dynamodb_probe_table_required), and a region whose
required table fails is down for the application: failover, plus the table ticket.
""", end, probers(pf), [Fault("timeout", t0, regions={EAST}, tables={"sessions"})], tables=tables)
    s.check(before)
    for t in (fired, end):
        s.check(t, down=[region_down(EAST, 3, "read,write")], tables=[table_failing(EAST, "sessions", 3, "read,write")])
    out.append(s)

    s = Scenario(pf, """
One table's writes: writes to `sessions` in us-east-1 fail with 5xx, everything else works. Failover
(hint: write), the table ticket (operation write) and the writes ticket; Alertmanager lets the
table ticket stand for the writes ticket.
""", end, probers(pf), [Fault("server_error", t0, regions={EAST}, tables={"sessions"}, ops={"write"})],
                 tables=tables)
    s.check(before)
    for t in (fired, end):
        s.check(t, down=[region_down(EAST, 3, "write")], ops=[op_failing(EAST, "write", 3)],
                tables=[table_failing(EAST, "sessions", 3, "write")])
    out.append(s)

    s = Scenario(pf, """
One table of three with `sessions` marked not required (dynamodb_probe_table_required 0): it does not vote,
so nothing moves; the table ticket still says it fails.
""", end, probers(pf), [Fault("timeout", t0, regions={EAST}, tables={"sessions"})], tables=tables,
                 required={"sessions": 0})
    s.check(before)
    for t in (fired, end):
        s.check(t, tables=[table_failing(EAST, "sessions", 3, "read,write")])
    s.expr(end, "dynamodb:region:failing_probers", [('dynamodb:region:failing_probers{region="us-east-1"}', 0)])
    s.never_fired(end, ["DynamoDBRegionUnavailable", "DynamoDBRegionOperationFailing"])
    out.append(s)

    tb = pf.pick(60, 20)
    s = Scenario(pf, """
One prober of three cut off from us-east-1 (every probe times out, as a blackhole does) votes the
region failing and moves nothing, however long it lasts; a second prober joining it makes the
quorum and fires.
""", pf.pick(96, 30), probers(pf), [Fault("timeout", 0, regions={EAST}, probers={"c"}),
                                     Fault("timeout", tb, regions={EAST}, probers={"b"})])
    s.expr(pf.pick(30, 10), 'dynamodb:region_prober:failing{region="us-east-1"}',
           by_prober("dynamodb:region_prober:failing", {"a": 0, "b": 0, "c": 1}, region=EAST))
    s.expr(pf.pick(30, 10), 'dynamodb:region:failing_probers{region="us-east-1"}',
           [('dynamodb:region:failing_probers{region="us-east-1"}', 1)])
    s.expr(pf.pick(30, 10), 'dynamodb:region:reporting_probers{region="us-east-1"}',
           [('dynamodb:region:reporting_probers{region="us-east-1"}', 3)])
    s.never_fired(tb + pf.pick(12, 2))
    s.check(tb + pf.pick(12, 2))
    s.check(tb + pf.pick(30, 7), down=[region_down(EAST, 2, "read,write")])
    out.append(s)

    s = Scenario(pf, """
Probers split between operations: a sees reads of us-east-1 time out, b sees writes time out, c
sees everything work. Two probers vote the region failing, so it fails over; no operation fails on
a quorum, so there is no partial-outage ticket, and the hint lists every failing operation.
""", end, probers(pf), [Fault("timeout", t0, regions={EAST}, probers={"a"}, ops={"read"}),
                        Fault("timeout", t0, regions={EAST}, probers={"b"}, ops={"write"})])
    s.check(before)
    s.check(end, down=[region_down(EAST, 2, "read,write")])
    out.append(s)

    blip = pf.pick(10, 2)
    s = Scenario(pf, f"""
A blip shorter than the window: every probe of us-east-1 from every prober times out for {blip} s
(two probes each). Nothing fires, ever.
""", pf.pick(75, 25), probers(pf), [Fault("timeout", t0, t0 + blip, regions={EAST})])
    s.expr(t0 + pf.pick(9, 2), 'dynamodb:region:failing_probers{region="us-east-1"}',
           [('dynamodb:region:failing_probers{region="us-east-1"}', 3)])
    s.never_fired(pf.pick(75, 25))
    out.append(s)

    blip = pf.pick(14.9, 2.9)
    s = Scenario(pf, f"""
The longest blip that never fires: every probe of us-east-1 is refused for {blip} s, just under the
window. Three probes each (fast: three) fail; each prober's gauge shows failure for at most the
window, so no evaluation sequence as long as the window sees a quorum voting.
""", pf.pick(75, 25), probers(pf), [Fault("connect_error", t0, t0 + blip, regions={EAST})])
    s.never_fired(pf.pick(75, 25))
    out.append(s)
    return out


def detection_scenarios(pf):
    """The worst case, on the evaluation grid: the region fails 50 ms after a probe's answer, so the
    first failing probe leaves a whole interval later; it times out (timeout + cut-off margin) 100 ms
    after a scrape, so the next scrape sees it; that scrape lands 100 ms after an evaluation, so the
    next evaluation sees it; then the window. Two probers (the quorum) have this phase."""
    out = []
    # Evaluations at multiples of E. Scrapes at 100 ms past each (offset 0.1 s). The failing probe's
    # result lands at m*E + 0.2 s, so it starts at m*E + 0.2 - (timeout + margin).
    E, P = pf.eval / 1000, pf.probe / 1000
    m = pf.pick(13, 20)
    start = m * E + 0.2 - pf.timeout / 1000  # first failing probe: 36.6 s (fast 19.3 s)
    t0 = round(start - P + LATENCY / 1000 + 0.02, 3)  # 50 ms after the previous probe started, 20 ms after its answer
    phase = round(start % P, 3)
    pending = (m + 2) * E  # scrape at (m+1)E + 0.1 sees it, evaluation (m+2)E sees that scrape
    fire = pending + pf.pick(15, 3)
    ps = [Prober(n, phase, 0.1) for n in "abc"]
    s = Scenario(pf, f"""
Worst-case detection: the region fails at {t0} s, just after every prober's probe succeeded; the
first failing probe starts at {start:g} s and its timeout lands at {m * E + 0.2:g} s, just after a
scrape; the next scrape is just after an evaluation. Pending from {pending:g} s, firing at {fire:g} s:
{fire - t0:.2f} s after the fault (the sum in the README without its epsilons: {pf.pick('28.6', '6.9')} s).
""", fire + 2 * E, ps, [Fault("timeout", t0, regions={EAST})], grid=100, ops=OPS)
    s.expr(pending - E, 'ALERTS{alertname="DynamoDBRegionUnavailable"}', None)
    s.expr(pending, 'ALERTS{alertname="DynamoDBRegionUnavailable"}', [
        ('ALERTS{alertname="DynamoDBRegionUnavailable",alertstate="pending",action="failover",region="us-east-1",severity="page"}', 1)])
    s.alerts(fire - E, "DynamoDBRegionUnavailable", [])
    s.alerts(fire, "DynamoDBRegionUnavailable", [region_down(EAST, 3, "read,write")])
    out.append(s)
    return out


def misconfiguration_scenarios(pf):
    out = []
    t0 = pf.pick(30, 10)
    window_not_yet = pf.pick(87, 14)  # before t0 + the misconfiguration window (1 m, fast 5 s)
    fired = pf.pick(102, 19)  # t0 + probe + scrape + evaluation + the window, on the evaluation grid
    end = pf.pick(110, 25)
    everywhere = [misconfigured(p, r, "posts", "access_denied") for p in "abc" for r in (EAST, WEST)]

    s = Scenario(pf, """
access_denied everywhere (our own IAM or credential mistake): every probe of every region from
every prober is refused. It never votes: no failover, no partial-outage ticket; it pages as
DynamoDBProbeMisconfigured per prober, region and table once it has lasted its window.
""", end, probers(pf), [Fault("access_denied", t0)], regions=(EAST, WEST), ops=OPS)
    s.check(window_not_yet)
    s.check(fired, misconfigured=everywhere)
    s.check(end, misconfigured=everywhere)
    s.expr(end, "dynamodb:region:failing_probers", [
        ('dynamodb:region:failing_probers{region="us-east-1"}', 0), ('dynamodb:region:failing_probers{region="us-west-2"}', 0)])
    s.never_fired(end)
    out.append(s)

    s = Scenario(pf, """
no_credentials everywhere (no credentials resolve on the probers, nothing reaches DynamoDB): like
access_denied it never votes, no failover and no ticket; it pages as DynamoDBProbeMisconfigured.
""", end, probers(pf), [Fault("no_credentials", t0)], regions=(EAST, WEST), ops=OPS)
    keyless = [misconfigured(p, r, "posts", "no_credentials") for p in "abc" for r in (EAST, WEST)]
    s.check(window_not_yet)
    s.check(fired, misconfigured=keyless)
    s.expr(end, "dynamodb:region:failing_probers", [
        ('dynamodb:region:failing_probers{region="us-east-1"}', 0), ('dynamodb:region:failing_probers{region="us-west-2"}', 0)])
    s.never_fired(end)
    out.append(s)

    s = Scenario(pf, """
missing_item everywhere: the health item was deleted, and the deletion replicated, so every read
finds nothing (writes work). It never votes; it pages as a misconfiguration.
""", end, probers(pf), [Fault("missing_item", t0, ops={"read"})], regions=(EAST, WEST))
    s.check(window_not_yet)
    s.check(fired, misconfigured=[misconfigured(p, r, "posts", "missing_item") for p in "abc" for r in (EAST, WEST)])
    s.never_fired(end)
    out.append(s)

    s = Scenario(pf, """
condition_failed: prober b's canary writes to us-east-1 are refused (another prober shares its id,
or its clock went back). Only b's writes; no vote, a page for b.
""", end, probers(pf), [Fault("condition_failed", t0, regions={EAST}, probers={"b"}, ops={"write"})])
    s.check(window_not_yet)
    s.check(fired, misconfigured=[misconfigured("b", EAST, "posts", "condition_failed")])
    s.never_fired(end)
    out.append(s)

    t1 = pf.pick(60, 20)
    s = Scenario(pf, """
A stray timeout among refusals is no vote: access_denied everywhere, and one probe of every prober
times out at the same moment. The refusals outnumber it in the window, so nobody votes.
""", pf.pick(100, 35), probers(pf), [Fault("access_denied", 0), Fault("timeout", t1, t1 + pf.probe / 1000)])
    s.expr(pf.pick(100, 35), f'max_over_time(dynamodb:region:failing_probers[{pf.pick(100, 35)}s])',
           [('{region="us-east-1"}', 0)])
    s.never_fired(pf.pick(100, 35))
    out.append(s)

    t1 = pf.pick(90, 20)
    s = Scenario(pf, """
A misconfiguration does not hide an outage: access_denied everywhere, then us-east-1 stops
answering (timeouts). Once the timeouts are at least as many as the refusals in the last 20 s
(fast 5 s) the probers vote, and the region fails over; its misconfiguration pages resolve
while us-west-2's stay.
""", pf.pick(140, 35), probers(pf), [Fault("access_denied", 0), Fault("timeout", t1, regions={EAST})],
                 regions=(EAST, WEST))
    s.check(t1 - pf.pick(3, 1), misconfigured=everywhere)
    s.check(t1 + pf.pick(12, 2), misconfigured=everywhere)
    late = pf.pick(135, 33)
    s.check(late, down=[region_down(EAST, 3, "read,write")],
            misconfigured=[misconfigured(p, WEST, "posts", "access_denied") for p in "abc"])
    out.append(s)
    return out


def throttling_scenarios(pf):
    out = []
    t0 = pf.pick(30, 10)
    burst = pf.pick(45, 5)
    s = Scenario(pf, f"""
A throttling burst of {burst} s, shorter than the 1 m (fast 10 s) that makes throttling sustained:
every probe of us-east-1 from every prober is throttled, then they succeed again. No vote at all,
nothing fires.
""", pf.pick(140, 30), probers(pf), [Fault("throttled", t0, t0 + burst, regions={EAST})])
    s.expr(pf.pick(140, 30), f'max_over_time(dynamodb:region:failing_probers{{region="us-east-1"}}[{pf.pick(140, 30)}s])',
           [('{region="us-east-1"}', 0)])
    s.never_fired(pf.pick(140, 30))
    out.append(s)

    s = Scenario(pf, """
Sustained throttling: every probe of us-east-1 is throttled from t0 on. The probers vote once the
increase of their success counter over the last 1 m (fast 10 s) is 0, which is 52 to 63 s (fast 8
to 11 s) after t0: the window less up to one probe and one scrape interval, or plus one
evaluation. Then the region's window: not firing before t0 + 67 s (fast 11 s), firing by
t0 + 81 s (fast 15 s).
""", pf.pick(125, 28), probers(pf), [Fault("throttled", t0, regions={EAST})])
    s.check(pf.pick(96, 20))
    s.check(pf.pick(114, 26), down=[region_down(EAST, 3, "read,write")])
    out.append(s)
    return out


def prober_scenarios(pf):
    out = []
    down, up = pf.pick(30, 10), pf.pick(40, 12)
    end = pf.pick(90, 30)
    s = Scenario(pf, """
A prober restarts: c is not scraped for a while (its series go stale), then comes back as a new
process (counters from 0, a new phase). No vote appears or disappears by mistake; nothing fires.
""", end, probers(pf, {"c": [(down, up, pf.pick(1.1, 0.35))]}))
    s.expr(down + pf.pick(5, 1), 'dynamodb:region:reporting_probers{region="us-east-1"}',
           [('dynamodb:region:reporting_probers{region="us-east-1"}', 2)])
    s.expr(end, 'dynamodb:region_prober:failing{region="us-east-1"}',
           by_prober("dynamodb:region_prober:failing", dict.fromkeys("abc", 0), region=EAST))
    s.expr(end, f'max_over_time(dynamodb:region:failing_probers[{end}s])', [('{region="us-east-1"}', 0)])
    s.never_fired(end, VOTING + ["DynamoDBProbeMisconfigured"])
    out.append(s)

    t0 = pf.pick(20, 5)
    down, up = pf.pick(60, 15), pf.pick(70, 17)
    end = pf.pick(100, 25)
    s = Scenario(pf, """
A prober restarts during an outage: us-east-1 refuses connections from t0; c restarts in the middle.
a and b keep the quorum, so the alert stays firing through the gap (2 probers agree) and c votes
again after its first probe (3 agree).
""", end, probers(pf, {"c": [(down, up, pf.pick(3.3, 0.6))]}), [Fault("connect_error", t0, regions={EAST})])
    s.check(pf.pick(51, 12), down=[region_down(EAST, 3, "read,write")])
    s.check(down + pf.pick(3, 1), down=[region_down(EAST, 2, "read,write")])
    s.check(end, down=[region_down(EAST, 3, "read,write")])
    # Firing at every evaluation from its first until the end: it never went back to pending.
    first = pf.pick(51, 12)
    span = end - first
    s.expr(end, f'count_over_time(ALERTS{{alertname="DynamoDBRegionUnavailable",alertstate="firing"}}[{span}s])',
           [('{action="failover",alertname="DynamoDBRegionUnavailable",alertstate="firing",region="us-east-1",severity="page"}',
             int(span * 1000 // pf.eval) + 1)])
    out.append(s)

    gone = pf.pick(20, 5)
    end = pf.pick(110, 15)
    s = Scenario(pf, """
A prober that disappears fires its own alert and is no vote for the region: with a gone, b (cut off,
failing) alone is not a quorum.
""", end, probers(pf, {"a": [(gone, None, 0)]}), [Fault("timeout", 0, regions={EAST}, probers={"b"})])
    s.check(end)
    s.alerts(end, "DynamoDBProberDown", [prober_down("a:9464")])
    s.expr(end, "dynamodb:region:reporting_probers", [('dynamodb:region:reporting_probers{region="us-east-1"}', 2)])
    out.append(s)
    return out


def latency_scenarios(pf):
    out = []
    slow = 600  # ms: over DynamoDBRegionDegraded's 500 ms, under the probe timeout of both profiles
    t1 = pf.pick(330, 10)  # c has been slow for longer than the alert's window (5 m, fast 5 s)
    pending = pf.pick(333, 12)  # b's first slow read lands (332.7 s, fast 11.05 s), is scraped, is evaluated
    fire = pending + pf.pick(300, 5)
    s = Scenario(pf, """
Slow reads from one prober of three (c's reads of us-east-1 take 600 ms and succeed, as over a
congested path of its own) never raise DynamoDBRegionDegraded, however long it lasts; a second
prober's reads turning slow make the quorum, and the alert fires after its window.
""", fire + pf.pick(6, 2), probers(pf), [Fault("success", 0, regions={EAST}, probers={"c"}, ops={"read"}, latency=slow),
                                      Fault("success", t1, regions={EAST}, probers={"b"}, ops={"read"}, latency=slow)],
                 durations=True)
    s.expr(t1 - pf.pick(3, 1), 'dynamodb:region_prober:read_latency_p99_5m > bool 0.5',
           by_prober("", {"a": 0, "b": 0, "c": 1}, region=EAST))
    s.expr(pending - pf.eval / 1000, 'ALERTS{alertname="DynamoDBRegionDegraded"}', None)
    s.expr(pending, 'ALERTS{alertname="DynamoDBRegionDegraded"}', [
        ('ALERTS{alertname="DynamoDBRegionDegraded",alertstate="pending",region="us-east-1",severity="ticket"}', 1)])
    s.never_fired(round(fire - pf.eval / 1000), ["DynamoDBRegionDegraded"])
    s.alerts(fire, "DynamoDBRegionDegraded", [region_slow(EAST, "bc")])
    s.check(fire)  # slow is not down
    out.append(s)
    return out


# --- Application checks -----------------------------------------------------------------------------
# A prober votes a region's application down while every check of the region it runs is failing;
# AppRegionUnavailable fires after 30 s (fast 3 s) of a quorum (2) voting. With the probers' scrapes
# on the evaluation grid, a fault at t0 (on the grid) is first seen at the first evaluation at or
# after its first failed check lands (t0 + 0.03 s at the earliest; at the latest a probe interval
# later, plus the check's timeout of 2 s, fast 0.8 s, and the cut-off's 0.1 s for a timeout). So
# it never fires at t0 + the window, and fires by the first evaluation at or after t0 + probe
# interval + landing, plus the window: connect_error 30 + 66 (fast 10 + 15), timeout 30 + 69
# (fast 10 + 15).
APP = ["AppRegionUnavailable", "AppCheckFailing"]
LB = {EAST: ("load-balancer",), WEST: ("load-balancer",)}


def app_scenarios(pf):
    out = []
    window = pf.pick(30, 3)
    t0 = pf.pick(30, 10)
    before = t0 + window
    fired = pf.pick(66, 15)  # connect_error: the first evaluation at or after t0 + 5.03 s (fast 1.03 s), + the window
    end = pf.pick(93, 72)  # a whole minute of failures: the success ratio is 0

    s = Scenario(pf, """
The application in us-east-1 refuses connections for every prober (its load balancer is gone);
us-west-2 works, and DynamoDB works in both. AppRegionUnavailable fires for us-east-1 after its
window and stays; the DynamoDB votes never move. The success ratio recorded for the dashboard is 0
once the failures fill its minute.
""", end, probers(pf), [AppFault("connect_error", t0, regions={EAST})], regions=(EAST, WEST), app_checks=LB)
    s.alerts(before, "AppRegionUnavailable", [])
    for t in (fired, end):
        s.alerts(t, "AppRegionUnavailable", [app_down(EAST, 3, "connect_error")])
        s.alerts(t, "AppCheckFailing", [])
    s.expr(fired, "app:region:failing_probers", [
        ('app:region:failing_probers{region="us-east-1"}', 3), ('app:region:failing_probers{region="us-west-2"}', 0)])
    s.expr(fired, "app:region:reporting_probers", [
        ('app:region:reporting_probers{region="us-east-1"}', 3), ('app:region:reporting_probers{region="us-west-2"}', 3)])
    s.expr(end, "app:region_check:success_ratio_rate1m", [
        ('app:region_check:success_ratio_rate1m{check="load-balancer",region="us-east-1"}', 0),
        ('app:region_check:success_ratio_rate1m{check="load-balancer",region="us-west-2"}', 1)])
    s.never_fired(end)
    out.append(s)

    tb = pf.pick(60, 20)
    s = Scenario(pf, """
One prober of three (c) sees every check of us-east-1 time out, as over a path of its own: one vote,
no quorum, nothing fires however long it lasts. A second prober (b) seeing the same makes the
quorum: it fires after the window.
""", pf.pick(99, 25), probers(pf), [AppFault("timeout", 0, regions={EAST}, probers={"c"}),
                                    AppFault("timeout", tb, regions={EAST}, probers={"b"})],
                 ops=(), app_checks={EAST: ("load-balancer",)})
    s.expr(pf.pick(30, 10), 'app:region_prober:failing', by_prober("app:region_prober:failing", {"a": 0, "b": 0, "c": 1}, region=EAST))
    s.expr(pf.pick(30, 10), 'app:region:failing_probers', [('app:region:failing_probers{region="us-east-1"}', 1)])
    s.expr(pf.pick(30, 10), 'app:region:reporting_probers', [('app:region:reporting_probers{region="us-east-1"}', 3)])
    # b's first timeout lands 2.1 s (fast 0.9 s) after tb at the earliest: pending from tb + 3 s (fast 1 s).
    s.never_fired(tb + window, APP)
    s.alerts(pf.pick(99, 25), "AppRegionUnavailable", [app_down(EAST, 2, "timeout")])
    out.append(s)

    t1 = pf.pick(90, 20)
    s = Scenario(pf, """
One check of two: every prober's direct check of one droplet (droplet-1) of us-east-1 gets a 502
while the load balancer's check works. Users are served: no vote, no AppRegionUnavailable, but the
AppCheckFailing ticket (the responder's live check would refuse the region). Then the load
balancer's check times out too: every check fails, the region's application is down; the ticket
gives way to the page, whose results name both kinds.
""", pf.pick(129, 25), probers(pf), [AppFault("bad_status", t0, regions={EAST}, checks={"droplet-1"}),
                                     AppFault("timeout", t1, regions={EAST}, checks={"load-balancer"})],
                 ops=(), app_checks={EAST: ("load-balancer", "droplet-1")})
    s.alerts(before, "AppCheckFailing", [])
    for t in (fired, t1):
        s.alerts(t, "AppCheckFailing", [app_check_failing(EAST, "droplet-1", 3, "bad_status")])
        s.alerts(t, "AppRegionUnavailable", [])
    s.expr(t1, "app:region_prober:failing", by_prober("app:region_prober:failing", dict.fromkeys("abc", 0), region=EAST))
    s.expr(t1, "app:region_check:failing_probers", [
        ('app:region_check:failing_probers{check="droplet-1",region="us-east-1"}', 3),
        ('app:region_check:failing_probers{check="load-balancer",region="us-east-1"}', 0)])
    s.never_fired(t1 + window, ["AppRegionUnavailable"])
    # The load balancer's first timeouts land by t1 + 7.1 s (fast 1.9 s): votes by the next evaluation.
    s.alerts(pf.pick(99, 22), "AppCheckFailing", [])
    s.alerts(pf.pick(129, 25), "AppRegionUnavailable", [app_down(EAST, 3, "bad_status,timeout")])
    s.alerts(pf.pick(129, 25), "AppCheckFailing", [])
    out.append(s)

    t1 = pf.pick(90, 25)
    resolved = pf.pick(96, 27)  # the first evaluation at or after t1 + 5.03 s (fast 1.03 s)
    s = Scenario(pf, """
Recovery: us-east-1's application refuses connections from t0 to t1, then serves again. The alert
fires, is still firing at t1, and resolves once the probers' next checks succeed (within a probe
interval, a scrape and an evaluation).
""", resolved + pf.pick(6, 2), probers(pf), [AppFault("connect_error", t0, t1, regions={EAST})],
                 regions=(EAST, WEST), ops=(), app_checks=LB)
    s.alerts(before, "AppRegionUnavailable", [])
    for t in (fired, t1):
        s.alerts(t, "AppRegionUnavailable", [app_down(EAST, 3, "connect_error")])
    s.alerts(resolved, "AppRegionUnavailable", [])
    s.alerts(resolved + pf.pick(6, 2), "AppRegionUnavailable", [])
    s.expr(resolved, "app:region:failing_probers", [
        ('app:region:failing_probers{region="us-east-1"}', 0), ('app:region:failing_probers{region="us-west-2"}', 0)])
    out.append(s)

    blip = pf.pick(15, 1)
    s = Scenario(pf, f"""
A blip shorter than the window: every check of us-east-1 from every prober is refused for {blip} s
(three checks each; fast: one). Every prober votes for a moment; nothing fires, ever.
""", pf.pick(75, 25), probers(pf), [AppFault("connect_error", t0, t0 + blip, regions={EAST})],
                 ops=(), app_checks={EAST: ("load-balancer",)})
    s.expr(t0 + pf.pick(9, 1), "app:region:failing_probers", [('app:region:failing_probers{region="us-east-1"}', 3)])
    s.never_fired(pf.pick(75, 25), APP)
    out.append(s)

    gone_a, gone_b = pf.pick(75, 18), pf.pick(90, 22)
    s = Scenario(pf, """
Probers that stop being scraped stop voting: every prober sees us-east-1's application refuse
connections; a disappears (its series go stale), leaving two votes, still the quorum; then b
disappears too: one vote left, the alert resolves. Stale probers do not count as reporting either.
""", gone_b + pf.pick(6, 3), probers(pf, {"a": [(gone_a, None, 0)], "b": [(gone_b, None, 0)]}),
                 [AppFault("connect_error", t0, regions={EAST})], ops=(), app_checks={EAST: ("load-balancer",)})
    s.alerts(fired, "AppRegionUnavailable", [app_down(EAST, 3, "connect_error")])
    s.alerts(gone_a + pf.pick(3, 1), "AppRegionUnavailable", [app_down(EAST, 2, "connect_error")])
    s.alerts(gone_b, "AppRegionUnavailable", [])
    s.expr(gone_b, "app:region:reporting_probers", [('app:region:reporting_probers{region="us-east-1"}', 1)])
    out.append(s)

    s = Scenario(pf, """
No prober exports application checks (no [[region.app_check]], or exporters from before them), and
DynamoDB in us-east-1 refuses connections: DynamoDBRegionUnavailable fires; the application alerts
never do, and no prober reports on the application.
""", pf.pick(75, 25), probers(pf), [Fault("connect_error", t0, regions={EAST})], regions=(EAST, WEST))
    s.check(pf.pick(75, 25), down=[region_down(EAST, 3, "read,write")])
    s.expr(pf.pick(75, 25), "app:region:reporting_probers", None)
    s.never_fired(pf.pick(75, 25), APP)
    out.append(s)

    s = Scenario(pf, """
Only c exports application checks (a and b have none configured, or run an older exporter), and c
sees every check of us-east-1 fail: one prober reports and votes, no quorum, nothing fires. The
probers without checks count neither way.
""", pf.pick(90, 25), probers(pf), [AppFault("connect_error", 0, regions={EAST})], ops=(),
                 app_checks={EAST: ("load-balancer",)}, app_probers={"c"})
    s.expr(pf.pick(90, 25), "app:region:reporting_probers", [('app:region:reporting_probers{region="us-east-1"}', 1)])
    s.expr(pf.pick(90, 25), "app:region:failing_probers", [('app:region:failing_probers{region="us-east-1"}', 1)])
    s.never_fired(pf.pick(90, 25), APP)
    out.append(s)
    return out


# --- The agents: what the responder replicas export about them ------------------------------------
# Every replica exports failover_placement_epoch, failover_agent_applied_epoch{agent} (from the
# shared state: the same on every replica) and failover_agent_last_seen_timestamp_seconds{agent}
# (the Unix time the agent last reached THAT replica; 0 until it has, since that replica's process
# started). Times in whole seconds; promtool's clock starts at 0, so a 0 "last seen" reads as
# "seen at 0": scenarios about never-seen agents start the responders well after the limit.

class Agent:
    """One application server's agent. It long-polls its current replica every `poll` s from
    `phase`; a placement answers the poll at once, and it acknowledges `lag[epoch]` s later (None or
    missing: it never applies that epoch; its polls go on). When its replica goes down the poll
    breaks and it moves to the next replica at once; when none answers it retries every `retry`
    s. `silent`: (from, to) spans (to None: for good) in which it reaches nobody."""

    def __init__(self, name, phase, silent=(), lag=None):
        self.name, self.phase, self.silent, self.lag = name, phase, list(silent), lag or {}

    def is_silent(self, t):
        return any(a <= t and (b is None or t < b) for a, b in self.silent)


class Fleet(Scenario):
    """Responder replicas r1, r2, ... first started at `start`; `down`: (replica, from, to) spans
    (to None: for good), after which the replica is a new process; `placements`: (t, epoch), the
    placement's epoch from t on (0 before the first)."""

    def __init__(self, pf, title, seconds, agents, replicas=2, down=(), start=0, placements=()):
        super().__init__(pf, title, seconds, [])
        self.agents, self.start = agents, start
        self.replicas = [f"r{i + 1}" for i in range(replicas)]
        self.down, self.placements = list(down), sorted(placements)
        self.poll, self.retry = pf.pick(30, 2), pf.pick(10, 1)

    def up(self, r, t):
        return t >= self.start and not any(x == r and a <= t and (b is None or t < b) for x, a, b in self.down)

    def process_start(self, r, t):
        """When the process of replica r that runs at t started."""
        return max([self.start] + [b for x, _, b in self.down if x == r and b is not None and b <= t])

    def epoch_at(self, t):
        return max([0] + [e for at, e in self.placements if at <= t])

    def contacts(self, agent):
        """[(t, replica)] of every request that reached a replica."""
        out, cur, due = [], 0, agent.phase
        acks = {at + agent.lag[e] for at, e in self.placements if agent.lag.get(e) is not None}
        for t in range(self.duration // 1000 + 1):
            if agent.is_silent(t):
                due = max(due, t + 1)  # it tries again as soon as it can
                continue
            broken = t > 0 and self.up(self.replicas[cur], t - 1) and not self.up(self.replicas[cur], t)
            if not (t >= due or broken or t in acks):
                continue
            for k in range(len(self.replicas)):
                r = (cur + k) % len(self.replicas)
                if self.up(self.replicas[r], t):
                    cur = r
                    out.append((t, self.replicas[r]))
                    due = t + self.poll
                    break
            else:
                due = t + self.retry
        return out

    def applied(self, agent, t):
        done = [e for at, e in self.placements if agent.lag.get(e) is not None and at + agent.lag[e] <= t]
        return max([0] + done)

    def series(self):
        slots, before = {}, {r: set() for r in self.replicas}
        contacts = {a.name: self.contacts(a) for a in self.agents}

        def put(key, t, value):
            slots.setdefault(key, {})[t // self.grid] = value

        t = 0
        while t <= self.duration:
            ts = t // 1000
            for r in self.replicas:
                base = f'job="dynamo-failover-responder",instance="{r}:9465"'
                if ts < self.start:
                    continue
                put(f"up{{{base}}}", t, 1 if self.up(r, ts) else 0)
                present = {}
                if self.up(r, ts):
                    present[f"failover_placement_epoch{{{base}}}"] = self.epoch_at(ts)
                    born = self.process_start(r, ts)
                    for a in self.agents:
                        lbl = f'{base},agent="{a.name}"'
                        present[f"failover_agent_applied_epoch{{{lbl}}}"] = self.applied(a, ts)
                        seen = [c for c, x in contacts[a.name] if x == r and born <= c <= ts]
                        present[f"failover_agent_last_seen_timestamp_seconds{{{lbl}}}"] = max(seen, default=0)
                for key in before[r] - set(present):
                    put(key, t, "stale")
                for key, v in present.items():
                    put(key, t, v)
                before[r] = set(present)
            t += self.grid
        return slots


def agent_silent(agent, since=None):
    """FailoverAgentSilent for `agent`, last seen `since` s before (None: never by a running replica)."""
    if since is None:
        summary = f"Agent {agent} has not reached any responder since the responders started"
    else:
        m, s = divmod(since, 60)
        summary = f"Agent {agent} has not reached any responder for {f'{m}m ' if m else ''}{s}s"
    return {
        "labels": {"agent": agent, "severity": "page"},
        "annotations": {
            "summary": summary,
            "description": f"The agent of application server {agent} has not long-polled or acknowledged on "
                           "any responder replica for longer than the silence limit (2 minutes) and the whole "
                           "window. It would not follow the next failover: its server keeps the region it has, "
                           "and with required = \"all\" the next failover into its region stops at the agents "
                           "step (the load balancers and DNS come after it) until the step deadline fails the "
                           "plan.",
            "runbook_url": "docs/runbook.md#failoveragentsilent",
        },
    }


def agent_behind(agent, applied, placement):
    return {
        "labels": {"agent": agent, "severity": "page"},
        "annotations": {
            "summary": f"Agent {agent} applied epoch {applied}, the placement is epoch {placement}",
            "description": f"The application server {agent} has not applied the latest placement for the whole "
                           "window (2 minutes): it still uses the region of an older epoch, which may be the "
                           "region traffic left because it is down. If its region is the target's, the plan "
                           "waits on it at the agents step or has failed there.",
            "runbook_url": "docs/runbook.md#failoveragentbehind",
        },
    }


def agent_scenarios(pf):
    out = []
    limit, window, behind_window = pf.pick(120, 10), pf.pick(60, 5), pf.pick(120, 10)
    E = pf.eval // 1000 if pf.eval % 1000 == 0 else None
    assert E, "the agent scenarios assume a whole-second evaluation interval"

    def on_grid(t):
        """The first evaluation at or after t."""
        return -(-t // E) * E

    # Silent, then back.
    a, b = pf.pick(100, 20), pf.pick(420, 50)
    healthy, quiet = Agent("wp-1", pf.pick(5, 1)), Agent("wp-2", pf.pick(12, 0), silent=[(a, b)])
    s = Fleet(pf, f"""
An agent goes silent at {a} s and comes back at {b} s (wp-2; wp-1 stays healthy), two replicas.
FailoverAgentSilent is pending once the last contact is older than the limit ({limit} s), fires
after the window ({window} s), and resolves at the first scrape after the agent is back.
""", b + pf.pick(30, 5), [healthy, quiet])
    last = max(t for t, _ in s.contacts(quiet) if t < a)
    pending = on_grid(last + limit + 1)
    fire = pending + window
    s.expr(pending - E, 'ALERTS{alertname="FailoverAgentSilent"}', None)
    s.expr(pending, 'ALERTS{alertname="FailoverAgentSilent"}', [
        ('ALERTS{alertname="FailoverAgentSilent",alertstate="pending",agent="wp-2",severity="page"}', 1)])
    s.alerts(fire - E, "FailoverAgentSilent", [])
    s.alerts(fire, "FailoverAgentSilent", [agent_silent("wp-2", fire - last)])
    s.alerts(b - E, "FailoverAgentSilent", [agent_silent("wp-2", b - E - last)])
    s.alerts(on_grid(b + pf.scrape // 1000), "FailoverAgentSilent", [])
    s.expr(b + pf.pick(30, 5), 'count_over_time(ALERTS{alertname="FailoverAgentSilent",agent="wp-1"}'
           f'[{b + pf.pick(30, 5)}s])', None)
    out.append(s)

    # Responders restart: one replica, then every replica at once (a deployment, or the only one).
    r1, r2 = pf.pick(100, 10), pf.pick(300, 30)
    hang = pf.pick(35, 6)  # poll_wait + request_timeout (fast: the test kit's 2 s + 1 s, and a retry)
    end = pf.pick(500, 60)
    s = Fleet(pf, f"""
Responder restarts are not silence: r1 restarts at {r1} s (its agents move to r2 at once), then
both restart together at {r2} s, the machines going away so uncleanly that the agents' polls hang
until their request timeout ({hang} s) before they retry. The restarted replicas show 0 for every
agent until the agent reaches them again; the max over replicas and over the last 2 m (fast 10 s)
keeps the contact before the restart, so FailoverAgentSilent is never even pending.
""", end, [Agent("wp-1", pf.pick(5, 1), silent=[(r2, r2 + hang)]), Agent("wp-2", pf.pick(20, 0), silent=[(r2, r2 + hang)])],
              down=[("r1", r1, r1 + pf.pick(10, 2)), ("r1", r2, r2 + pf.pick(20, 3)), ("r2", r2, r2 + pf.pick(25, 4))])
    s.expr(end, f'count_over_time(ALERTS{{alertname="FailoverAgentSilent"}}[{end}s])', None)
    # Both replicas are back and show a fresh 0 for both agents, seen before the restart.
    s.expr(r2 + pf.pick(30, 5), 'max by (agent) (failover_agent_last_seen_timestamp_seconds)',
           [('{agent="wp-1"}', 0), ('{agent="wp-2"}', 0)])
    out.append(s)

    # A first start: every agent is 0 until it connects; one listed agent never does.
    start = pf.pick(300, 30)
    late = pf.pick(25, 3)
    s = Fleet(pf, f"""
The responders start for the first time at {start} s (after the limit on promtool's clock, as
every real Unix time is). wp-1 reaches them {late} s later: pending meanwhile, never firing.
wp-3 is listed in [[responder.agents.agent]] but never reaches a replica: it fires after the
window, saying it was never seen.
""", start + pf.pick(120, 20), [Agent("wp-1", 0, silent=[(0, start + late)]), Agent("wp-3", 0, silent=[(0, None)])],
              start=start)
    s.expr(start, 'ALERTS{alertname="FailoverAgentSilent"}', [
        ('ALERTS{alertname="FailoverAgentSilent",alertstate="pending",agent="wp-1",severity="page"}', 1),
        ('ALERTS{alertname="FailoverAgentSilent",alertstate="pending",agent="wp-3",severity="page"}', 1)])
    s.alerts(start + window - E, "FailoverAgentSilent", [])
    s.alerts(start + window, "FailoverAgentSilent", [agent_silent("wp-3")])
    s.expr(start + pf.pick(120, 20), 'count_over_time(ALERTS{alertname="FailoverAgentSilent",agent="wp-1",'
           f'alertstate="firing"}}[{pf.pick(120, 20)}s])', None)
    out.append(s)

    # Behind.
    t1, t2 = pf.pick(60, 10), pf.pick(300, 40)
    fixed = pf.pick(240, 30)
    end = t2 + pf.pick(200, 20)
    quick = pf.pick(2, 1)
    s = Fleet(pf, f"""
A failover at {t1} s (placement epoch 1) and a failback at {t2} s (epoch 2). wp-1 applies each
within {quick} s: never FailoverAgentBehind. wp-2 keeps polling but cannot apply epoch 1 (its
reload fails, say) until {fixed} s: it fires only after the window ({behind_window} s), then
resolves, and follows the failback like wp-1.
""", end, [Agent("wp-1", pf.pick(5, 1), lag={1: quick, 2: quick}),
           Agent("wp-2", pf.pick(20, 0), lag={1: fixed - t1, 2: quick})],
              placements=[(t1, 1), (t2, 2)])
    pending = on_grid(t1)
    s.expr(pending, 'ALERTS{alertname="FailoverAgentBehind"}', [
        ('ALERTS{alertname="FailoverAgentBehind",alertstate="pending",agent="wp-1",severity="page"}', 1),
        ('ALERTS{alertname="FailoverAgentBehind",alertstate="pending",agent="wp-2",severity="page"}', 1)])
    s.alerts(pending + behind_window - E, "FailoverAgentBehind", [])
    s.alerts(pending + behind_window, "FailoverAgentBehind", [agent_behind("wp-2", 0, 1)])
    s.alerts(fixed - E, "FailoverAgentBehind", [agent_behind("wp-2", 0, 1)])
    s.alerts(on_grid(fixed + pf.scrape // 1000), "FailoverAgentBehind", [])
    s.expr(end, f'count_over_time(ALERTS{{alertname="FailoverAgentBehind",alertstate="firing",agent="wp-1"}}[{end}s])', None)
    s.expr(end, f'count_over_time(ALERTS{{alertname="FailoverAgentBehind",alertstate="firing"}}[{end - fixed - pf.pick(3, 1)}s])', None)
    s.expr(end, 'max by (agent) (failover_agent_applied_epoch)', [('{agent="wp-1"}', 2), ('{agent="wp-2"}', 2)])
    out.append(s)
    return out


# --- Readiness of the failover path: what the responder replicas export about it -------------------
# Every replica evaluates every readiness check at its start and every responder.readiness.interval
# (start to start) and exports failover_readiness{check, target} (1 passed, 0 failed, as of its
# latest evaluation; the rows appear at the first evaluation and keep their values until the next),
# failover_readiness_last_evaluation_timestamp_seconds (Unix time the latest evaluation finished;
# 0 from the start until the first does) and, like every process, dynamo_failover_build_info and
# process_start_time_seconds. Promtool's clock starts at 0, so "Unix time" is the test's time.

def readiness_interval(pf):
    """responder.readiness.interval in ms: the default 5 m; the fast profile's 3 s (the test kit's
    chain, crates/testkit/src/chain.rs: 4 DigitalOcean reads every 3 s fit its budget). The fast
    window of failover:readiness:window_failing (5 s) must stay longer than one interval plus an
    evaluation and a scrape (3 + 0.3 + 1 s) and shorter than two intervals (6 s)."""
    return pf.pick(300, 3) * 1000


class Replica:
    """A responder replica whose first process starts at `start` (s). `down`: (from, to) spans (to
    None: for good) in which it is not scraped; at `to` it is a new process. Evaluations that start
    at or after `hang` never finish (nor does any later one: the loop waits on it). `readiness`
    False: a responder that exports no readiness metrics at all."""

    def __init__(self, name, start=0, down=(), hang=None, readiness=True):
        self.name, self.start = name, round(start * 1000)
        self.down = [(round(a * 1000), None if b is None else round(b * 1000)) for a, b in down]
        self.hang = None if hang is None else round(hang * 1000)
        self.readiness = readiness
        self.instance = f"{name}:9465"

    def lives(self, duration):
        """(start, stop) in ms of each process."""
        out, start = [], self.start
        for down, up in self.down:
            out.append((start, down))
            if up is None:
                return out
            start = up
        out.append((start, duration + 1))
        return out


class Broken:
    """Evaluations of (check, target) that start in [start, end) (s) on the given replicas (None:
    every replica) fail."""

    def __init__(self, check, target, start=0, end=None, replicas=None):
        self.check, self.target, self.replicas = check, target, replicas
        self.start, self.end = round(start * 1000), None if end is None else round(end * 1000)

    def matches(self, replica, check, target, t):
        return ((check, target) == (self.check, self.target) and self.start <= t
                and (self.end is None or t < self.end) and (self.replicas is None or replica in self.replicas))


class Readiness(Scenario):
    """Responder replicas evaluating `rows` ((check, target) pairs), with `broken` ones."""

    def __init__(self, pf, title, seconds, replicas, rows, broken=()):
        super().__init__(pf, title, seconds, [])
        self.replicas, self.rows, self.broken = replicas, rows, list(broken)
        self.interval = readiness_interval(pf)
        self.took = pf.pick(2000, 300)  # ms one evaluation takes

    def evaluations(self, rep):
        """[(life, finished at ms, {row: 1|0})] of every evaluation that finishes."""
        out = []
        for li, (start, stop) in enumerate(rep.lives(self.duration)):
            s = start
            while s < stop and (rep.hang is None or s < rep.hang):
                if s + self.took < stop:
                    out.append((li, s + self.took, {r: 0 if any(b.matches(rep.name, *r, s) for b in self.broken) else 1
                                                    for r in self.rows}))
                s += self.interval
        return out

    def finished(self, rep, t):
        """The latest evaluation of the process running at t (ms) that has finished by t, or None."""
        lives = rep.lives(self.duration)
        life = next((i for i, (a, b) in enumerate(lives) if a <= t < b), None)
        done = [e for e in self.evaluations(rep) if e[0] == life and e[1] <= t]
        return done[-1] if done else None

    def series(self):
        slots, before = {}, {r.name: set() for r in self.replicas}

        def put(key, t, value):
            slots.setdefault(key, {})[t // self.grid] = value

        def secs(t_ms):
            return t_ms // 1000 if t_ms % 1000 == 0 else round(t_ms / 1000, 3)

        t = 0
        while t <= self.duration:
            for rep in self.replicas:
                if t < rep.start:
                    continue
                base = f'job="dynamo-failover-responder",instance="{rep.instance}"'
                life = next(((a, b) for a, b in rep.lives(self.duration) if a <= t < b), None)
                put(f"up{{{base}}}", t, 1 if life else 0)
                present = {}
                if life:
                    present[f'dynamo_failover_build_info{{{base},version="0.1.0"}}'] = 1
                    present[f"process_start_time_seconds{{{base}}}"] = secs(life[0])
                    if rep.readiness:
                        last = self.finished(rep, t)
                        present[f"failover_readiness_last_evaluation_timestamp_seconds{{{base}}}"] = secs(last[1]) if last else 0
                        if last:
                            for (check, target), v in last[2].items():
                                present[f'failover_readiness{{{base},check="{check}",target="{target}"}}'] = v
                for key in before[rep.name] - set(present):
                    put(key, t, "stale")
                for key, v in present.items():
                    put(key, t, v)
                before[rep.name] = set(present)
            t += self.grid
        return slots


def path_broken(check, target, n):
    labels = {"check": check, "target": target, "severity": "page"}
    if check == "agents.agent":
        labels["agent"] = target
    return {
        "labels": labels,
        "annotations": {
            "summary": f"Failover path broken: readiness check {check} fails for {target}",
            "description": f"Readiness check {check} of {target} has failed at every evaluation for the whole "
                           "window (6 minutes: two evaluations in a row at the default interval) on "
                           f"{n} responder replica(s). A failover that needs it would fail or go wrong. The "
                           "metric does not say why: on a responder machine, `dynamo-failover status` shows "
                           "the latest evaluation with each failing check's detail and fix, and "
                           "`dynamo-failover preflight --config /etc/dynamo-failover/responder.toml` runs "
                           "every check again now.",
            "runbook_url": f"docs/runbook.md#failoverpathbroken-{check.split('.')[0]}",
        },
    }


def humanize(seconds):
    """Prometheus's humanizeDuration, for the ages these tests produce."""
    if seconds < 60:
        return f"{seconds:.4g}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m {s}s"


def readiness_stale(replica, age, never=False):
    what = (f"has not finished its first evaluation, {humanize(age)} after the start" if never
            else f"last finished an evaluation {humanize(age)} ago")
    return {
        "labels": {"job": "dynamo-failover-responder", "instance": f"{replica}:9465", "severity": "ticket"},
        "annotations": {
            "summary": f"Readiness on responder {replica}:9465 {what}",
            "description": "No readiness evaluation has finished on this responder replica for three intervals "
                           "(15 minutes at the default responder.readiness.interval of 5 minutes) while it "
                           "answers scrapes: the evaluation hangs or its loop stopped. Its failover_readiness "
                           "rows keep their last values, so FailoverPathBroken can neither fire nor resolve "
                           "from this replica. Failovers do not depend on it.",
            "runbook_url": "docs/runbook.md#failoverreadinessstale",
        },
    }


READINESS = ["FailoverPathBroken", "FailoverReadinessStale"]
ROWS = [("do.token", "account"), ("do.load_balancer", "4de7ac8b-lb"), ("dynamodb.health_item", "us-west-2/wordpress_posts"),
        ("notify.url", "slack")]


def readiness_scenarios(pf):
    out = []
    window = pf.pick(360, 5) * 1000  # FailoverPathBroken's window, ms
    I = readiness_interval(pf) // 1000  # the evaluation interval, s
    limit = pf.pick(900, 10)  # dynamo_failover:readiness_stale_limit_seconds
    E = pf.eval  # ms
    S = pf.scrape

    def after(t, step):
        """The first multiple of step (ms) at or after t (ms)."""
        return -(-t // step) * step

    def zero_span(s, rep, row):
        """(first scrape that shows the row 0, first scrape after that shows it 1 again or None),
        in ms, for the first failure of `row` on `rep` (one process, no restarts)."""
        evs = s.evaluations(rep)
        i = next(i for i, e in enumerate(evs) if e[2][row] == 0)
        back = next((e for e in evs[i:] if e[2][row] == 1), None)
        return after(evs[i][1], S), None if back is None else after(back[1], S)

    def fires(z, young=False):
        """When a replica showing 0 from scrape z first counts for FailoverPathBroken: the first
        evaluation whose window holds only zeros (z included; Prometheus 2's ranges are closed),
        with a sample of the row before the window: the 1 scraped just before z, or, when z is the
        row's first sample (`young`), z itself, one scrape later."""
        return after(z + window + (S if young else 0), E)

    def never_before(fire):
        """A time it must not fire yet under either range semantics (Prometheus 3's ranges are
        left-open: one scrape earlier)."""
        return fire - S - E

    def s_(ms):
        return ms // 1000 if ms % 1000 == 0 else ms / 1000

    # Broken, then repaired, on two replicas out of phase.
    lb = ("do.load_balancer", "4de7ac8b-lb")
    o = pf.pick(100, 1)  # r2's phase, s
    # r1 (evaluating at 0, I, 2I, ...) fails at 2I, 3I and 4I; r2 (at o, o + I, ...) at o + 2I and
    # o + 3I only: exactly two in a row, and r1's zeros still overlap r2's full window.
    b, fixed = 2 * I - o, 4 * I + o
    r1, r2 = Replica("r1"), Replica("r2", start=o)
    s = Readiness(pf, f"""
The load balancer is broken (deleted, say) from {b} s to {fixed} s; both replicas see it from
their next evaluation to their last one before the repair (r1 three evaluations, r2 two: two in a
row are enough). FailoverPathBroken fires once a replica has shown 0 for the whole window
({s_(window):g} s), counts the second replica when its window is full too, and resolves once both
have evaluated it fine again.
""", 6 * I, [r1, r2], ROWS, [Broken(*lb, b, fixed)])
    spans = sorted(zero_span(s, r, lb) for r in (r1, r2))
    (z_a, back_a), (z_b, back_b) = spans
    s.alerts(s_(never_before(fires(z_a))), "FailoverPathBroken", [])
    s.alerts(s_(fires(z_a)), "FailoverPathBroken", [path_broken(*lb, 1)])
    s.alerts(s_(fires(z_b)), "FailoverPathBroken", [path_broken(*lb, 2)])
    repaired = sorted((back_a, back_b))
    s.alerts(s_(repaired[0] - E), "FailoverPathBroken", [path_broken(*lb, 2)])
    s.alerts(s_(after(repaired[0], E)), "FailoverPathBroken", [path_broken(*lb, 1)])
    s.alerts(s_(after(repaired[1], E)), "FailoverPathBroken", [])
    s.never_fired(6 * I, ["FailoverReadinessStale"])
    out.append(s)

    # Single failed evaluations never page: on one replica, on two replicas out of phase, and a
    # replica's very first evaluation.
    hi = ("dynamodb.health_item", "us-west-2/wordpress_posts")
    o = pf.pick(100, 1)  # r2's phase, s
    r1, r2, r3 = Replica("r1"), Replica("r2", start=o), Replica("r3", start=3 * I)
    one1, one2 = I, o + I  # each one's second evaluation
    end = 6 * I
    s = Readiness(pf, f"""
Single failed evaluations, each followed by a good one, never fire: r1's evaluation at {one1} s
and r2's at {one2} s fail (a blip in between them), their next ones pass. Each gauge shows 0 for
one interval, under the window; together (r1's 0 then r2's) they cover more than the window in
production, which is why the window is judged per replica before the replicas are counted. r3
starts at {r3.start // 1000} s and its first evaluation fails, its second passes: its rows are
younger than the window until after that, so it has no say.
""", end, [r1, r2, r3], ROWS, [Broken(*hi, one1, one1 + 1, {"r1"}), Broken(*hi, one2, one2 + 1, {"r2"}),
                               Broken(*hi, r3.start // 1000, r3.start // 1000 + 1, {"r3"})])
    both = s_(after(one2 * 1000 + s.took, S))  # r2's 0 is scraped, r1's still shown
    s.expr(both, f'min by (check, target) (failover_readiness{{check="{hi[0]}"}})',
           [(f'{{check="{hi[0]}",target="{hi[1]}"}}', 0)])
    s.expr(s_(after(r3.start + s.took, S)), f'failover_readiness{{instance="r3:9465",check="{hi[0]}"}}',
           [(f'failover_readiness{{check="{hi[0]}",instance="r3:9465",job="dynamo-failover-responder",target="{hi[1]}"}}', 0)])
    s.never_fired(end, READINESS)
    out.append(s)

    # One replica of two sees it broken, from its first evaluation on.
    slack = ("notify.url", "slack")
    r1, r2 = Replica("r1"), Replica("r2", start=pf.pick(150, 1))
    end = pf.pick(420, 10)
    s = Readiness(pf, f"""
Only r1 sees a check fail (its resolver cannot resolve the Slack host, say), from its first
evaluation on; r2 sees it pass. One replica is enough: it fires after the window ({s_(window):g} s,
measured from r1's first row), with a value of 1.
""", end, [r1, r2], ROWS, [Broken(*slack, 0, None, {"r1"})])
    z, _ = zero_span(s, r1, slack)
    s.alerts(s_(never_before(fires(z, young=True))), "FailoverPathBroken", [])
    s.alerts(s_(fires(z, young=True)), "FailoverPathBroken", [path_broken(*slack, 1)])
    s.alerts(end, "FailoverPathBroken", [path_broken(*slack, 1)])
    s.expr(end, f'failover_readiness{{check="{slack[0]}"}}', [
        (f'failover_readiness{{check="{slack[0]}",instance="{r}:9465",job="dynamo-failover-responder",target="{slack[1]}"}}', v)
        for r, v in (("r1", 0), ("r2", 1))])
    out.append(s)

    # The only replica restarts while the check is broken.
    tok = ("do.token", "account")
    down, up = pf.pick(900, 12), pf.pick(921, 14)
    end = pf.pick(1350, 22)
    r1 = Replica("r1", down=[(down, up)])
    s = Readiness(pf, f"""
The DigitalOcean token is rejected from the start; the only replica restarts ({down} s to {up} s)
after the alert fired. While it is not scraped its samples stay in the window; its first
evaluation after the restart fails too (two in a row, across the restart): the alert stays firing
throughout. The new process's timestamp is 0 for a moment: no FailoverReadinessStale.
""", end, [r1], ROWS, [Broken(*tok, 0)])
    z, _ = zero_span(s, r1, tok)
    first = fires(z, young=True)
    s.alerts(s_(first), "FailoverPathBroken", [path_broken(*tok, 1)])
    s.alerts(down + s_(S), "FailoverPathBroken", [path_broken(*tok, 1)])
    s.alerts(up, "FailoverPathBroken", [path_broken(*tok, 1)])
    span = end * 1000 - first
    s.expr(end, f'count_over_time(ALERTS{{alertname="FailoverPathBroken",alertstate="firing"}}[{s_(span)}s])',
           [(f'{{alertname="FailoverPathBroken",alertstate="firing",check="{tok[0]}",severity="page",target="{tok[1]}"}}',
             span // E + 1)])
    s.never_fired(end, ["FailoverReadinessStale"])
    out.append(s)

    # agents.agent: a replica judges an agent by its own contacts with it.
    wp1, wp2 = ("agents.agent", "wp-1"), ("agents.agent", "wp-2")
    gone = 2 * I  # at r1's third evaluation
    end = pf.pick(1200, 20)
    r1, r2 = Replica("r1"), Replica("r2", start=pf.pick(100, 1))
    s = Readiness(pf, f"""
Agents long-poll one replica at a time, and a replica counts an agent silent when it has not
reached THAT replica: wp-1 and wp-2 talk to r1 only, so r2 sees both failing from its first
evaluation on, and that alone never fires. wp-2 stops at {gone} s: r1 sees it failing too from its
next evaluation, and once r1's window is full every replica with a say agrees: it fires, with an
`agent` label for Alertmanager's inhibition by FailoverAgentSilent.
""", end, [r1, r2], ROWS + [wp1, wp2], [Broken(*wp1, 0, None, {"r2"}), Broken(*wp2, 0, None, {"r2"}),
                                         Broken(*wp2, gone, None, {"r1"})])
    z, _ = zero_span(s, r1, wp2)
    s.expr(s_(never_before(fires(z))), "failover:readiness:window_failing{target=\"wp-2\"}", [
        (f'failover:readiness:window_failing{{check="agents.agent",instance="{r}:9465",job="dynamo-failover-responder",target="wp-2"}}', v)
        for r, v in (("r1", 0), ("r2", 1))])
    s.alerts(s_(never_before(fires(z))), "FailoverPathBroken", [])
    s.alerts(s_(fires(z)), "FailoverPathBroken", [path_broken(*wp2, 2)])
    s.alerts(end, "FailoverPathBroken", [path_broken(*wp2, 2)])
    s.never_fired(s_(never_before(fires(z))), ["FailoverPathBroken"])
    out.append(s)

    # The evaluation stops advancing on one replica; a restart clears it.
    hang, restart = 2 * I, pf.pick(1500, 20)  # its third evaluation hangs
    r1, r2 = Replica("r1", down=[(restart, restart + pf.pick(3, 1))], hang=hang), Replica("r2")
    end = restart + pf.pick(30, 4)
    s = Readiness(pf, f"""
r1's evaluation that starts at {hang} s never finishes (its loop waits on it); it still answers
scrapes. FailoverReadinessStale fires for r1 once its last finished evaluation is older than the
limit ({limit} s), and clears when r1 restarts at {restart} s (a new process evaluates at once).
r2 keeps evaluating: nothing for it.
""", end, [r1, r2], ROWS)
    last = max(e[1] for e in s.evaluations(r1) if e[0] == 0)  # its first process's last finished evaluation
    fire = after(last + limit * 1000 + 1, E)
    s.alerts(s_(fire - E), "FailoverReadinessStale", [])
    s.alerts(s_(fire), "FailoverReadinessStale", [readiness_stale("r1", (fire - last) / 1000)])
    s.alerts(s_(restart * 1000 - E), "FailoverReadinessStale", [readiness_stale("r1", (restart * 1000 - E - last) / 1000)])
    s.alerts(restart + pf.pick(6, 2), "FailoverReadinessStale", [])
    s.alerts(end, "FailoverReadinessStale", [])
    s.never_fired(end, ["FailoverPathBroken"])
    out.append(s)

    # The first evaluation never finishes; a responder without readiness metrics raises nothing.
    start = pf.pick(102, 2)
    end = start + limit + pf.pick(60, 4)  # on the evaluation grid in both profiles
    r1, r2 = Replica("r1", start=start, hang=start), Replica("r2", readiness=False)
    s = Readiness(pf, f"""
r1 starts at {start} s and its first evaluation never finishes: its timestamp stays 0, and the
process's start time stands in for it, so it fires once the limit ({limit} s) has passed since the
start. r2 runs a responder without readiness metrics (no timestamp series at all): never.
""", end, [r1, r2], ROWS)
    fire = after(start * 1000 + limit * 1000 + 1, E)
    s.alerts(s_(fire - E), "FailoverReadinessStale", [])
    s.alerts(s_(fire), "FailoverReadinessStale", [readiness_stale("r1", (fire - start * 1000) / 1000, never=True)])
    s.alerts(end, "FailoverReadinessStale", [readiness_stale("r1", end - start, never=True)])
    s.expr(end, "failover_readiness", None)
    out.append(s)
    return out


class Raw:
    """A test group written out by hand, for rules with no timing of their own."""

    def __init__(self, text):
        self.text = text

    def render(self):
        return self.text.strip("\n")


def tls_scenarios(pf):
    day, minute = 86400, 60
    inputs, expected = [], []

    def listener(instance, listener, expires_at):
        key = f'{{instance="{instance}",job="dynamo-failover-{listener}",listener="{listener}"}}'
        inputs.append(f"      - series: 'tls_certificate_expiry_timestamp_seconds{key}'\n"
                      f"        values: '{expires_at}+0x120'")
        return {"instance": instance, "job": f"dynamo-failover-{listener}", "listener": listener}

    # promtool's clock starts at 0: a certificate expiring at X has X - t seconds left at t.
    soon = listener("r1:9465", "responder", 14 * day + 30 * minute)  # under 14 days from 30 m on
    now = listener("a1:9466", "agent", 2 * day + 30 * minute)  # under 2 days (and 14) from 30 m
    listener("p1:9464", "exporter", 90 * day)  # never

    def alert(labels, severity, within):
        section = f"[{labels['listener']}.tls]"
        description = {
            "ticket": f"Renew it and write the new files where the config names them ({section}, or"
                      ' [agent.responder_tls] for listener="agent-client"): they are used from the next'
                      " connection on, without a restart (tls_certificate_reloads_total counts"
                      ' the reload; result="error" means the new files did not load and the old certificate'
                      " is still served). `dynamo-failover check-config` says how many days are left.",
            "page": "Once it expires, every client refuses the listener: for the responder, Alertmanager's"
                    " webhook, the agents and the operator commands stop, and no failover can start (for an"
                    ' agent\'s client certificate, listener="agent-client", that agent is refused). Renew it now'
                    " and write the new files where the config names them; no restart is needed.",
        }[severity]
        return {"labels": {"alertname": "TLSCertificateExpiresSoon", "severity": severity, **labels},
                "annotations": {
                    "summary": f"The TLS certificate of the {labels['listener']} listener on {labels['instance']} expires within {within} days",
                    "description": description,
                    "runbook_url": "docs/runbook.md#tlscertificateexpiressoon"}}

    def case(t_min, alerts):
        lines = [f"      - eval_time: {t_min}m", "        alertname: TLSCertificateExpiresSoon"]
        if not alerts:
            return "\n".join(lines + ["        exp_alerts: []"])
        lines.append("        exp_alerts:")
        for a in sorted(alerts, key=lambda a: sorted(a["labels"].items())):
            lines.append("          - exp_labels:")
            lines += [f"              {k}: {q(v)}" for k, v in sorted(a["labels"].items())]
            lines.append("            exp_annotations:")
            lines += [f"              {k}: {q(v)}" for k, v in sorted(a["annotations"].items())]
        return "\n".join(lines)

    cases = [
        case(5, []),  # the agent's is under 14 days from the start: pending for 10 m
        case(30, [alert(now, "ticket", 14)]),  # exactly 14 (and 2) days left: not yet under
        case(40, [alert(now, "ticket", 14)]),  # under since 31 m: pending for 10 m
        case(45, [alert(soon, "ticket", 14), alert(now, "ticket", 14), alert(now, "page", 2)]),
        case(110, [alert(soon, "ticket", 14), alert(now, "ticket", 14), alert(now, "page", 2)]),
    ]
    return [Raw(f"""
  # Three listeners: the responder's certificate has 14 days and 30 minutes left at the start, the
  # agent's 2 days and 30 minutes (under 14 days from the start), the exporter's 90 days. Both alerts
  # wait 10 minutes once under their limit: a ticket at 14 days, a page at 2 days; the exporter's
  # never fires.
  - interval: 1m
    input_series:
{chr(10).join(inputs)}
    alert_rule_test:
{chr(10).join(cases)}
""")]


FILES = {
    "outage.yml": ("Region outages: which alerts fire for which failure, and when.", outage_scenarios),
    "detection.yml": ("The worst-case time from a region failing to DynamoDBRegionUnavailable firing.", detection_scenarios),
    "misconfiguration.yml": ("Our own mistakes never vote; they page.", misconfiguration_scenarios),
    "throttling.yml": ("Throttling votes only when sustained.", throttling_scenarios),
    "probers.yml": ("Probers that restart or disappear.", prober_scenarios),
    "latency.yml": ("Slow reads: a ticket when the quorum of probers sees them.", latency_scenarios),
    "agents.yml": ("Application servers' agents that stop reaching the responders or fall behind.", agent_scenarios),
    "apps.yml": ("Application checks: a region's application is down when a quorum of probers sees every check fail.", app_scenarios),
    "readiness.yml": ("Readiness of the failover path: a check failing at two evaluations in a row pages; a stopped evaluation is a ticket.", readiness_scenarios),
    "tls.yml": ("TLS certificates about to expire: a ticket at 14 days, a page at 2.", tls_scenarios),
}


def render_file(pf, what, scenarios):
    head = [
        f"# GENERATED by prometheus/tests/gen.py ({pf.name} timings): edit the scenarios there.",
        f"# {what}",
        f"# Probe every {dur(pf.probe)}, timeout lands after {dur(pf.timeout)}, scrape every {dur(pf.scrape)},"
        f" evaluate every {dur(pf.eval)}.",
        "rule_files:",
        f"  - {pf.rules}",
        f"evaluation_interval: {dur(pf.eval)}",
        "",
        "tests:",
    ]
    return "\n".join(head + [s.render() + "\n" for s in scenarios])


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: gen.py OUT_DIR  (writes OUT_DIR/prod/*.yml and OUT_DIR/fast/*.yml)")
    out = pathlib.Path(sys.argv[1])
    for pf in (Profile("production", False), Profile("fast", True)):
        (out / pf.dir).mkdir(parents=True, exist_ok=True)
        for name, (what, make) in FILES.items():
            (out / pf.dir / name).write_text(render_file(pf, what, make(pf)))


if __name__ == "__main__":
    main()
