"""The failover drill of scripts/demo: the whole stack on loopback with the fast profile, a home
region that dies and comes back, narrated as it happens, and a summary with the recovery time.

Usage: drill.py BIN FAKE_DO_BIN RUN_DIR [--keep] [--repeat N]
"""
import argparse
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import threading
import tomllib
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3

ROOT = pathlib.Path(__file__).resolve().parents[2]
EAST, WEST = "us-east-1", "us-west-2"
PORTS = dict(east=18001, west=18002, p1=19461, p2=19462, p3=19463, responder=19465,
             prometheus=19090, alertmanager=19093, fake_do=19080, inbox=19081)
TOKENS = dict(webhook="demo-webhook-token", admin="demo-admin-token", do="demo-do-token")
T0 = time.monotonic()
PROCS = []


def say(what, **kv):
    stamp = time.strftime("%H:%M:%S") + f".{int((time.time() % 1) * 10)}"
    extra = " ".join(f"{k}={v}" for k, v in kv.items())
    print(f"  {stamp}  {what} {extra}".rstrip(), flush=True)


def http(url, data=None, token=None, method=None):
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=3) as r:
        return r.read().decode()


def wait(what, cond, limit=60):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"drill: timed out waiting for {what}; logs are in the run directory")


def start(name, args, run, env=None):
    log = open(run / f"{name}.log", "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    PROCS.append(p)
    return p


def moto(name, run):
    return start(f"moto-{name}", [str(pathlib.Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                   "-p", str(PORTS[name])], run)


def seed(name, region):
    url = f"http://127.0.0.1:{PORTS[name]}"
    wait(f"moto {region}", lambda: http(f"{url}/moto-api/") is not None, 30)
    db = boto3.client("dynamodb", endpoint_url=url, region_name=region,
                      aws_access_key_id="demo", aws_secret_access_key="demo")
    if "wordpress_posts" not in db.list_tables()["TableNames"]:
        db.create_table(TableName="wordpress_posts",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    db.put_item(TableName="wordpress_posts", Item={"pk": {"S": "dynamo-failover-health"}})


class Inbox(BaseHTTPRequestHandler):
    notes = []
    fresh = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.end_headers()
        if self.path == "/hook":
            note = json.loads(body)
            with Inbox.lock:
                Inbox.notes.append(note)
                Inbox.fresh.append((time.time(), note["title"]))

    @staticmethod
    def drain():
        with Inbox.lock:
            out, Inbox.fresh = Inbox.fresh, []
        return out

    def log_message(self, *a):
        pass


def state():
    return json.loads(http(f"http://127.0.0.1:{PORTS['responder']}/v1/state", token=TOKENS["admin"]))


def prom_query(q):
    url = f"http://127.0.0.1:{PORTS['prometheus']}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    return json.loads(http(url))["data"]["result"]


def parse_ts(text):
    """Seconds since the epoch from an RFC 3339 timestamp with any number of fraction digits."""
    from datetime import datetime, timezone
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$", text)
    base = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    frac = float("0." + m.group(2)) if m.group(2) else 0.0
    tz = m.group(3)
    offset = 0 if tz == "Z" else (1 if tz[0] == "+" else -1) * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return base + frac - offset


class Narrator:
    """Watches the probers, Prometheus, the responder's log and the notifications, and tells each
    change once, in the order it happened (by each source's own timestamp where it has one)."""

    def __init__(self, run):
        self.run = run
        self.log_pos = 0
        self.seen = set()
        self.queue = []
        self.phase = "fault"

    def add(self, key, when, what):
        if key not in self.seen:
            self.seen.add(key)
            self.queue.append((when, what))

    def flush(self, everything=False):
        cutoff = time.time() - (0 if everything else 1.0)
        ready = sorted(e for e in self.queue if e[0] <= cutoff)
        self.queue = [e for e in self.queue if e[0] > cutoff]
        for when, what in ready:
            stamp = time.strftime("%H:%M:%S", time.localtime(when)) + f".{int((when % 1) * 10)}"
            print(f"  {stamp}  {what}", flush=True)

    def start_phase(self, phase):
        self.flush(everything=True)
        self.phase = phase

    def poll(self):
        now = time.time()
        ph = self.phase
        for p in ("p1", "p2", "p3"):
            try:
                text = http(f"http://127.0.0.1:{PORTS[p]}/metrics")
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("dynamodb_probe_success{") and f'region="{EAST}"' in line and 'operation="read"' in line:
                    if line.endswith(" 0") and ph == "fault":
                        self.add(f"{ph}-fail-{p}", now, f"probe: {p} sees {EAST} failing")
                    elif line.endswith(" 1") and ph == "restore":
                        self.add(f"{ph}-ok-{p}", now, f"probe: {p} sees {EAST} healthy again")
        try:
            alerts = json.loads(http(f"http://127.0.0.1:{PORTS['prometheus']}/api/v1/alerts"))["data"]["alerts"]
            mine = [a for a in alerts if a["labels"]["alertname"] == "DynamoDBRegionUnavailable"]
            for a in mine:
                if a["state"] == "pending":
                    self.add(f"{ph}-pending", parse_ts(a["activeAt"]), "Prometheus: DynamoDBRegionUnavailable pending (quorum of probers agree; 3 s window running)")
                else:
                    self.add(f"{ph}-firing", now, "Prometheus: DynamoDBRegionUnavailable firing -> Alertmanager")
            if not mine and ph == "restore":
                self.add(f"{ph}-resolved", now, "Prometheus: DynamoDBRegionUnavailable resolved")
        except (OSError, KeyError, ValueError):
            pass
        for n in Inbox.drain():
            self.queue.append((n[0], f"notification: {n[1]}"))
        with open(self.run / "responder.log") as f:
            f.seek(self.log_pos)
            for line in f:
                self.log_pos += len(line.encode())
                try:
                    e = json.loads(line)
                    when = parse_ts(e["timestamp"])
                except (ValueError, KeyError):
                    continue
                msg = e.get("message", "")
                if msg == "webhook received":
                    self.queue.append((when, f"responder: webhook received ({e.get('status')})"))
                elif msg in ("live check passed", "live check failed"):
                    self.queue.append((when, f"responder: {msg} for {e.get('to')} (epoch {e.get('epoch')})"))
                elif msg == "step done":
                    self.queue.append((when, f"responder: step verified: {e.get('step')} (epoch {e.get('epoch')})"))
                elif msg in ("step failed", "step attempt failed"):
                    self.queue.append((when, f"responder: {msg}: {e.get('step')}: {e.get('error')}"))
        self.flush()


def config(run):
    """Writes the three probers' configs, derived from config/demo.toml's regions and tables, and
    the secrets and seed files that config names."""
    demo = tomllib.loads((ROOT / "config/demo.toml").read_text())
    regions = "".join(f'[[region]]\nname = "{r["name"]}"\nendpoint = "{r["endpoint"]}"\npriority = {r["priority"]}\n\n'
                      for r in demo["region"])
    tables = "".join(f'[[table]]\nname = "{t["name"]}"\n\n' for t in demo["table"])
    timing = "".join(f'{k} = "{demo["prober"][k]}"\n' for k in ("interval", "attempt_timeout", "timeout"))
    for p in ("p1", "p2", "p3"):
        (run / f"{p}.toml").write_text(f'[prober]\nid = "{p}"\n{timing}\n[exporter]\nlisten = "127.0.0.1:{PORTS[p]}"\n\n'
                                       f'{regions}{tables}')
    for k in ("webhook", "admin", "do"):
        (run / f"{k}.token").write_text(TOKENS[k])
    (run / "app.env").write_text("# WordPress reads this (see deploy/)\nDYNAMODB_REGION=us-east-1\n")
    rules = [{"entry_protocol": "http", "entry_port": 80, "target_protocol": "http", "target_port": 80}]
    (run / "do-seed.json").write_text(json.dumps({
        "load_balancers": [
            {"id": "lb-tag", "name": "wordpress", "type": "REGIONAL", "region": "nyc1", "forwarding_rules": rules,
             "droplet_ids": [], "tag": "wp-east"},
            {"id": "lb-global", "name": "wordpress-global", "type": "GLOBAL", "forwarding_rules": rules,
             "glb_settings": {"target_protocol": "http", "target_port": 80, "region_priorities": {"nyc1": 1, "sfo3": 2}}}],
        "domains": {"example.com": [{"id": 1001, "type": "A", "name": "www", "data": "192.0.2.10", "ttl": 60}]}}))


def settled_in(region):
    s = state()
    return s["active_region"] == region and s["plan"] is None


def follow(narrator, until, limit=60):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        narrator.poll()
        if until():
            time.sleep(0.3)
            narrator.poll()
            narrator.flush(everything=True)
            return
        time.sleep(0.1)
    sys.exit("drill: the stack did not reach the expected state in time; logs are in the run directory")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("fake_do")
    ap.add_argument("run")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    run = pathlib.Path(a.run)
    run.mkdir(parents=True, exist_ok=True)
    for f in run.glob("*"):
        if f.is_file():
            f.unlink()
    config(run)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_EC2_METADATA_DISABLED="true")

    print("==> starting the stack on 127.0.0.1 (fast profile: 1 s probes, scrapes and evaluation, 3 s window)")
    east = moto("east", run)
    moto("west", run)
    seed("east", EAST)
    seed("west", WEST)
    start("fake-digitalocean", [a.fake_do, f"127.0.0.1:{PORTS['fake_do']}", str(run / "do.token"), str(run / "do-seed.json")], run)
    server = ThreadingHTTPServer(("127.0.0.1", PORTS["inbox"]), Inbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for p in ("p1", "p2", "p3"):
        start(p, [a.bin, "exporter", "--config", str(run / f"{p}.toml")], run, env)
    start("responder", [a.bin, "responder", "--log-format", "json", "--config", str(ROOT / "config/demo.toml")], run, env)
    prof = run / "profile"
    subprocess.run([sys.executable, str(ROOT / "scripts/lib/profile.py"), str(prof), "--fast",
                    "--exporters", ",".join(f"127.0.0.1:{PORTS[p]}" for p in ("p1", "p2", "p3")),
                    "--responder", f"127.0.0.1:{PORTS['responder']}",
                    "--alertmanager", f"127.0.0.1:{PORTS['alertmanager']}",
                    "--webhook-token-file", str(run / "webhook.token")], check=True)
    start("alertmanager", ["prometheus-alertmanager", f"--config.file={prof}/alertmanager.yml",
                           f"--storage.path={run}/am-data", f"--web.listen-address=127.0.0.1:{PORTS['alertmanager']}",
                           f"--web.external-url=http://127.0.0.1:{PORTS['alertmanager']}", "--cluster.listen-address="], run)
    start("prometheus", ["prometheus", f"--config.file={prof}/prometheus.yml", f"--storage.tsdb.path={run}/prom-data",
                         f"--web.listen-address=127.0.0.1:{PORTS['prometheus']}",
                         f"--web.external-url=http://127.0.0.1:{PORTS['prometheus']}"], run)
    wait("the responder", lambda: http(f"http://127.0.0.1:{PORTS['responder']}/readyz").startswith("ready"))
    # Warm up: the rules have judged the region healthy for a while, as in any running system.
    wait("Prometheus to see all probers and evaluate the rules for 10 s", lambda: len(prom_query("up == 1")) == 4 and
         prom_query(f'count_over_time(dynamodb:region:reporting_probers{{region="{EAST}"}}[10s]) >= 9') != [], 90)
    print(f"""
    Prometheus      http://127.0.0.1:{PORTS['prometheus']}/alerts
    Alertmanager    http://127.0.0.1:{PORTS['alertmanager']}
    Responder       http://127.0.0.1:{PORTS['responder']}/v1/active-region   (state: /v1/state, admin token in {run}/admin.token)
    Probers         http://127.0.0.1:{PORTS['p1']}/metrics  :{PORTS['p2']}  :{PORTS['p3']}
    Logs            {run}/
""")
    narrator = Narrator(run)
    recoveries, failbacks, rows = [], [], []
    for cycle in range(1, a.repeat + 1):
        print(f"==> drill {cycle}: stopping {EAST} (its DynamoDB stand-in is killed)")
        narrator.start_phase("fault")
        narrator.seen.clear()
        east.kill()
        east.wait()
        t_fault = time.monotonic()
        say(f"FAULT: {EAST} is down")
        follow(narrator, lambda: settled_in(WEST))
        rec = time.monotonic() - t_fault
        recoveries.append(rec)
        say(f"MOVED: traffic verified in {WEST}", fault_to_verified=f"{rec:.2f}s")
        print(f"==> drill {cycle}: restoring {EAST}")
        narrator.start_phase("restore")
        east = moto("east", run)
        seed("east", EAST)
        t_back = time.monotonic()
        say(f"RESTORED: {EAST} answers again; failback waits for the 5 s stabilisation window")
        follow(narrator, lambda: settled_in(EAST))
        fb = time.monotonic() - t_back
        failbacks.append(fb)
        say(f"FAILED BACK: traffic verified in {EAST}", restore_to_verified=f"{fb:.2f}s")
        rows.append((cycle, rec, fb))
        time.sleep(1)

    s = state()
    do = json.loads(http(f"http://127.0.0.1:{PORTS['fake_do']}/fake/state"))
    print("\n==> summary")
    print(f"  {'drill':>5}  {'fault -> traffic moved':>24}  {'restore -> failed back':>24}")
    for c, r, f in rows:
        print(f"  {c:>5}  {r:>22.2f} s  {f:>22.2f} s")
    print(f"  median fault -> verified move: {statistics.median(recoveries):.2f} s over {len(recoveries)} drill(s)"
          f" (seed article: 3 x 60 s probes = 180 s or more, flapping back on the first good probe)")
    print(f"  transitions: {len(s['transitions'])}, epoch {s['epoch']}, active region now {s['active_region']}")
    print(f"  load balancer lb-tag targets tag {do['load_balancers']['lb-tag']['tag']}; DNS www.example.com -> "
          f"{do['records'][0]['record']['data']}; {run / 'app.env'} says "
          f"{[l for l in (run / 'app.env').read_text().splitlines() if l.startswith('DYNAMODB_REGION')][0]}")
    print(f"  notifications received: {len(Inbox.notes)}; reload commands run: "
          f"{len((run / 'reloads.log').read_text().splitlines()) if (run / 'reloads.log').exists() else 0}")
    if a.keep:
        print("\n==> the stack keeps running (Ctrl-C to stop it)")
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        print("\n==> interrupted")
    finally:
        for p in PROCS:
            p.kill()
        for p in PROCS:
            p.wait()
