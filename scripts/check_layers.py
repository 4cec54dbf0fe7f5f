#!/usr/bin/env python3
"""Check that no file in src/ includes a header of a higher layer.

The layers (docs/architecture.md, "Layers") are listed below, lowest first.
A module is in its directory's layer unless MODULES places it lower (a
self-contained codec or leaf that lives beside the code it serves). A file
may include headers of its own layer and of the layers below; an include of
a higher layer fails the check, unless it is one of the ALLOWED upward
includes, each with its reason. Run from anywhere; exits 1 on a violation.
Part of `make lint` (and so of `make test`).
"""
import os
import re
import sys

LAYERS = [
    ("base", ["common"]),
    ("codecs and services", ["ws", "http", "log", "config", "crypto", "metrics", "trace",
                             "throttle"]),
    ("store", ["store"]),
    ("net", ["net"]),
    ("engine and pages", ["engine", "web"]),
    ("application", ["app", "integrations"]),
    ("management API", ["mgmt"]),
    ("commands", ["cli", "."]),
]

# Modules (path without extension) placed below their directory's layer.
MODULES = {
    "ws/utf8": "base",  # the one UTF-8 validator, used by the escaper and parsers
    "engine/redis_url": "codecs and services",  # the URL parser config checks at load
    "engine/redis_ring": "codecs and services",  # the shard ring: pure arithmetic
    "engine/redis_nodes": "codecs and services",  # the node list codec
    "app/router": "codecs and services",  # route selection: no I/O
    "mgmt/credentials": "codecs and services",  # the keys file, read by app and cli
    "cli/nodeid": "codecs and services",  # the node-id file
    "cli/datalock": "codecs and services",  # the data directory's lock file
    "app/events": "engine and pages",  # the events' wire encoder, used by the engine
}

# Upward includes that remain, each a known leak (docs/architecture.md).
ALLOWED = {
    ("app/app.c", "mgmt/mgmt.h"): "the application hands plain HTTP requests to the management API",
    ("integrations/integ.c", "cli/outputs.h"): "the event's apiId is `wsgate outputs`' websocket_api_id",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def rank_of(module):
    name = MODULES.get(module)
    if name is None:
        d = os.path.dirname(module) or "."
        for i, (_, dirs) in enumerate(LAYERS):
            if d in dirs:
                return i
        return None
    return [n for n, _ in LAYERS].index(name)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    bad, unknown = [], []
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if not f.endswith((".c", ".h")):
                continue
            path = os.path.relpath(os.path.join(dirpath, f), root)
            src = os.path.splitext(path)[0]
            r = rank_of(src)
            if r is None:
                unknown.append(path)
                continue
            with open(os.path.join(root, path), encoding="utf-8") as fh:
                text = fh.read()
            for inc in INCLUDE.findall(text):
                if "/" not in inc:
                    continue  # generated or local headers (gen/web_assets.h)
                t = rank_of(os.path.splitext(inc)[0])
                if t is None:
                    continue
                if t > r and (path, inc) not in ALLOWED:
                    bad.append(f"src/{path} ({LAYERS[r][0]}) includes {inc} ({LAYERS[t][0]})")
    for path in unknown:
        print(f"check_layers: src/{path}: its directory is in no layer (add it to LAYERS)")
    for line in bad:
        print(f"check_layers: {line}: a lower layer may not include a higher one")
    if bad or unknown:
        print("check_layers: see docs/architecture.md, \"Layers\"")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
