"""Two headless Chromium browsers in one room through the built-in web client (ISSUE 3): each shows
the other's video and audio (from getStats) and a chat line typed in one appears in the other."""

from __future__ import annotations

import shutil
import time

import pytest

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser(extra_flags: list[str] | None = None, grant_media: bool = True) -> webdriver.Chrome:
    """Headless Chromium with a fake camera and microphone; `grant_media=False` leaves out the
    flag that accepts every permission prompt, so headless Chromium denies camera access."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*(extra_flags or []), *(["--use-fake-ui-for-media-stream"] if grant_media else []),
        "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
        "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required", "--window-size=1200,900",
    ]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def stats(driver) -> dict:
    return driver.execute_async_script("const done = arguments[0]; window.parley.stats().then(done, () => done(null));") or {}


def join_in_browsers(server, room: str, names: list[str], drivers: list, query: str = "") -> None:
    """Opens the web client once per name and joins `room`; each driver goes into `drivers`."""
    for name in names:
        driver = browser()
        drivers.append(driver)
        driver.get(server.url + "/" + query)
        driver.find_element(By.ID, "room").clear()
        driver.find_element(By.ID, "room").send_keys(room)
        driver.find_element(By.ID, "name").send_keys(name)
        driver.find_element(By.CSS_SELECTOR, "#join button").click()


def test_two_browsers_see_and_hear_each_other_and_chat(server):
    drivers = []
    try:
        join_in_browsers(server, "browsers", ["Ada", "Bo"], drivers)
        for driver in drivers:
            wait_until(lambda d=driver: d.find_element(By.ID, "status").text.startswith("in browsers"), 15, "joined")

        for driver in drivers:
            wait_until(
                lambda d=driver: (lambda s: s.get("framesDecoded", 0) > 10 and s.get("audioBytesReceived", 0) > 1000)(stats(d)),
                30, "remote video frames and audio bytes")
            remote_tiles = driver.find_elements(By.CSS_SELECTOR, ".tile:not([data-sid='local'])")
            assert len(remote_tiles) == 1

        # ICE restart on Ada's sending side: new credentials in both descriptions, media goes on.
        ufrag = "return (window.parley.publisher.remoteDescription.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1]"
        before = drivers[0].execute_script(ufrag)
        drivers[0].execute_script("window.parley.restartIce()")
        wait_until(lambda: drivers[0].execute_script(ufrag) not in (None, before), 10, "a new server ufrag after the restart")
        frames = stats(drivers[1])["framesDecoded"]
        wait_until(lambda: stats(drivers[1])["framesDecoded"] > frames + 30, 15, "video still arriving after the ICE restart")
        assert drivers[0].execute_script("return window.parley.publisher.iceConnectionState") in ("connected", "completed")

        for driver in drivers:
            driver.find_element(By.ID, "chatButton").click()
        drivers[0].find_element(By.ID, "text").send_keys("hello from Ada")
        drivers[0].find_element(By.CSS_SELECTOR, "#send button").click()
        wait_until(lambda: "hello from Ada" in drivers[1].find_element(By.ID, "messages").text, 10, "the chat line in the other browser")
    finally:
        for driver in drivers:
            driver.quit()


def test_two_relay_only_browsers_see_and_hear_each_other_through_turn(server):
    """`?relay=1` sets iceTransportPolicy "relay": all media goes through Parley's TURN."""
    drivers = []
    try:
        join_in_browsers(server, "relayed", ["Cy", "Di"], drivers, query="?relay=1")
        for driver in drivers:
            wait_until(
                lambda d=driver: (lambda s: s.get("framesDecoded", 0) > 10 and s.get("audioBytesReceived", 0) > 1000)(stats(d)),
                40, "remote video frames and audio bytes through TURN")
            assert stats(driver)["candidateTypes"] == ["relay"], stats(driver)

        def relayed() -> float:
            metrics = server.http("GET", "/metrics").text
            return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("parley_turn_relayed_packets_total"))

        # Decoding can start before 500 packets have crossed the relay: wait while media flows.
        wait_until(lambda: relayed() > 500, 20, "more than 500 packets relayed by Parley's TURN")
    finally:
        for driver in drivers:
            driver.quit()
