#!/usr/bin/env python3
"""AWS's shadow REST API of `shade serve`, walked with python's urllib,
with a paho-mqtt client watching the same shadow.

Usage: python3 http_rest.py HTTP_PORT MQTT_PORT

Walks POST (the MQTT side sees update/accepted, delta, documents and the
state), an MQTT update (the HTTP side sees it), a stale version (409),
malformed and oversized bodies (400, 413), a named shadow and
ListNamedShadowsForThing, shade's list and history, DELETE (MQTT sees
delete/accepted; GET is then 404) and an unknown path (404). Exits 0 when
everything is as AWS documents it, 1 with a message on the first
mismatch, 2 on a bad command line. Every wait is bounded.
"""

import json
import os
import queue
import sys
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt

TIMEOUT = 20.0  # seconds per reply: debug builds on a busy machine
DEADLINE = time.monotonic() + 90.0  # the whole walk


class Mismatch(Exception):
    pass


def check(cond, what, got=None):
    if not cond:
        raise Mismatch(f"{what}" + (f"; got: {json.dumps(got)}" if got is not None else ""))


def http(base, method, path, body=None, raw=None):
    """(status, parsed JSON body) of one request; errors are answers too."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, text = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        raise Mismatch(f"{method} {path}: status {status} with a body that is not JSON: {text[:200]!r}")


class Watcher:
    """A paho client subscribed to one thing's AWS topics and state."""

    def __init__(self, port, thing):
        self.messages = queue.Queue()
        self.kept = []
        ready = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"http-walk-{os.getpid()}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, u, flags, rc, props: ready.put(("connack", rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: ready.put(("suback", rcs))
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, bytes(msg.payload)))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        kind, rc = ready.get(timeout=TIMEOUT)
        check(kind == "connack" and not rc.is_failure, f"connect refused: {rc}")
        self.client.subscribe([(f"$aws/things/{thing}/shadow/#", 1), (f"shade/things/{thing}/state", 1)])
        kind, rcs = ready.get(timeout=TIMEOUT)
        check(all(not rc.is_failure for rc in rcs), f"subscribe refused: {rcs}")

    def expect(self, topic, pred=lambda doc: True, what=""):
        """The first message on `topic` whose document satisfies `pred`."""
        for i, (t, p) in enumerate(self.kept):
            if t == topic and pred(json.loads(p) if p else None):
                del self.kept[i]
                return json.loads(p) if p else None
        while True:
            left = min(TIMEOUT, DEADLINE - time.monotonic())
            if left <= 0:
                raise Mismatch(f"no message on {topic} {what}; other messages: {[t for t, _ in self.kept]}")
            try:
                t, p = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            doc = json.loads(p) if p else None
            if t == topic and pred(doc):
                return doc
            self.kept.append((t, p))

    def publish(self, topic, doc):
        self.client.publish(topic, json.dumps(doc), qos=1).wait_for_publish(timeout=TIMEOUT)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def walk(http_port, mqtt_port):
    base = f"http://127.0.0.1:{http_port}"
    thing = f"rest-{os.getpid()}"
    aws = f"$aws/things/{thing}/shadow"
    shadow = f"/things/{thing}/shadow"
    watcher = Watcher(mqtt_port, thing)
    try:
        # A GET before anything exists: AWS's 404.
        status, doc = http(base, "GET", shadow)
        check(status == 404 and doc["code"] == 404, "GET of a missing shadow is 404", doc)

        # POST: the accepted document, and every MQTT notice.
        status, doc = http(base, "POST", shadow, {"state": {"desired": {"color": "red"}}, "clientToken": "h1"})
        check(status == 200, "POST is 200", doc)
        check(doc["state"] == {"desired": {"color": "red"}}, "POST answers the state as sent", doc)
        check(doc["version"] == 1 and doc["clientToken"] == "h1", "POST answers version 1 and the token", doc)
        check("color" in doc["metadata"]["desired"], "POST answers metadata", doc)
        watcher.expect(f"{aws}/update/accepted", lambda d: d.get("clientToken") == "h1", "after POST")
        delta = watcher.expect(f"{aws}/update/delta", what="after POST")
        check(delta["state"] == {"color": "red"} and delta["version"] == 1, "the delta of the POST", delta)
        docs = watcher.expect(f"{aws}/update/documents", what="after POST")
        check(docs["current"]["state"]["desired"] == {"color": "red"}, "documents of the POST", docs)
        state = watcher.expect(f"shade/things/{thing}/state", what="after POST")
        check(state["version"] == 1, "the retained state after the POST", state)

        # The reverse: an MQTT update, seen by GET.
        watcher.publish(f"{aws}/update", {"state": {"reported": {"color": "red"}}, "clientToken": "m1"})
        watcher.expect(f"{aws}/update/accepted", lambda d: d.get("clientToken") == "m1", "after the MQTT update")
        status, doc = http(base, "GET", shadow)
        check(status == 200, "GET is 200", doc)
        check(doc["state"]["reported"] == {"color": "red"}, "GET sees the MQTT update", doc)
        check("delta" not in doc["state"] and doc["version"] == 2, "no delta once reported, version 2", doc)

        # A stale version is AWS's 409, and changes nothing.
        status, doc = http(base, "POST", shadow, {"state": {"desired": {"color": "blue"}}, "version": 1})
        check(status == 409 and doc["code"] == 409, "a stale version is 409", doc)
        status, doc = http(base, "POST", shadow, {"state": {"desired": {"color": "blue"}}, "version": 2})
        check(status == 200 and doc["version"] == 3, "the current version is accepted", doc)

        # Bad bodies: 400 with AWS's messages, 413 beyond 128 KiB.
        status, doc = http(base, "POST", shadow, raw=b"{not json")
        check(status == 400 and doc["code"] == 400, "malformed JSON is 400", doc)
        status, doc = http(base, "POST", shadow, {"desired": {"x": 1}})
        check(status == 400 and "state" in doc["message"], "a missing state node is 400", doc)
        status, doc = http(base, "POST", shadow, raw=b'{"state":{"desired":{"x":"' + b"a" * 140_000 + b'"}}}')
        check(status == 413 and doc["code"] == 413, "an oversized body is 413", doc)

        # A named shadow, and ListNamedShadowsForThing.
        status, doc = http(base, "POST", f"{shadow}?name=cfg", {"state": {"reported": {"fw": "1.2"}}})
        check(status == 200 and doc["version"] == 1, "POST of a named shadow", doc)
        watcher.expect(f"$aws/things/{thing}/shadow/name/cfg/update/accepted", what="after the named POST")
        status, doc = http(base, "GET", f"/api/things/shadow/ListNamedShadowsForThing/{thing}")
        check(status == 200 and doc["results"] == ["cfg"], "ListNamedShadowsForThing lists cfg", doc)
        check(isinstance(doc["timestamp"], int), "ListNamedShadowsForThing has a timestamp", doc)
        status, doc = http(base, "GET", f"{shadow}?name=cfg")
        check(status == 200 and doc["state"]["reported"] == {"fw": "1.2"}, "GET of the named shadow", doc)

        # shade's additions: the list and the history.
        status, doc = http(base, "GET", f"/things?prefix={thing}")
        check(status == 200, "GET /things is 200", doc)
        listed = {(r["thing"], r["shadow"]) for r in doc["results"]}
        check(listed == {(thing, None), (thing, "cfg")}, "GET /things lists both shadows", doc)
        status, doc = http(base, "GET", f"/things/{thing}/history")
        check(status == 200 and [e["version"] for e in doc] == [1, 2, 3], "history holds the three changes", doc)

        # DELETE: AWS's answer, the MQTT notice, then 404.
        status, doc = http(base, "DELETE", shadow)
        check(status == 200 and doc["version"] == 3, "DELETE answers the version", doc)
        watcher.expect(f"{aws}/delete/accepted", what="after DELETE")
        status, doc = http(base, "GET", shadow)
        check(status == 404, "GET after DELETE is 404", doc)
        status, doc = http(base, "DELETE", shadow)
        check(status == 404, "a second DELETE is 404", doc)

        # Unknown paths and methods.
        status, doc = http(base, "GET", "/nowhere")
        check(status == 404 and doc["code"] == 404, "an unknown path is a JSON 404", doc)
        status, doc = http(base, "PUT", shadow, {})
        check(status == 405 and doc["code"] == 405, "PUT is a JSON 405", doc)
    finally:
        watcher.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        walk(int(sys.argv[1]), int(sys.argv[2]))
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        return 1
    print("http_rest: every answer as AWS documents it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
