#!/usr/bin/env python3
"""The dashboard of `shade serve` in a real browser (headless Chromium
through selenium), with paho-mqtt as the devices.

Usage: python3 dashboard_browser.py HTTP_PORT MQTT_PORT SCREENSHOT_DIR
           [--auth NAME PASSWORD] [--reader NAME PASSWORD] [--conflict THING]

Opens http://127.0.0.1:HTTP_PORT/ (with --auth: a wrong password is
refused, then NAME logs in through the page's form, and MQTT connects as
NAME too); an MQTT client reports on a new thing and its row appears in the
table without a reload; a client with the thing's name as client id makes
the row and the detail say online, and offline once it is gone (the line
under the table counts shadows, things and things online); clicking
it shows the shadow; desired edited in the
page and saved reaches an MQTT subscriber of update/delta; a save on a
version that changed meanwhile shows the 409, and saving again succeeds.
A fleet query typed into the page narrows the table to the shadows it
matches, live: a bad one is refused with its position, a report that
stops the thing matching takes its row out, one that makes it match
brings it back, and clearing the query shows every row again; a count
by a path shows how many shadows hold each value and moves live.
With ?rows=2 the table holds the first two shadows by name and says how
many there are; when the first is deleted, the third moves up.
--conflict THING: THING's row counts a conflict and its detail highlights
it. --reader: after logging out, that reader sees the editor disabled.
Saves dashboard-things.png, dashboard-shadow.png, dashboard-query.png (and with --conflict
dashboard-conflict.png) into SCREENSHOT_DIR.

Exits 0 when every check passes, 1 with a message on the first mismatch,
2 on a bad command line. Every wait is bounded.
"""

import argparse
import json
import os
import queue
import re
import shutil
import sys
import tempfile
import time

import paho.mqtt.client as mqtt
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

TIMEOUT = 20.0  # seconds per step: debug builds on a busy machine
DEADLINE = time.monotonic() + 150.0  # the whole walk, browser start included


class Mismatch(Exception):
    pass


def check(cond, what, got=None):
    if not cond:
        raise Mismatch(f"{what}" + (f"; got: {got!r}" if got is not None else ""))


def left():
    remaining = DEADLINE - time.monotonic()
    if remaining <= 0:
        raise Mismatch("the overall deadline passed")
    return min(TIMEOUT, remaining)


class Devices:
    """One paho client: publishes updates, collects one thing's deltas.
    With `client_id` the thing's name, the thing is online while it is
    connected."""

    def __init__(self, port, thing, login, client_id=None):
        self.deltas = queue.Queue()
        self.thing = thing
        ready = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"dash-walk-{os.getpid()}",
            protocol=mqtt.MQTTv311,
        )
        if login:
            self.client.username_pw_set(*login)
        self.client.on_connect = lambda c, u, flags, rc, props: ready.put(("connack", rc))
        self.client.on_subscribe = lambda c, u, mid, rcs, props: ready.put(("suback", rcs))
        self.client.on_message = lambda c, u, msg: self.deltas.put(json.loads(msg.payload))
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        kind, rc = ready.get(timeout=left())
        check(kind == "connack" and not rc.is_failure, f"MQTT connect refused: {rc}")
        self.client.subscribe(f"$aws/things/{thing}/shadow/update/delta", qos=1)
        kind, rcs = ready.get(timeout=left())
        check(kind == "suback" and all(not rc.is_failure for rc in rcs), f"subscribe refused: {rcs}")

    def publish(self, topic, doc):
        info = self.client.publish(topic, json.dumps(doc), qos=1)
        info.wait_for_publish(timeout=left())
        check(info.is_published(), f"no PUBACK for {topic}")

    def delta(self, pred, what):
        """The first delta satisfying `pred` (earlier ones are dropped)."""
        seen = []
        while True:
            try:
                doc = self.deltas.get(timeout=left())
            except queue.Empty:
                raise Mismatch(f"no update/delta {what}; deltas seen: {seen}") from None
            if pred(doc):
                return doc
            seen.append(doc)

    def no_delta(self, pred, within, what):
        end = time.monotonic() + within
        while (wait := end - time.monotonic()) > 0:
            try:
                doc = self.deltas.get(timeout=wait)
            except queue.Empty:
                return
            check(not pred(doc), what, doc)

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def browser(profile):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # The console's errors are checked at the end.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Without the background-networking flags Chromium dials out at start,
    # and a closed network refuses those connections noisily.
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                "--window-size=1280,900"]:
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    driver.set_script_timeout(TIMEOUT)
    return driver


