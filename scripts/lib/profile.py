"""Derives a deployment of the monitoring files from the shipped ones, without hand-written copies.

  profile.py OUT_DIR [--fast] [--exporters H:P,H:P] [--responder H:P] [--alertmanager H:P]
                     [--webhook-token-file PATH] [--plain | --tls DIR]

--fast replaces every value on a line ending in `# fast: X` by X (the fast profile of the
end-to-end test and the demo). Inside a PromQL expression, where `#` starts a comment, a line
ending in `# fast: [D]` has its one range selector replaced by [D]:
`increase(dynamodb_probe_total[20s]) # fast: [5s]`. The other options point the scrape targets,
the Alertmanager target and the responder webhook at the given addresses. Writes OUT_DIR/prometheus.yml,
OUT_DIR/rules/*.yml and OUT_DIR/alertmanager.yml.

The shipped files reach the exporters and the responder over TLS with files under
/etc/{prometheus,alertmanager}/dynamo-failover/. --tls DIR points them at DIR/ca.pem,
DIR/client.pem and DIR/client-key.pem instead; --plain drops TLS (http://, no tls_config), for
the stand-ins on loopback.

Why Python: it edits YAML text line by line, keeping every comment, and runs where the test kit
and `scripts/lib/check-monitoring` need it without a build. (Every other part of the demo and the
tests is Rust, in crates/testkit.)
"""
import argparse
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAST = re.compile(r"^(\s*[\w-]+:\s*)(\S+)(\s*#\s*fast:\s*(\S+).*)$")
FAST_RANGE = re.compile(r"^(.*?)(\s*#\s*fast:\s*(\[[^\]\s]+\]).*)$")
RANGE = re.compile(r"\[[0-9][0-9a-z]*\]")


def fast(text):
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        r = FAST_RANGE.match(line)
        if r and not r.group(1).lstrip().startswith("#"):
            code, ranges = r.group(1), RANGE.findall(r.group(1))
            if len(ranges) != 1:
                sys.exit(f"profile.py: line {n} has `# fast: {r.group(3)}` but {len(ranges)} range selectors: {line.strip()}")
            out.append(RANGE.sub(lambda _: r.group(3), code) + r.group(2))
            continue
        m = FAST.match(line)
        out.append(f"{m.group(1)}{m.group(4)}{m.group(3)}" if m else line)
    return "\n".join(out) + "\n"


TLS_DIR = re.compile(r"/etc/(prometheus|alertmanager)/dynamo-failover/")


def plain(text):
    """Drops every `scheme: https` line and `tls_config:` block (blank lines inside it too); the
    webhook receivers' `- url: https://` become http://."""
    out, block = [], None
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if block is not None:
            if not line.strip() or indent > block:
                continue
            block = None
        if line.strip() == "scheme: https":
            continue
        if line.strip() == "tls_config:":
            block = indent
            continue
        out.append(re.sub(r"^(\s*- url: )https://", r"\1http://", line))
    return "\n".join(out) + "\n"


def replace_once(text, pattern, repl, what):
    new, n = re.subn(pattern, repl, text, count=1, flags=re.S)
    if n != 1:
        sys.exit(f"profile.py: cannot find {what} in the shipped file")
    return new


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--fast", action="store_true")
    p.add_argument("--exporters")
    p.add_argument("--responder")
    p.add_argument("--alertmanager")
    p.add_argument("--webhook-token-file")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--plain", action="store_true")
    tls.add_argument("--tls")
    a = p.parse_args()
    out = pathlib.Path(a.out)
    (out / "rules").mkdir(parents=True, exist_ok=True)
    profile = fast if a.fast else (lambda t: t)

    def f(text):
        text = profile(text)
        if a.plain:
            return plain(text)
        if a.tls:
            tls_dir = str(pathlib.Path(a.tls).resolve()) + "/"
            return TLS_DIR.sub(lambda _: tls_dir, text)
        return text

    prom = f((ROOT / "prometheus/prometheus.yml").read_text())
    if a.alertmanager:
        prom = replace_once(prom, r'(alertmanagers:.*?targets: )\[[^\]]*\]', rf'\g<1>["{a.alertmanager}"]', "the Alertmanager target")
    if a.exporters:
        targets = ", ".join(f'"{t}"' for t in a.exporters.split(","))
        prom = replace_once(prom, r'(job_name: dynamo-failover-exporter.*?targets: )\[[^\]]*\]', rf"\g<1>[{targets}]", "the exporter targets")
    if a.responder:
        prom = replace_once(prom, r'(job_name: dynamo-failover-responder.*?targets: )\[[^\]]*\]', rf'\g<1>["{a.responder}"]', "the responder target")
    (out / "prometheus.yml").write_text(prom)
    for rules in sorted((ROOT / "prometheus/rules").glob("*.yml")):
        (out / "rules" / rules.name).write_text(f(rules.read_text()))

    am = f((ROOT / "alertmanager/alertmanager.yml").read_text())
    if a.responder:
        am = replace_once(am, r"url: (https?)://[^/\s]+/alerts", rf"url: \g<1>://{a.responder}/alerts", "the responder webhook URL")
    if a.webhook_token_file:
        am = replace_once(am, r"credentials_file: \S+", f"credentials_file: {a.webhook_token_file}", "the webhook credentials_file")
    (out / "alertmanager.yml").write_text(am)


if __name__ == "__main__":
    main()
