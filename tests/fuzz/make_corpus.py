#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora from the unit tests' raw inputs.

  tests/fuzz/make_corpus.py            (re)writes tests/fuzz/corpus/<target>/seed-*

HTTP seeds are the string literals of tests/unit/http/http1_codec_test.cc that hold a request or a
response, each written in the codec targets' input layout (fuzz_common.h: a flags byte and three
u16 cut seeds, then the payload) in a few variants (cut points, small limits, HEAD). Config seeds
are config/examples/*.yaml and the YAML built in tests/unit/config_test.cc (its named snippets and
every errorsOf()/loadOk() argument made only of those and literals). Regression seeds (files not
named seed-*) are never touched.
"""
import hashlib
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"

# A C++ string literal, raw literal, or identifier, in source order.
TOKEN = re.compile(r'R"\((.*?)\)"|"((?:[^"\\\n]|\\.)*)"|([A-Za-z_][A-Za-z0-9_]*)|(\S)', re.S)
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def unescape(body):
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
        elif body[i + 1] == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2:])
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        else:
            out.append(ESCAPES[body[i + 1]])
            i += 2
    return "".join(out)


def tokens(text):
    for m in TOKEN.finditer(text):
        if m.group(1) is not None:
            yield ("str", m.group(1))
        elif m.group(2) is not None:
            yield ("str", unescape(m.group(2)))
        elif m.group(3) is not None:
            yield ("id", m.group(3))
        else:
            yield ("op", m.group(4))


def literal_runs(text):
    """Adjacent literals concatenated, as the compiler does."""
    run = None
    for kind, value in tokens(text):
        if kind == "str":
            run = (run or "") + value
        else:
            if run is not None:
                yield run
            run = None
    if run is not None:
        yield run


def http_seeds():
    text = (ROOT / "tests/unit/http/http1_codec_test.cc").read_text()
    requests, responses = [], []
    for s in literal_runs(text):
        if s.startswith("HTTP/"):
            responses.append(s)
        elif re.match(r"[A-Z@]+ \S+ HTTP/", s):
            requests.append(s)
    return requests, responses


def eval_concat(expr, names):
    """Value of `a + "b" "c" + d` over known names, or None."""
    out, need_operand = "", True
    for kind, value in tokens(expr):
        if kind == "str":
            out += value
            need_operand = False
        elif kind == "id" and value in names and need_operand:
            out += names[value]
            need_operand = False
        elif kind == "op" and value == "+" and not need_operand:
            need_operand = True
        else:
            return None
    return out if not need_operand else None


def call_args(text, fn):
    """The argument text of every fn(...) call, matching parentheses outside literals."""
    for m in re.finditer(re.escape(fn) + r"\(", text):
        depth, i, in_str = 1, m.end(), False
        while i < len(text) and depth:
            c = text[i]
            if in_str:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            i += 1
        yield text[m.end():i - 1]


def config_seeds():
    text = (ROOT / "tests/unit/config_test.cc").read_text()
    names = {}
    for m in re.finditer(r"const std::string (k\w+) =(.*?);\n", text, re.S):
        value = eval_concat(m.group(2), names)
        if value is not None:
            names[m.group(1)] = value
    seeds = list(names.values())
    for fn in ("errorsOf", "loadOk"):
        for arg in call_args(text, fn):
            value = eval_concat(arg, names)
            if value is not None:
                seeds.append(value)
    for path in sorted((ROOT / "config/examples").glob("*.yaml")):
        seeds.append(path.read_text())
    return seeds


def codec_input(flags, cuts, payload):
    return bytes([flags]) + struct.pack("<3H", *cuts) + payload.encode("latin-1")


def write(target, blobs):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for blob in blobs:
        name = "seed-" + hashlib.sha1(blob).hexdigest()[:12]
        (d / name).write_bytes(blob)
    print(f"{target}: {len(set(blobs))} seeds")


def variants(payload, head_bit=False):
    n = len(payload)
    out = [
        codec_input(0x01, (n // 2, 0, 0), payload),                    # one cut, in the middle
        codec_input(0x03, (n // 3, n // 2, (2 * n) // 3), payload),      # three cuts
        codec_input(0x07, (5, n - 5 if n > 5 else 0, 17), payload),      # small limits
    ]
    if head_bit:
        out.append(codec_input(0x0b, (n // 4, n // 2, n - 1 if n else 0), payload))
    return out


def main():
    requests, responses = http_seeds()
    write("fuzz_request_decoder", [b for r in requests for b in variants(r)])
    write("fuzz_request_roundtrip", [b for r in requests for b in variants(r)[:1]])
    write("fuzz_response_decoder", [b for r in responses for b in variants(r, head_bit=True)])
    write("fuzz_config_loader", [s.encode() for s in config_seeds()])


if __name__ == "__main__":
    main()
