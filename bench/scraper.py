"""Runs inside the bench namespace: scrapes a metrics endpoint and reports
latencies; with --every it keeps scraping at that period until --for ends."""

import argparse
import json
import time
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("url")
ap.add_argument("--count", type=int, default=10)
ap.add_argument("--gap", type=float, default=0.0, help="pause between scrapes")
ap.add_argument("--every", type=float, default=0.0)
ap.add_argument("--for", dest="duration", type=float, default=0.0)
a = ap.parse_args()
lat, sizes = [], []
if a.every:
    end = time.monotonic() + a.duration
    while time.monotonic() < end:
        t = time.perf_counter()
        body = urllib.request.urlopen(a.url, timeout=30).read()
        lat.append(time.perf_counter() - t)
        sizes.append(len(body))
        time.sleep(max(0.0, a.every - (time.perf_counter() - t)))
else:
    for _ in range(a.count):
        t = time.perf_counter()
        body = urllib.request.urlopen(a.url, timeout=30).read()
        lat.append(time.perf_counter() - t)
        sizes.append(len(body))
        time.sleep(a.gap)
print(json.dumps({"latency": lat, "bytes": sizes[-1] if sizes else 0}))
