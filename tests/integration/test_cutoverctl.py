#!/usr/bin/env python3
"""cutoverctl: weight edits keep a commented YAML file byte-identical except the numbers, are
validated by the real `cutover --check` and written atomically; refusals leave the file untouched;
`status` renders the admin API's /stats and /config as a table.

Run: python3 test_cutoverctl.py --ctl tools/cutoverctl --binary build/proxy/cutover
"""

import argparse
import difflib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import unittest

ARGS = None

# Block style, flow style, quoted weights, comments on every kind of line, odd spacing, and a
# route whose split has no "new": all must survive byte for byte.
COMMENTED = """\
# cutover config for the dashboard migration.
#   weights below are edited by cutoverctl; keep the comments!
listeners:
  - name: public            # the only listener
    address: 127.0.0.1:0

backends:
  legacy: { endpoints: ["127.0.0.1:9001"] }   # the old app
  new:                                        # the rewrite
    endpoints: ["127.0.0.1:9002"]

routes:
  # Kibana data: block-style split with comments on each weight.
  - name: kibana
    match: { prefix: /api/fetch-kibana-data }
    split:
      # new owns the low buckets
      new: 10        # raise step by step: 10 -> 25 -> 50 -> 100
      legacy: 90     # the rest
    fallback: legacy

  -   name: "config"   # quoted name, extra spaces after the dash
      match: { prefix: /api/config }
      split: {new: 10 ,  legacy: 90}   # flow, odd spacing
  - match: { prefix: /api/refresh }
    name: refresh     # name after other keys
    split: { legacy: "90", new: "10" }  # quoted weights, legacy first

  # Health probes stay on legacy.
  - name: health
    match: { exact: /health }
    split: { legacy: 100 }

  - name: default
    match: { prefix: / }
    split:
      new: 10
      legacy: 90
# trailing comment
"""


