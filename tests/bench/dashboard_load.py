#!/usr/bin/env python3
"""Times the dashboard's first load over N shadows, in headless Chromium.

Usage: dashboard_load.py MQTT_PORT HTTP_PORT N [ROWS]
against a running `shade serve` (no [auth]); see docs/BENCHMARKS.md.

Creates shadows `dl-000000`.. until N exist (QoS 1, 200 in flight), then
opens http://127.0.0.1:HTTP_PORT/[?rows=ROWS] and prints the seconds until
the line under the table counts N shadows, the rows the table holds, and
a script round trip afterwards (how responsive the page is).
"""
import json
import sys
import tempfile
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

mport, hport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
query = f"?rows={sys.argv[4]}" if len(sys.argv) > 4 else ""
base = f"http://127.0.0.1:{hport}"


def count():
    with urllib.request.urlopen(base + "/count", timeout=60) as r:
        return json.loads(r.read())["count"]


have = count()
if have < n:
    window = threading.Semaphore(200)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dashboard-load", protocol=mqtt.MQTTv311)
    c.on_publish = lambda *a: window.release()
    c.connect("127.0.0.1", mport)
    c.loop_start()
    t = time.time()
    for i in range(have, n):
        window.acquire()
        doc = {"state": {"reported": {"fw": f"1.{i % 7}", "temp": i % 90},
                         "desired": {"mode": "eco" if i % 3 else "off"}}}
        c.publish(f"$aws/things/dl-{i:06d}/shadow/update", json.dumps(doc), qos=1)
    for _ in range(200):
        window.acquire()
    c.loop_stop()
    print(f"created {n - have} shadows in {time.time() - t:.1f} s")
total = count()

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,900", f"--user-data-dir={tempfile.mkdtemp()}"]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
try:
    driver.set_script_timeout(180)
    t = time.time()
    driver.get(base + "/" + query)
    text = ""
    while not text.startswith(f"{total} shadow") and time.time() - t < 180:
        time.sleep(0.1)
        text = driver.execute_script("return document.querySelector('#summary').textContent")
    took = time.time() - t
    rows = driver.execute_script("return document.querySelectorAll('#things tbody tr').length")
    t2 = time.time()
    driver.execute_script("return 1")
    print(f"{total} shadows: summary {text!r} after {took:.1f} s; {rows} rows in the table; "
          f"script round trip {1000 * (time.time() - t2):.0f} ms")
finally:
    driver.quit()
