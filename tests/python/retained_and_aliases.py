#!/usr/bin/env python3
"""shade's retained states and MQTT 5 request aliases, seen by paho-mqtt 2.x.

Usage: python3 retained_and_aliases.py PORT THINGS

1. An MQTT 5 client sends an update on a topic with a topic alias, then a
   second one by the alias alone (empty topic): both are accepted, each
   with its own clientToken.
2. THINGS shadows are created; then a late MQTT 3.1.1 subscriber to
   `shade/things/#` gets every state, each flagged retained, and one to a
   single thing's state gets exactly that one.
3. An MQTT 5 subscriber with retain handling 2 ("send none at subscribe")
   gets no state, but still gets the next live change (not retained).

Exits 0 when all holds, 1 with a message on the first mismatch. Every
wait is bounded.
"""

import json
import os
import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 20.0


class Mismatch(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Mismatch(what)


class Client:
    def __init__(self, port, name, protocol):
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"{name}-{os.getpid()}",
            protocol=protocol,
        )
        connected = queue.Queue()
        self.client.on_connect = lambda c, u, flags, rc, props: connected.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self.acks.put(rcs)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, bytes(m.payload), bool(m.retain))
        )
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        rc = connected.get(timeout=TIMEOUT)
        check(not rc.is_failure, f"{name}: connect refused: {rc}")

    def subscribe(self, topic, **kw):
        self.client.subscribe(topic, **kw)
        rcs = self.acks.get(timeout=TIMEOUT)
        check(all(not rc.is_failure for rc in rcs), f"subscribe {topic} refused: {rcs}")

    def next(self, what, timeout=TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise Mismatch(f"no message within {timeout} s: {what}")

    def quiet(self, seconds):
        """The messages that arrive within `seconds`."""
        got = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def update(thing, token, key):
    return json.dumps({"state": {"reported": {key: token}}, "clientToken": token})


def aliases(port):
    c = Client(port, "alias", mqtt.MQTTv5)
    base = "$aws/things/alias-thing/shadow/update"
    c.subscribe(f"{base}/accepted", qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.TopicAlias = 1
    c.client.publish(base, update("alias-thing", "first", "a"), qos=1, properties=props).wait_for_publish(TIMEOUT)
    c.client.publish("", update("alias-thing", "second", "b"), qos=1, properties=props).wait_for_publish(TIMEOUT)
    tokens = [json.loads(c.next("update/accepted")[1]).get("clientToken") for _ in range(2)]
    check(tokens == ["first", "second"], f"accepted tokens by alias: {tokens}")
    c.close()


def retained(port, things):
    writer = Client(port, "writer", mqtt.MQTTv311)
    writer.subscribe("$aws/things/+/shadow/update/accepted", qos=1)
    for i in range(things):
        writer.client.publish(f"$aws/things/r-{i}/shadow/update", update(f"r-{i}", f"t{i}", "n"), qos=1)
    for i in range(things):
        writer.next(f"update/accepted {i}")

    late = Client(port, "late", mqtt.MQTTv311)
    late.subscribe("shade/things/#", qos=1)
    states = {}
    while len(states) < things:
        topic, payload, retain = late.next(f"state {len(states)} of {things}")
        check(retain, f"{topic} arrived without the retain flag")
        if topic.startswith("shade/things/r-"):
            states[topic] = json.loads(payload)
    for i in range(things):
        doc = states.get(f"shade/things/r-{i}/state")
        check(doc is not None, f"no state for r-{i}")
        check(doc["state"]["reported"]["n"] == f"t{i}", f"state of r-{i}: {doc}")
    late.close()

    one = Client(port, "one", mqtt.MQTTv311)
    one.subscribe("shade/things/r-1/state", qos=1)
    topic, _, retain = one.next("own state")
    check(topic == "shade/things/r-1/state" and retain, f"own state: {topic} {retain}")
    check(one.quiet(0.5) == [], "more than its own state")
    one.close()

    v5 = Client(port, "nohandling", mqtt.MQTTv5)
    v5.subscribe("shade/things/r-2/state", options=SubscribeOptions(qos=1, retainHandling=2))
    check(v5.quiet(0.5) == [], "retain handling 2 still got a state")
    writer.client.publish("$aws/things/r-2/shadow/update", update("r-2", "again", "n"), qos=1)
    topic, payload, retain = v5.next("the live change")
    check(topic == "shade/things/r-2/state", f"live change on {topic}")
    check(not retain, "a live change arrived flagged retained")
    check(json.loads(payload)["state"]["reported"]["n"] == "again", f"live change: {payload}")
    v5.close()
    writer.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    port, things = int(sys.argv[1]), int(sys.argv[2])
    try:
        aliases(port)
        retained(port, things)
    except (Mismatch, queue.Empty) as e:
        print(f"mismatch: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