def weights_of(text):
    """(route, backend) -> weight, read back through cutoverctl's own scanner."""
    from importlib.machinery import SourceFileLoader
    import importlib.util
    loader = SourceFileLoader("cutoverctl_mod", ARGS.ctl)
    spec = importlib.util.spec_from_loader("cutoverctl_mod", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    out = {}
    for s in mod.find_splits(text):
        for b in s.order:
            out[(s.route, b)] = mod._weight_of(text, s.spans[b])[0]
    return out


def only_digits_changed(before, after):
    """True if every difference between the two texts is digits replaced by digits."""
    sm = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for op, a0, a1, b0, b1 in sm.get_opcodes():
        if op == "equal":
            continue
        if not (before[a0:a1].isdigit() or a0 == a1) or not (after[b0:b1].isdigit() or b0 == b1):
            return False
    return True


class CtlTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="cutoverctl_test_")
        self.path = os.path.join(self.dir, "cutover.yaml")
        with open(self.path, "w") as f:
            f.write(COMMENTED)
        os.chmod(self.path, 0o640)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def ctl(self, *args, env=None, binary=True, script=None):
        cmd = [sys.executable, script or ARGS.ctl, "--config", self.path]
        if binary:
            cmd += ["--binary", ARGS.binary]
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                              env=env if env is not None else os.environ)

    def read(self):
        with open(self.path) as f:
            return f.read()

    def leftovers(self):
        return [n for n in os.listdir(self.dir) if n != "cutover.yaml"]

    def test_original_file_is_valid_for_the_real_binary(self):
        r = subprocess.run([ARGS.binary, "--check", self.path], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_set_weight_one_route_changes_only_its_numbers(self):
        r = self.ctl("set-weight", "kibana", "25")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.read()
        self.assertTrue(only_digits_changed(COMMENTED, after))
        self.assertEqual(after, COMMENTED.replace("new: 10        #", "new: 25        #", 1)
                         .replace("legacy: 90     #", "legacy: 75     #", 1))
        w = weights_of(after)
        self.assertEqual((w[("kibana", "new")], w[("kibana", "legacy")]), (25, 75))
        self.assertEqual((w[("config", "new")], w[("default", "new")]), (10, 10))
        self.assertIn("route kibana: new 10% -> 25%, legacy 90% -> 75%", r.stdout)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)
        self.assertEqual(self.leftovers(), [])

    def test_set_weight_all_edits_block_flow_and_quoted_splits(self):
        r = self.ctl("set-weight", "all", "50")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.read()
        self.assertTrue(only_digits_changed(COMMENTED, after))
        w = weights_of(after)
        for route in ("kibana", "config", "refresh", "default"):
            self.assertEqual((w[(route, "new")], w[(route, "legacy")]), (50, 50), route)
        self.assertEqual(w[("health", "legacy")], 100)
        self.assertIn('legacy: "50", new: "50"', after)  # quotes kept
        self.assertIn("route health: skipped", r.stdout)
        # Byte-identical apart from the numbers: same length here (two digits each).
        self.assertEqual(len(after), len(COMMENTED))

    def test_rollback_then_promote(self):
        r = self.ctl("rollback")
        self.assertEqual(r.returncode, 0, r.stderr)
        w = weights_of(self.read())
        for route in ("kibana", "config", "refresh", "default"):
            self.assertEqual((w[(route, "new")], w[(route, "legacy")]), (0, 100), route)
        self.assertTrue(only_digits_changed(COMMENTED, self.read()))
        r = self.ctl("promote")
        self.assertEqual(r.returncode, 0, r.stderr)
        w = weights_of(self.read())
        for route in ("kibana", "config", "refresh", "default"):
            self.assertEqual((w[(route, "new")], w[(route, "legacy")]), (100, 0), route)
        # And back to where we started gives the original bytes exactly.
        self.assertEqual(self.ctl("set-weight", "all", "10").returncode, 0)
        self.assertEqual(self.read(), COMMENTED)

    def test_unknown_route_is_refused_and_the_file_untouched(self):
        before = os.stat(self.path)
        r = self.ctl("set-weight", "kibanna", "25")
        self.assertEqual(r.returncode, 1)
        self.assertIn("unknown route 'kibanna'", r.stderr)
        self.assertIn("kibana, config, refresh, health, default", r.stderr)
        self.assertEqual(self.read(), COMMENTED)
        self.assertEqual(os.stat(self.path).st_ino, before.st_ino)

    def test_route_without_new_and_out_of_range_percent_are_refused(self):
        r = self.ctl("set-weight", "health", "10")
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not split to 'new'", r.stderr)
        r = self.ctl("set-weight", "kibana", "101")
        self.assertEqual(r.returncode, 2)  # an argument error, as argparse reports them
        self.assertIn("0..100", r.stderr)
        self.assertEqual(self.read(), COMMENTED)

    def test_options_after_the_command_and_a_percent_sign(self):
        r = subprocess.run([sys.executable, ARGS.ctl, "set-weight", "kibana", "25%", "--config",
                            self.path, "--binary", ARGS.binary],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        w = weights_of(self.read())
        self.assertEqual((w[("kibana", "new")], w[("kibana", "legacy")]), (25, 75))
        r = self.ctl("set-weight", "kibana", "25%%")
        self.assertEqual(r.returncode, 2)
        self.assertIn("expected a whole percent", r.stderr)

    def test_three_backend_split_is_refused(self):
        text = COMMENTED.replace(
            "  new:                                        # the rewrite\n",
            "  canary: { endpoints: [\"127.0.0.1:9003\"] }\n"
            "  new:                                        # the rewrite\n").replace(
            "split: {new: 10 ,  legacy: 90}", "split: {new: 10 ,  legacy: 80, canary: 10}")
        with open(self.path, "w") as f:
            f.write(text)
        r = self.ctl("set-weight", "all", "20")
        self.assertEqual(r.returncode, 1)
        self.assertIn("route config splits between 3 backends", r.stderr)
        self.assertEqual(self.read(), text)

    def test_real_validator_rejection_leaves_the_file_and_no_temp_files(self):
        # A file that is wrong elsewhere: the edit must not be written, the error is shown.
        text = COMMENTED.replace("    fallback: legacy\n", "    fallback: legacy\n    fallbak: x\n", 1)
        with open(self.path, "w") as f:
            f.write(text)
        r = self.ctl("set-weight", "kibana", "25")
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not validate", r.stderr)
        self.assertIn("fallbak", r.stderr)
        self.assertIn(self.path, r.stderr)  # errors name the user's file, not the temp file
        self.assertEqual(self.read(), text)
        self.assertEqual(self.leftovers(), [])

    def test_fake_validators_and_a_missing_validator(self):
        ok = os.path.join(self.dir, "ok.sh")
        bad = os.path.join(self.dir, "bad.sh")
        for path, code in ((ok, 0), (bad, 1)):
            with open(path, "w") as f:
                f.write("#!/bin/sh\necho \"checked $2\"\nexit %d\n" % code)
            os.chmod(path, 0o755)
        r = self.ctl("--binary", bad, "set-weight", "kibana", "30", binary=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.read(), COMMENTED)
        env = dict(os.environ, CUTOVER_BIN=ok)
        r = self.ctl("set-weight", "kibana", "30", env=env, binary=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(weights_of(self.read())[("kibana", "new")], 30)
        # No --binary, no $CUTOVER_BIN, nothing on PATH, no build/ beside the script (a copy
        # outside the checkout): refused unless --no-validate.
        env = {"PATH": self.dir, "HOME": self.dir}
        for name in ("ok.sh", "bad.sh"):
            os.unlink(os.path.join(self.dir, name))
        os.makedirs(os.path.join(self.dir, "tools"))
        lone = os.path.join(self.dir, "tools", "cutoverctl")
        shutil.copy(ARGS.ctl, lone)
        r = self.ctl("set-weight", "kibana", "40", env=env, binary=False, script=lone)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--no-validate", r.stderr)
        self.assertEqual(weights_of(self.read())[("kibana", "new")], 30)
        r = self.ctl("--no-validate", "set-weight", "kibana", "40", env=env, binary=False,
                     script=lone)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(weights_of(self.read())[("kibana", "new")], 40)

    def test_dry_run_prints_a_diff_and_writes_nothing(self):
        r = self.ctl("--dry-run", "set-weight", "default", "25")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("-      new: 10\n-      legacy: 90\n+      new: 25\n+      legacy: 75\n",
                      r.stdout)
        self.assertEqual(self.read(), COMMENTED)

    def test_the_real_binary_accepts_every_edited_file(self):
        for args in (("set-weight", "all", "33"), ("rollback",), ("promote",)):
            self.assertEqual(self.ctl(*args).returncode, 0)
            r = subprocess.run([ARGS.binary, "--check", self.path], capture_output=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


class StatusTest(unittest.TestCase):
    """`status` against a stand-in admin API on 127.0.0.1:0 serving fixed /stats and /config."""

    def test_table_from_stats_and_config(self):
        stats = {
            "routes": [{"name": "kibana", "backends": [
                {"name": "new", "requests": 120, "success_rate": 0.975, "p99_ms": 85.25,
                 "attempts": 150, "attempt_success_rate": 0.78},
                {"name": "legacy", "requests": 1080, "success_rate": 1.0, "p99_ms": 310.0},
                {"name": "spare", "requests": 0, "success_rate": None, "p99_ms": None,
                 "attempts": 0, "attempt_success_rate": None}]}],
            "backends": [{"name": "new", "breaker": "open", "trips": 2},
                         {"name": "legacy", "breaker": "closed", "trips": 0}],
        }
        config = (COMMENTED.replace("new: 10        #", "new: 25        #")
                  .replace("legacy: 90     #", "legacy: 75     #"))
        admin, seen_auth = self.serve(lambda n: stats, config)
        tmp = tempfile.NamedTemporaryFile("w", delete=False)
        tmp.write("tok123\n")
        tmp.close()
        self.addCleanup(os.unlink, tmp.name)
        r = subprocess.run([sys.executable, ARGS.ctl, "--admin", admin, "--token-file", tmp.name,
                            "status"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith("since start"), r.stdout)
        self.assertTrue(lines[1].startswith("ROUTE"), r.stdout)
        self.assertNotIn("LAST RELOAD FAILED", r.stdout)
        new_row = [l for l in lines if l.startswith("kibana") and " new " in l][0].split()
        self.assertEqual(new_row, ["kibana", "new", "25%", "120", "97.50%", "150", "78.00%", "85.2",
                                   "open", "2"])
        legacy_row = [l for l in lines if " legacy " in l][0].split()
        self.assertEqual(legacy_row[2:7], ["75%", "1080", "100.00%", "-", "-"])
        # No data is "-", never "0.0" or "0.00%".
        spare_row = [l for l in lines if " spare " in l][0].split()
        self.assertEqual(spare_row[3:8], ["0", "-", "-", "-", "-"])
        self.assertEqual(seen_auth, ["Bearer tok123", "Bearer tok123"])

    def serve(self, handler_stats, config_text):
        """A stand-in admin API: /stats answers handler_stats(n) for the n-th call."""
        calls = []
        seen_auth = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen_auth.append(self.headers.get("Authorization"))
                if self.path == "/stats":
                    calls.append(self.path)
                    body = json.dumps(handler_stats(len(calls))).encode()
                elif self.path == "/config":
                    body = config_text.encode()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return "http://127.0.0.1:%d" % server.server_address[1], seen_auth

    def test_window_rates_come_from_the_difference_of_two_samples(self):
        def stats(n):
            # Since start new did fine (1000 of 1000); in the window it failed 30 of 100 attempts.
            new = {"name": "new", "requests": 1000 + 100 * (n - 1), "successes": 1000 + 95 * (n - 1),
                   "attempts": 1000 + 100 * (n - 1), "attempt_successes": 1000 + 70 * (n - 1),
                   "success_rate": 0.99, "attempt_success_rate": 0.97, "p99_ms": 12.0}
            idle = {"name": "legacy", "requests": 500, "successes": 500, "attempts": 500,
                    "attempt_successes": 500, "success_rate": 1.0, "attempt_success_rate": 1.0,
                    "p99_ms": 9.0}
            return {"routes": [{"name": "kibana", "backends": [new, idle]}], "backends": []}
        admin, _ = self.serve(stats, COMMENTED)
        # Options after the command name, too.
        r = subprocess.run([sys.executable, ARGS.ctl, "status", "--window", "0.2", "--admin", admin],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("over the last 0.2 s", r.stdout)
        new_row = [l for l in r.stdout.splitlines() if " new " in l][0].split()
        self.assertEqual(new_row[3:8], ["100", "95.00%", "100", "70.00%", "-"])
        legacy_row = [l for l in r.stdout.splitlines() if " legacy " in l][0].split()
        self.assertEqual(legacy_row[3:7], ["0", "-", "-", "-"])  # no traffic in the window

    def test_last_reload_error_is_shown(self):
        config = COMMENTED + ("last_reload_error: |\n"
                              "  cutover.yaml:14:7: routes[0].split.new: must be 0..100, got 140\n")
        admin, _ = self.serve(lambda n: {"routes": [], "backends": []}, config)
        r = subprocess.run([sys.executable, ARGS.ctl, "--admin", admin, "status"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("LAST RELOAD FAILED (the running config stays):\n"
                      "  cutover.yaml:14:7: routes[0].split.new: must be 0..100, got 140", r.stdout)

    def test_unreachable_admin_is_a_clear_error(self):
        r = subprocess.run([sys.executable, ARGS.ctl, "--admin", "http://127.0.0.1:9",
                            "--timeout", "2", "status"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read http://127.0.0.1:9/stats", r.stderr)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--ctl", default=os.path.join(here, "..", "..", "tools", "cutoverctl"))
    p.add_argument("--binary", required=True, help="the cutover binary (for --check)")
    p.add_argument("--backend", help="unused; accepted for symmetry with the other suites")
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
