#!/usr/bin/env python3
"""Times fleet queries over N shadows on a running shade serve.
Usage: fleet_count.py MQTT_PORT HTTP_PORT N   (against a running shade serve; see docs/BENCHMARKS.md)"""
import json, sys, time, urllib.request, urllib.parse, threading
import paho.mqtt.client as mqtt
mport, hport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
base = f"http://127.0.0.1:{hport}"
def get(path):
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return json.loads(r.read())
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleetbench")
c.max_inflight_messages_set(1000); c.max_queued_messages_set(0)
c.connect("127.0.0.1", mport); c.loop_start()
t = time.time()
def make(lo, hi):
    for i in range(lo, hi):
        doc = {"state": {"desired": {"mode": ["eco","on","off"][i % 3]},
                         "reported": {"fw": 1.0 + (i % 4) / 2, "temp": 15 + i % 20}}}
        c.publish(f"$aws/things/fb-{i:06d}/shadow/update", json.dumps(doc), qos=1)
CHUNK = 2000
for lo in range(get("/count")["count"] // CHUNK * CHUNK, n, CHUNK):
    hi = min(n, lo + CHUNK)
    for attempt in range(5):
        make(lo, hi)
        deadline = time.time() + 10
        while time.time() < deadline and get("/count")["count"] < hi:
            time.sleep(0.05)
        if get("/count")["count"] >= hi: break
print(f"created {n} shadows in {time.time()-t:.1f}s")
q = urllib.parse.urlencode({"where": 'reported.fw < 2.0 and desired.mode = "eco"', "by": "reported.fw", "stats": "reported.temp"})
for path in ["/count", "/count?" + q, "/things?pageSize=100&" + urllib.parse.urlencode({"where": "reported.temp > 33"})]:
    times = []
    for _ in range(5):
        t = time.time(); r = get(path); times.append((time.time() - t) * 1000)
    times.sort()
    print(f"{path[:60]:60s} median {times[2]:.0f} ms  min {times[0]:.0f}  max {times[-1]:.0f}  -> {json.dumps(r)[:100]}")
