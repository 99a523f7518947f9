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

# `live`: the live count's cost per change. A stream of
# GET /count/stream counts `reported.fw < 2.0`; each of M changes, to
# things spread over the fleet, moves that count. Per change: publish ->
# update/accepted (the service's own latency, the baseline) and publish ->
# the stream's new count.
if len(sys.argv) > 4 and sys.argv[4] == "live":
    import http.client, queue
    M = 300
    accepted = queue.Queue()
    c.on_message = lambda cl, ud, msg: accepted.put(time.time())
    c.subscribe("$aws/things/+/shadow/update/accepted", qos=1)
    time.sleep(0.5)
    conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=60)
    conn.request("GET", "/count/stream?" + urllib.parse.urlencode({"where": "reported.fw < 2.0"}))
    resp = conn.getresponse()
    counts = queue.Queue()
    def reader():
        data = []
        while True:
            line = resp.fp.readline()
            if not line:
                return
            line = line.decode().rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                counts.put((time.time(), json.loads("\n".join(data))))
                data = []
    threading.Thread(target=reader, daemon=True).start()
    _, first = counts.get(timeout=120)
    acc, live = [], []
    for k in range(M):
        thing = f"fb-{k * (n // M):06d}"
        fw = get(f"/things/{thing}/shadow")["state"]["reported"]["fw"]
        doc = {"state": {"reported": {"fw": 5.0 if fw < 2.0 else 0.5}}}
        t0 = time.time()
        c.publish(f"$aws/things/{thing}/shadow/update", json.dumps(doc), qos=1)
        acc.append((accepted.get(timeout=10) - t0) * 1000)
        t, _ = counts.get(timeout=10)
        live.append((t - t0) * 1000)
    def pct(xs, p):
        xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
    print(f"live count over {n} shadows (first count {first['count']}), {M} changes:")
    for name, xs in [("publish -> update/accepted", acc), ("publish -> new live count", live)]:
        print(f"  {name:28s} median {pct(xs, .5):.2f} ms  p99 {pct(xs, .99):.2f} ms")
