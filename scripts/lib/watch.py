"""Prints the exporter's view of each region, one line per scrape, for the demo.

Usage: watch.py METRICS_URL SECONDS [LABEL]
"""
import re
import sys
import time
import urllib.request

LINE = re.compile(r'^(\w+)\{([^}]*)\} (\S+)$')


def scrape(url):
    text = urllib.request.urlopen(url, timeout=2).read().decode()
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out.append((m.group(1), labels, float(m.group(3))))
    return out


def summary(samples):
    regions = {}
    for name, labels, value in samples:
        region = labels.get("region")
        if name == "dynamodb_probe_success":
            r = regions.setdefault(region, {"ok": 0, "n": 0, "fail": set()})
            r["n"] += 1
            r["ok"] += int(value)
        if name == "dynamodb_probe_total" and value > 0 and labels["result"] != "success":
            regions.setdefault(region, {"ok": 0, "n": 0, "fail": set()})["fail"].add(labels["result"])
    lag = max((v for n, l, v in samples if n == "dynamodb_replication_lag_seconds"), default=0.0)
    parts = []
    for region in sorted(regions):
        r = regions[region]
        state = "UP  " if r["ok"] == r["n"] else "DOWN"
        seen = ",".join(sorted(r["fail"])) or "-"
        parts.append(f"{region} {state} {r['ok']}/{r['n']} probes ok (failures seen: {seen})")
    return " | ".join(parts) + f" | max replication lag {lag:.1f}s"


def main():
    url, seconds = sys.argv[1], float(sys.argv[2])
    label = sys.argv[3] if len(sys.argv) > 3 else ""
    end = time.time() + seconds
    while time.time() < end:
        try:
            line = summary(scrape(url))
        except OSError as e:
            line = f"exporter not answering: {e}"
        print(f"  {time.strftime('%H:%M:%S')} {label}{line}", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main()