class Page:
    def __init__(self, driver):
        self.d = driver

    def wait(self, cond, what):
        """Polls `cond(driver)` until it is truthy; its value."""
        try:
            return WebDriverWait(self.d, left(), poll_frequency=0.1,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: cond(d))
        except TimeoutException:
            status = self.d.execute_script("return document.querySelector('#status')?.textContent")
            raise Mismatch(f"timed out waiting for {what} (#status: {status!r})") from None

    def find(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        # In the page: the table's rows are replaced on every event, so an
        # element found first may be stale by the time its text is read.
        return self.d.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;", css)

    def visible(self, css):
        found = self.find(css)
        return bool(found) and found[0].is_displayed()

    def wait_text(self, css, *parts):
        return self.wait(lambda d: (t := self.text(css)) is not None and all(p in t for p in parts) and t,
                         f"{css} to contain {parts}")

    def row(self, thing, shadow=""):
        return f'#things tr[data-thing="{thing}"][data-shadow="{shadow}"]'

    def click(self, css):
        """Clicks the element `css` finds, again if an event replaced it
        between the find and the click."""
        for _ in range(5):
            try:
                self.find(css)[0].click()
                return
            except StaleElementReferenceException:
                continue
        raise Mismatch(f"{css} kept being replaced before it could be clicked")

    def type_into(self, css, text):
        field = self.find(css)[0]
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        if text:
            field.send_keys(text)

    def set_editor(self, text):
        edit = self.find("#desired-edit")[0]
        edit.send_keys(Keys.CONTROL, "a")
        edit.send_keys(Keys.DELETE)
        edit.send_keys(text)

    def shot(self, directory, name):
        path = os.path.join(directory, name)
        check(self.d.save_screenshot(path), f"cannot save {path}")


SUMMARY = re.compile(r"^(\d+) shadows? of (\d+) things?(?: matching the query)?, (\d+) online$")


def summary(page):
    """(shadows, things, online) as the line under the table says, or None."""
    m = SUMMARY.match(page.text("#summary") or "")
    return tuple(int(g) for g in m.groups()) if m else None


def table_counts(page):
    """(shadows, things, online things) counted from the table's rows."""
    # In one script: rows are replaced on every event, so element
    # references taken one by one go stale.
    return tuple(page.d.execute_script("""
        const rows = [...document.querySelectorAll("#things tbody tr")];
        const things = new Set(rows.map((r) => r.dataset.thing));
        const online = new Set(rows.filter((r) => r.querySelector(".presence.online")).map((r) => r.dataset.thing));
        return [rows.length, things.size, online.size];"""))


def log_in(page, name, password):
    page.wait(lambda d: page.visible("#login"), "the login form")
    for css, value in [("#login-name", name), ("#login-password", password)]:
        field = page.find(css)[0]
        field.clear()
        field.send_keys(value)
    page.find("#login-submit")[0].click()


def fleet_query(page, devices, thing, aws, shots):
    """The table narrowed by a fleet query: `thing` reports temp 22, its
    named shadow has no temp."""
    row, named = page.row(thing), page.row(thing, "config")
    live = lambda: "on" in (page.find("#live")[0].get_attribute("class") or "")
    page.type_into("#where", "reported.temp >")
    page.wait_text("#where-error", "where: at 15")
    page.wait(lambda d: not live(), "the stream to stop on a bad query")
    page.type_into("#where", "reported.temp > 21")
    page.wait(lambda d: not page.visible("#where-error") and live(), "the stream of the query")
    page.wait(lambda d: page.find(row), f"{thing}'s row, which matches")
    check(not page.find(named), "a shadow without reported.temp is not in the table", page.text(named))
    page.wait_text("#summary", "matching the query")
    # A change that stops it matching takes the row out; one that makes it
    # match again brings it back, with the new version.
    devices.publish(f"{aws}/update", {"state": {"reported": {"temp": 20}}})
    page.wait(lambda d: not page.find(row), f"{thing}'s row to leave when temp is 20")
    page.wait_text("#status", "no longer matches the query")
    devices.publish(f"{aws}/update", {"state": {"reported": {"temp": 30}}})
    page.wait(lambda d: page.text(f"{row} .version") == "6", f"{thing}'s row back at version 6")
    page.type_into("#where", "")
    page.wait(lambda d: page.find(named) and page.find(row), "every row back without the query")

    # A count by a path, live: the thing's temperature moves between groups.
    page.type_into("#by", "reported.")
    page.wait_text("#where-error", "by: at ")
    devices.publish(f"{aws}/update", {"state": {"reported": {"temp": 77.5}}})
    page.type_into("#by", "reported.temp")
    group = lambda value: page.text(f'#counts tr[data-value="{value}"] td.num')
    page.wait(lambda d: group("77.5") == "1", "a count of 1 for temp 77.5")
    check(not page.visible("#where-error"), "the by error stays after a good path")
    devices.publish(f"{aws}/update", {"state": {"reported": {"temp": 78.5}}})
    page.wait(lambda d: group("78.5") == "1" and group("77.5") is None, "the count to move to 78.5")
    total = page.d.execute_script(
        "return [...document.querySelectorAll('#counts tbody td.num')]"
        ".reduce((n, td) => n + Number(td.textContent), 0);")
    page.wait_text("#counts caption", f"{total} shadows by reported.temp")
    page.wait(lambda d: group("null") not in (None, "0"), "shadows without the path counted under null")
    page.type_into("#where", "exists(reported.temp)")
    page.wait(lambda d: not page.find(named) and group("null") is None and group("78.5") == "1",
              "the table and the count narrowed to shadows with a temperature")
    page.wait_text("#counts caption", "1 shadow by reported.temp matching the query")
    page.wait(lambda d: summary(page) == table_counts(page) == (1, 1, 0)
              and "matching the query" in page.text("#summary"), "the summary of the narrowed table")
    check(page.text("#status") == "", "the note that the detail is not live is gone", page.text("#status"))
    page.shot(shots, "dashboard-query.png")
    page.type_into("#where", "")
    page.type_into("#by", "")
    page.wait(lambda d: page.find(named) and not page.visible("#counts"), "the whole table again, without counts")


def listed(page):
    """Every shadow's (thing, shadow) from GET /things, in the page's order
    (thing, then the classic shadow before the named ones, by name)."""
    results = page.d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        api("/things?pageSize=1000").then((r) => done(r.status === 200 ? r.body.results : null));""")
    check(results is not None, "GET /things from the page")
    return sorted(((r["thing"], r.get("shadow") or "") for r in results), key=lambda k: k[0] + "\0" + k[1])


def rows_window(page, devices, base):
    """?rows=2: the first two shadows by name are the table's rows."""
    for extra in ["a", "b"]:  # at least four shadows, whatever else exists
        devices.publish(f"$aws/things/{devices.thing}-rows-{extra}/shadow/update",
                        {"state": {"reported": {"n": 1}}})
    page.d.get(base + "?rows=2")
    page.wait(lambda d: page.find("#things tbody tr"), "rows with ?rows=2")
    shown = lambda: [tuple(k) for k in page.d.execute_script(
        "return [...document.querySelectorAll('#things tbody tr')].map((r) => [r.dataset.thing, r.dataset.shadow]);")]
    everything = listed(page)
    check(len(everything) > 3, "more than three shadows to page through", everything)
    page.wait(lambda d: shown() == everything[:2], f"the first two of {everything} as rows")
    page.wait_text("#more", f"first 2 of {len(everything)} shadows")
    page.wait(lambda d: (c := summary(page)) and c[0] == len(everything), "the summary to count every shadow")
    thing, shadow = everything[0]
    topic = f"$aws/things/{thing}/shadow" + (f"/name/{shadow}" if shadow else "") + "/delete"
    devices.publish(topic, {})
    page.wait(lambda d: shown() == everything[1:3], f"{everything[2]} to move up when {everything[0]} is deleted")
    page.wait_text("#more", f"first 2 of {len(everything) - 1} shadows")


def walk(args):
    thing = f"dash-{os.getpid()}"
    aws = f"$aws/things/{thing}/shadow"
    login = tuple(args.auth) if args.auth else None
    devices = Devices(args.mqtt_port, thing, login)
    profile = tempfile.mkdtemp(prefix="shade-chromium-")
    driver = None
    try:
        driver = browser(profile)
        page = Page(driver)
        driver.get(f"http://127.0.0.1:{args.http_port}/")
        if login:
            log_in(page, login[0], login[1] + "-wrong")
            page.wait_text("#login-error", "Wrong name or password")
            log_in(page, *login)
            page.wait_text("#whoami", login[0], "admin", "log out")
        else:
            page.wait_text("#whoami", "no authentication")
        # Live before the update: the row must come from the stream's live
        # events, not from the snapshot of a page loaded later.
        page.wait(lambda d: "on" in page.find("#live")[0].get_attribute("class"), "the event stream to connect")
        driver.execute_script("window.notReloaded = true")

        devices.publish(f"{aws}/update", {"state": {"reported": {"temp": 21}}})
        devices.publish(f"{aws}/name/config/update", {"state": {"reported": {"fw": "1.4.2"}}})
        row = page.row(thing)
        page.wait(lambda d: page.find(row), f"the row of {thing}")
        check(page.text(f"{row} .version") == "1", "the new row's version", page.text(row))
        check(page.text(f"{row} .delta") == "\u2014", "the new row has no delta", page.text(row))
        page.wait(lambda d: page.find(page.row(thing, "config")), f"the row of {thing}'s named shadow config")
        check(driver.execute_script("return window.notReloaded === true"), "the page was reloaded")
        check(page.text(f"{row} .presence") == "\u2014", "a thing never connected has no presence", page.text(row))
        # The thing itself connects (client id = thing name): online.
        online = Devices(args.mqtt_port, thing, login, client_id=thing)
        page.wait(lambda d: page.text(f"{row} .presence") == "online", f"{thing}'s row to say online")
        # The summary counts things, not shadows: both of its rows online,
        # one thing more online.
        page.wait(lambda d: len(page.find(f'#things tr[data-thing="{thing}"] .presence.online')) == 2,
                  f"both of {thing}'s rows to say online")
        counted = page.wait(lambda d: (c := summary(page)) and c == table_counts(page) and c,
                            "the summary to count the table's shadows, things and online things")
        if args.conflict:
            crow = page.row(args.conflict)
            page.wait(lambda d: page.find(crow), f"the row of {args.conflict}")
            conflicts = page.find(f"{crow} .conflicts")[0]
            check(conflicts.text == "1" and "conflict" in conflicts.get_attribute("class"),
                  f"{args.conflict}'s row counts one conflict, highlighted", page.text(crow))
        page.shot(args.screenshots, "dashboard-things.png")

        # The detail: reported, no desired yet.
        page.click(row)
        page.wait_text("#detail .d-reported", '"temp": 21')
        page.wait_text("#detail .d-keys", "reported.temp")
        page.wait_text(".d-edit-note", "editing version 1")
        page.wait_text("#detail .d-presence", "online since")
        online.close()
        page.wait(lambda d: page.text(f"{row} .presence") == "offline", f"{thing}'s row to say offline")
        page.wait_text("#detail .d-presence", "offline, last seen")
        page.wait(lambda d: (c := summary(page)) and c == table_counts(page)
                  and c == (counted[0], counted[1], counted[2] - 1),
                  f"the summary to count one thing fewer online than {counted}")
        check(page.text(f"{row} .version") == "1", "going offline changed the version", page.text(row))

        # Desired edited in the page reaches the device as a delta.
        page.set_editor('{"mode": "eco"}')
        page.find("#save")[0].click()
        page.wait_text("#status", "accepted as version 2")
        delta = devices.delta(lambda d: d.get("state", {}).get("mode") == "eco", 'with mode "eco"')
        check(delta.get("version") == 2, "the delta's version", delta)
        page.wait_text(f"{row} .delta", "yes")
        page.wait_text(f"{row} .version", "2")
        page.wait_text("#detail .d-delta", '"mode": "eco"')

        # A save on a version someone else moved on from: AWS's 409, shown,
        # and nothing reaches the device until it is saved again.
        page.set_editor('{"mode": "off"}')
        devices.publish(f"{aws}/update", {"state": {"reported": {"temp": 22}}})
        page.wait_text(".d-edit-note", "editing version 2", "now at version 3")
        page.find("#save")[0].click()
        page.wait_text("#status", "409", "Version conflict")
        page.wait_text(".d-edit-note", "editing version 3")
        check('"off"' in page.find("#desired-edit")[0].get_attribute("value"), "the edit is kept after the 409")
        devices.no_delta(lambda d: d.get("state", {}).get("mode") == "off", 1.0, "a 409 save reached the device")
        page.find("#save")[0].click()
        page.wait_text("#status", "accepted as version 4")
        devices.delta(lambda d: d.get("state", {}).get("mode") == "off", 'with mode "off"')
        page.wait(lambda d: len(page.find("#detail .d-history tbody tr")) >= 4, "four changes in the history")
        page.wait_text("#detail .d-keys", "desired.mode")
        page.shot(args.screenshots, "dashboard-shadow.png")
        fleet_query(page, devices, thing, aws, args.screenshots)

        if args.conflict:
            page.click(page.row(args.conflict))
            page.wait(lambda d: page.visible(".d-conflicts"), f"{args.conflict}'s conflicts")
            page.wait(lambda d: page.find("#detail .d-keys tr.conflicted"), "the conflicting key highlighted")
            page.wait(lambda d: page.find("#detail .d-history tbody tr"), f"{args.conflict}'s history")
            page.shot(args.screenshots, "dashboard-conflict.png")

        if login:
            page.find("#logout")[0].click()
            page.wait(lambda d: page.visible("#login") and not page.visible("#app"), "the login form after logging out")
        if args.reader:
            log_in(page, *args.reader)
            page.wait_text("#whoami", args.reader[0], "reader")
            page.wait(lambda d: page.find(row), f"the row of {thing} for the reader")
            page.click(row)
            page.wait_text("#detail .d-desired", '"mode": "off"')
            check(not page.find("#desired-edit")[0].is_enabled(), "a reader's editor is disabled")
            check(not page.find("#save")[0].is_enabled(), "a reader's Save is disabled")
        rows_window(page, devices, f"http://127.0.0.1:{args.http_port}/")
        # Script errors and CSP refusals; failed requests (the 409 above,
        # the favicon the page has none of) are logged as "network".
        errors = [e for e in driver.get_log("browser")
                  if e.get("level") == "SEVERE" and e.get("source") != "network"]
        check(not errors, "the browser console has errors", errors)
    finally:
        if driver is not None:
            driver.quit()
        devices.close()
        shutil.rmtree(profile, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("http_port", type=int)
    parser.add_argument("mqtt_port", type=int)
    parser.add_argument("screenshots")
    parser.add_argument("--auth", nargs=2, metavar=("NAME", "PASSWORD"))
    parser.add_argument("--reader", nargs=2, metavar=("NAME", "PASSWORD"))
    parser.add_argument("--conflict", metavar="THING")
    args = parser.parse_args()  # exits 2 on a bad command line
    os.makedirs(args.screenshots, exist_ok=True)
    try:
        walk(args)
    except Mismatch as e:
        print(f"dashboard_browser.py: MISMATCH: {e}", file=sys.stderr)
        return 1
    except (OSError, WebDriverException, KeyError, IndexError, TypeError, ValueError) as e:
        print(f"dashboard_browser.py: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("dashboard_browser.py: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
