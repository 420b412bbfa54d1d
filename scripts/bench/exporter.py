"""Exporter benchmark: CPU per probe and peak RSS of the exporter next to the boto3 baseline,
against moto, against dynalite (a second DynamoDB implementation that keeps connections alive)
and against a keep-alive stub, and a scale run (6 regions x 20 tables every second).

Run through scripts/bench/run (it builds the release binary and provides the venv and dynalite).
Usage: exporter.py BIN STUB_BIN [SECONDS]
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.dirname(sys.executable)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {limit}s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'^(\w+)\{([^}]*)\} (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def start_dynalite():
    """dynalite at nice 10 (it stands in for DynamoDB, which would not share our cores), on a
    port of its own choosing, printed by scripts/lib/dynalite/serve.js."""
    env = dict(os.environ, NODE_PATH=os.environ.get(
        "DYNALITE_MODULES", os.path.join(HERE, "../../.cache/dynalite/node_modules")))
    p = subprocess.Popen(["nice", "-n", "10", "node", os.path.join(HERE, "../lib/dynalite/serve.js")],
                         env=env, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.match(r"listening on (\d+)", line)
    if not m:
        p.kill()
        raise SystemExit(f"dynalite did not start: {line!r}")
    return p, f"http://127.0.0.1:{m.group(1)}"


def seed_moto(endpoint, regions, tables):
    for region in regions:
        db = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region,
                          aws_access_key_id="bench", aws_secret_access_key="bench")
        for i in range(tables):
            name = f"bench_{i:02d}"
            db.create_table(TableName=name,
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            BillingMode="PAY_PER_REQUEST")
            # dynalite makes a new table ACTIVE a moment later, not at once as moto does.
            db.get_waiter("table_exists").wait(TableName=name,
                                               WaiterConfig={"Delay": 0.05, "MaxAttempts": 200})
            db.put_item(TableName=name, Item={"pk": {"S": "dynamo-failover-health"}})


def exporter_config(endpoints, tables, probes, port, app_checks=0, app_url=None):
    lines = ['[prober]', 'id = "bench"', 'interval = "1s"', 'attempt_timeout = "400ms"',
             'timeout = "900ms"', f'probes = {json.dumps(probes)}', '',
             '[exporter]', f'listen = "127.0.0.1:{port}"', '']
    for i, (region, endpoint) in enumerate(endpoints):
        lines += ['[[region]]', f'name = "{region}"', f'endpoint = "{endpoint}"',
                  f'priority = {i + 1}', '']
        for j in range(app_checks):
            lines += ['[[region.app_check]]', f'name = "app{j:02d}"', f'url = "{app_url}"',
                      'body_contains = "wp-submit"', 'timeout = "900ms"', '']
    for i in range(tables):
        lines += ['[[table]]', f'name = "bench_{i:02d}"', '']
    f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    f.write("\n".join(lines))
    f.close()
    return f.name


def run_pair(label, bin_path, endpoints, tables, seconds, with_baseline=True, probes=("read",),
             app_checks=0, app_url=None):
    port = free_port()
    cfg = exporter_config(endpoints, tables, list(probes), port, app_checks, app_url)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_EC2_METADATA_DISABLED="true", DYNAMO_FAILOVER_LOG="warn")
    exp = subprocess.Popen([bin_path, "exporter", "--config", cfg], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/healthz")
    base = None
    if with_baseline:
        base = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "boto3_loop.py"), str(seconds), "1", str(tables)]
            + [f"{r}={e}" for r, e in endpoints],
            stdout=subprocess.PIPE, text=True)
    # Measure the exporter over the same window, after its start-up.
    text0 = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    cpu0, t0 = cpu_seconds(exp.pid), time.monotonic()
    time.sleep(seconds)
    text1 = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    cpu1, t1 = cpu_seconds(exp.pid), time.monotonic()
    rss = peak_rss(exp.pid)
    exp.send_signal(signal.SIGTERM)
    exp.wait(timeout=10)
    os.unlink(cfg)
    probes_run = metric_sum(text1, "dynamodb_probe_total") - metric_sum(text0, "dynamodb_probe_total")
    failed = probes_run - (metric_sum(text1, "dynamodb_probe_total", result="success")
                           - metric_sum(text0, "dynamodb_probe_total", result="success"))
    missed = (metric_sum(text1, "dynamodb_probe_slots_missed_total")
              - metric_sum(text0, "dynamodb_probe_slots_missed_total"))
    app_run = metric_sum(text1, "app_probe_total") - metric_sum(text0, "app_probe_total")
    app_ok = (metric_sum(text1, "app_probe_total", result="success")
              - metric_sum(text0, "app_probe_total", result="success"))
    out = {"label": label, "exporter": {
        "probes": int(probes_run), "failures": int(failed), "slots_missed": int(missed),
        "app_checks": int(app_run), "app_failures": int(app_run - app_ok),
        "cpu_seconds": cpu1 - cpu0, "wall_seconds": t1 - t0, "peak_rss_bytes": rss}}
    if base is not None:
        b = json.loads(base.communicate(timeout=seconds + 60)[0])
        out["boto3"] = b
    return out


def per_probe_ms(r):
    return 1000 * r["cpu_seconds"] / max(1, r["probes"])


def report(res):
    e = res["exporter"]
    print(f"\n## {res['label']}")
    print(f"{'client':<22}{'probes':>8}{'failed':>8}{'missed':>8}{'CPU ms/probe':>14}{'peak RSS MiB':>14}")
    rows = [("dynamo-failover", e)] + ([("boto3 loop (seed)", res["boto3"])] if "boto3" in res else [])
    for name, r in rows:
        print(f"{name:<22}{r['probes']:>8}{r['failures']:>8}{r['slots_missed']:>8}"
              f"{per_probe_ms(r):>14.3f}{r['peak_rss_bytes'] / 2**20:>14.1f}")
    if "boto3" in res:
        b = res["boto3"]
        cpu_x = per_probe_ms(b) / max(1e-9, per_probe_ms(e))
        rss_x = b["peak_rss_bytes"] / max(1, e["peak_rss_bytes"])
        print(f"dynamo-failover uses {cpu_x:.1f}x less CPU per probe and {rss_x:.1f}x less peak RSS")
        return cpu_x, rss_x
    share = 100 * e["cpu_seconds"] / e["wall_seconds"]
    print(f"CPU share of one core: {share:.1f}%  ({e['probes'] / e['wall_seconds']:.0f} probes/s)")
    return None


def main():
    bin_path, stub_bin = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60.0
    procs = []
    try:
        moto_port = free_port()
        procs.append(subprocess.Popen([os.path.join(VENV_BIN, "moto_server"), "-H", "127.0.0.1",
                                       "-p", str(moto_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        moto = f"http://127.0.0.1:{moto_port}"
        wait_http(f"{moto}/moto-api/")
        seed_moto(moto, ["us-east-1", "us-west-2"], 10)
        stub_port = free_port()
        procs.append(subprocess.Popen([stub_bin, f"127.0.0.1:{stub_port}"],
                                      stdout=subprocess.DEVNULL))
        stub = f"http://127.0.0.1:{stub_port}"
        time.sleep(0.5)

        two = ["us-east-1", "us-west-2"]
        # One dynalite per region: dynalite keeps one set of tables whatever the region a
        # request names (moto keeps one per region).
        dynalites = {}
        for r in two:
            dyn_proc, dynalites[r] = start_dynalite()
            procs.append(dyn_proc)
            seed_moto(dynalites[r], [r], 10)
        moto_res = run_pair(f"moto, 2 regions x 10 tables, GetItem every 1 s, {seconds:.0f} s",
                            bin_path, [(r, moto) for r in two], 10, seconds)
        dyn_res = run_pair(f"dynalite (keep-alive), 2 regions x 10 tables, GetItem every 1 s, {seconds:.0f} s",
                           bin_path, [(r, dynalites[r]) for r in two], 10, seconds)
        stub_res = run_pair(f"keep-alive stub, 2 regions x 10 tables, GetItem every 1 s, {seconds:.0f} s",
                            bin_path, [(r, stub) for r in two], 10, seconds)
        six = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1"]
        scale_res = run_pair(f"scale: keep-alive stub, 6 regions x 20 tables, read+write+replication every 1 s, {seconds:.0f} s",
                             bin_path, [(r, stub) for r in six], 20, seconds,
                             with_baseline=False, probes=("read", "write", "replication"))
        # The application checks' share: the same stub run with 10 checks per region added
        # (keep-alive HTTP GET of a small page, body checked), the DynamoDB probes' CPU taken off.
        app_res = run_pair(f"keep-alive stub, 2 regions x 10 tables GetItem + 10 application checks per region, every 1 s, {seconds:.0f} s",
                           bin_path, [(r, stub) for r in two], 10, seconds, with_baseline=False,
                           app_checks=10, app_url=f"{stub}/wp-login.php")
        print("# exporter benchmark")
        cpu_x, rss_x = report(moto_res)
        dyn_cpu_x, dyn_rss_x = report(dyn_res)
        report(stub_res)
        report(scale_res)
        a, s_ = app_res["exporter"], stub_res["exporter"]
        ddb_ms = per_probe_ms(s_)
        app_ms = 1000 * (a["cpu_seconds"] - ddb_ms / 1000 * a["probes"]) / max(1, a["app_checks"])
        print(f"\n## {app_res['label']}")
        print(f"application checks: {a['app_checks']} run, {a['app_failures']} failed; "
              f"CPU per application check {app_ms:.3f} ms next to {ddb_ms:.3f} ms per DynamoDB probe; "
              f"peak RSS {a['peak_rss_bytes'] / 2**20:.1f} MiB")
        ok = (cpu_x >= 2 and rss_x >= 3 and dyn_cpu_x >= 4 and dyn_rss_x >= 3
              and scale_res["exporter"]["slots_missed"] == 0
              and app_res["exporter"]["app_failures"] == 0)
        print(f"\nfloors (moto: >= 2x less CPU per probe, >= 3x less peak RSS; dynalite: >= 4x less CPU per probe, "
              f">= 3x less peak RSS; scale: 0 slots missed; application checks: none failed): "
              f"{'MET' if ok else 'NOT MET'}")
        with open(os.environ.get("BENCH_JSON", "/dev/null"), "w") as f:
            json.dump([moto_res, dyn_res, stub_res, scale_res, app_res], f, indent=2)
        sys.exit(0 if ok else 1)
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
