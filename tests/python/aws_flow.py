#!/usr/bin/env python3
"""A third-party AWS IoT shadow client (paho-mqtt 2.x) against `shade serve`.

Usage: python3 aws_flow.py PORT

Walks update -> accepted/delta/documents -> get -> stale version 409 ->
delete -> 404 on 127.0.0.1:PORT. Exits 0 when every reply is as AWS
documents it, 1 with a message on the first mismatch, 2 on a bad command
line. Every wait is bounded.
"""

import json
import os
import queue
import sys
import time

import paho.mqtt.client as mqtt

TIMEOUT = 20.0  # seconds per reply: debug builds on a busy machine
DEADLINE = time.monotonic() + 75.0  # the whole walk


class Mismatch(Exception):
    pass


def check(cond, what, got=None):
    if not cond:
        raise Mismatch(f"{what}" + (f"; got: {json.dumps(got)}" if got is not None else ""))


class Client:
    def __init__(self, port, thing):
        self.thing = thing
        self.base = f"$aws/things/{thing}/shadow"
        self.messages = queue.Queue()
        self.kept = []
        self.subscribed = queue.Queue()
        self.connected = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"paho-{os.getpid()}",
            protocol=mqtt.MQTTv311,
        )
        self.client.on_connect = lambda c, u, flags, rc, props: self.connected.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.subscribed.put(rcs)
        self.client.on_message = lambda c, u, msg: self.messages.put((msg.topic, bytes(msg.payload)))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        rc = self._get(self.connected, "CONNACK")
        check(not rc.is_failure, f"connect refused: {rc}")
        self.client.subscribe(f"{self.base}/#", qos=1)
        rcs = self._get(self.subscribed, "SUBACK")
        check(all(not rc.is_failure for rc in rcs), f"subscribe refused: {rcs}")

    def _get(self, q, what):
        left = min(TIMEOUT, DEADLINE - time.monotonic())
        if left <= 0:
            raise Mismatch(f"overall deadline passed waiting for {what}")
        try:
            return q.get(timeout=left)
        except queue.Empty:
            raise Mismatch(f"no {what} within {TIMEOUT} s") from None

    def send(self, op, body):
        info = self.client.publish(f"{self.base}/{op}", json.dumps(body), qos=1)
        check(info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish {op} failed: {info.rc}")

    def wait(self, reply, token):
        """The message on `<base>/<reply>` with clientToken `token`."""
        topic = f"{self.base}/{reply}"
        for i, (t, payload) in enumerate(self.kept):
            doc = json.loads(payload)
            if t == topic and doc.get("clientToken") == token:
                del self.kept[i]
                return doc
        while True:
            t, payload = self._get(self.messages, f"{topic} for clientToken {token!r}")
            try:
                doc = json.loads(payload)
            except ValueError:
                raise Mismatch(f"{t}: payload is not JSON: {payload!r}") from None
            if t == topic and doc.get("clientToken") == token:
                return doc
            self.kept.append((t, payload))

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def plausible_secs(v, what):
    check(isinstance(v, int) and abs(v - time.time()) < 86400, f"{what} is not seconds near now", v)


def walk(port):
    thing = f"py-{os.getpid()}"
    c = Client(port, thing)
    try:
        desired = {"color": "green", "level": 3}
        c.send("update", {"state": {"desired": desired}, "clientToken": "py-u1"})
        acc = c.wait("update/accepted", "py-u1")
        check(acc.get("state") == {"desired": desired}, "update/accepted state", acc)
        check(acc.get("version") == 1, "update/accepted version", acc)
        plausible_secs(acc.get("timestamp"), "update/accepted timestamp")
        plausible_secs(acc["metadata"]["desired"]["color"]["timestamp"], "metadata.desired.color")
        delta = c.wait("update/delta", "py-u1")
        check(delta.get("state") == desired, "update/delta state", delta)
        check(delta.get("version") == 1, "update/delta version", delta)
        docs = c.wait("update/documents", "py-u1")
        check(docs.get("previous") is None, "update/documents previous of a new shadow", docs)
        check(docs["current"]["state"] == {"desired": desired}, "update/documents current", docs)
        check(docs["current"]["version"] == 1, "update/documents current version", docs)

        c.send("update", {"state": {"reported": {"color": "green"}}, "clientToken": "py-u2"})
        acc = c.wait("update/accepted", "py-u2")
        check(acc.get("version") == 2, "second update version", acc)
        delta = c.wait("update/delta", "py-u2")
        check(delta.get("state") == {"level": 3}, "delta after a matching report", delta)

        c.send("get", {"clientToken": "py-g1"})
        doc = c.wait("get/accepted", "py-g1")
        check(doc["state"].get("desired") == desired, "get desired", doc)
        check(doc["state"].get("reported") == {"color": "green"}, "get reported", doc)
        check(doc["state"].get("delta") == {"level": 3}, "get delta", doc)
        check(doc.get("version") == 2, "get version", doc)
        check(isinstance(doc.get("vv"), dict) and doc["vv"], "get vv", doc)
        check(doc.get("conflicts") == [], "get conflicts", doc)
        plausible_secs(doc.get("timestamp"), "get timestamp")

        c.send("update", {"state": {"desired": {"level": 4}}, "version": 1, "clientToken": "py-u3"})
        rej = c.wait("update/rejected", "py-u3")
        check(rej.get("code") == 409 and rej.get("message") == "Version conflict", "stale version", rej)
        plausible_secs(rej.get("timestamp"), "rejected timestamp")

        c.send("delete", {"clientToken": "py-d1"})
        deleted = c.wait("delete/accepted", "py-d1")
        check(isinstance(deleted.get("version"), int), "delete/accepted version", deleted)
        plausible_secs(deleted.get("timestamp"), "delete/accepted timestamp")

        c.send("get", {"clientToken": "py-g2"})
        rej = c.wait("get/rejected", "py-g2")
        check(rej.get("code") == 404, "get after delete code", rej)
        check(rej.get("message") == f"No shadow exists with name: {thing}", "get after delete message", rej)
    finally:
        c.close()


def main():
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        print("usage: aws_flow.py PORT", file=sys.stderr)
        return 2
    try:
        walk(int(sys.argv[1]))
    except Mismatch as e:
        print(f"aws_flow.py: MISMATCH: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyError, TypeError) as e:
        print(f"aws_flow.py: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("aws_flow.py: every reply as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
