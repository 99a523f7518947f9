#!/usr/bin/env python3
"""A third-party client (paho-mqtt 2.x) over MQTT-on-WebSocket-over-TLS
against `shade serve` with authentication on.

Usage: python3 wss_auth.py PORT CA_PEM THING SECRET OTHER_THING

As device THING (user name THING, password SECRET), over wss to
127.0.0.1:PORT trusting CA_PEM: an update of its own shadow is accepted, a
subscription to OTHER_THING's replies gets a SUBACK failure, and a wrong
password gets CONNACK "bad user name or password". Exits 0 when all hold,
1 with a message on the first mismatch, 2 on a bad command line. Every wait
is bounded.
"""

import json
import queue
import ssl
import sys

import paho.mqtt.client as mqtt

TIMEOUT = 20.0


def fail(what):
    print(f"mismatch: {what}", file=sys.stderr)
    sys.exit(1)


def client(port, ca, user, password, client_id):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        transport="websockets",
    )
    c.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
    c.username_pw_set(user, password)
    events = queue.Queue()
    c.on_connect = lambda cl, u, flags, rc, props: events.put(("connack", rc))
    c.on_subscribe = lambda cl, u, mid, rcs, props: events.put(("suback", rcs))
    c.on_message = lambda cl, u, msg: events.put(("message", (msg.topic, bytes(msg.payload))))
    c.on_disconnect = lambda cl, u, flags, rc, props: events.put(("disconnect", rc))
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    return c, events


def wait(events, kind):
    while True:
        try:
            got, value = events.get(timeout=TIMEOUT)
        except queue.Empty:
            fail(f"no {kind} within {TIMEOUT} s")
        if got == kind:
            return value
        if got == "disconnect" and kind != "disconnect":
            fail(f"disconnected ({value}) while waiting for {kind}")


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    port, ca, thing, secret, other = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

    c, events = client(port, ca, thing, secret, f"paho-{thing}")
    rc = wait(events, "connack")
    if rc.is_failure:
        fail(f"the device was refused: {rc}")
    c.subscribe(f"$aws/things/{thing}/shadow/update/accepted", qos=1)
    rcs = wait(events, "suback")
    if any(r.is_failure for r in rcs):
        fail(f"its own topic was refused: {rcs}")
    c.subscribe(f"$aws/things/{other}/shadow/update/accepted", qos=1)
    rcs = wait(events, "suback")
    if not all(r.is_failure for r in rcs):
        fail(f"another thing's topic was granted: {rcs}")
    body = {"state": {"reported": {"via": "wss"}}, "clientToken": "wss-1"}
    c.publish(f"$aws/things/{thing}/shadow/update", json.dumps(body), qos=1)
    topic, payload = wait(events, "message")
    reply = json.loads(payload)
    if topic != f"$aws/things/{thing}/shadow/update/accepted" or reply.get("clientToken") != "wss-1":
        fail(f"unexpected reply on {topic}: {reply}")
    c.loop_stop()
    c.disconnect()

    bad, events = client(port, ca, thing, "not-the-secret", f"paho-{thing}-bad")
    rc = wait(events, "connack")
    if not rc.is_failure or "user name or password" not in str(rc).lower():
        fail(f"a wrong password got {rc}")
    bad.loop_stop()
    print("ok")


if __name__ == "__main__":
    main()
