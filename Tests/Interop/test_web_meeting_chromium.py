"""The web client as people use it, in headless Chromium (fake camera, microphone and screen):
four people by `?autojoin=1` links see and hear each other in a grid that does not overlap, at a
desktop's and a phone's width; a shared screen shows large on the others' pages; mute by keyboard
shows on the others' tiles; chat with unread count, typing and history; the reconnect banner
through a server restart; the messages for a refused token, a full room and a denied camera; no
serious or critical accessibility violations (axe-core). Screenshots go to .build/screenshots/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import quote

from axe_selenium_python import Axe
from selenium.webdriver.common.by import By

from conftest import REPO_ROOT, mint_token
from test_web_client_chromium import browser, stats, wait_until

SCREENSHOTS = REPO_ROOT / ".build" / "screenshots"
DOC_IMAGES = REPO_ROOT / "docs" / "images"
DESKTOP, PHONE = (1280, 800), (390, 844)


def client(server, room: str | None = None, name: str | None = None, size=DESKTOP, grant_media: bool = True, extra: str = ""):
    """A page of the web client; with a name it joins at once (`autojoin=1`)."""
    driver = browser(grant_media=grant_media)
    set_size(driver, size)
    query = []
    if room:
        query.append(f"room={quote(room)}")
    if name:
        query += [f"name={quote(name)}", "autojoin=1"]
    driver.get(server.url + "/?" + "&".join(query) + extra)
    return driver


def set_size(driver, size) -> None:
    """Sets the page's viewport (not the window's outer size) to `size`."""
    driver.set_window_size(*size)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(size[0] * 2 - inner[0], size[1] * 2 - inner[1])


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    path = SCREENSHOTS / f"{name}-{width}x{height}.png"
    driver.save_screenshot(str(path))
    DOC_IMAGES.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, DOC_IMAGES / path.name)
    return path


def tiles(driver) -> list[dict]:
    """Each tile: its key, box, whether its video plays, and whether a muted mark shows."""
    return driver.execute_script("""
        return [...document.querySelectorAll('.tile')].map((t) => {
          const v = t.querySelector('video'), r = t.getBoundingClientRect();
          return { key: t.dataset.sid, x: r.x, y: r.y, w: r.width, h: r.height, parent: t.parentElement.id,
                   playing: v.readyState >= 2 && !v.paused && v.videoWidth > 0, muted: !t.querySelector('.mic-off').hidden };
        });""")


def assert_sensible(driver, what: str) -> None:
    """Tiles inside the viewport, none overlapping; no button or label whose text is cut."""
    boxes = [t for t in tiles(driver) if t["w"] > 0]
    width = driver.execute_script("return document.documentElement.clientWidth")
    for i, a in enumerate(boxes):
        assert a["x"] >= -1 and a["x"] + a["w"] <= width + 1, f"{what}: tile {a['key']} outside the page: {a}"
        for b in boxes[i + 1:]:
            overlap = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]) > 1 and \
                min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]) > 1
            assert not overlap, f"{what}: tiles {a['key']} and {b['key']} overlap: {a} {b}"
    cut = driver.execute_script("""
        return [...document.querySelectorAll('button, label, h1, h2, .tile .name, #status')]
          .filter((e) => e.offsetParent !== null && !e.classList.contains('visually-hidden') && e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).textOverflow !== 'ellipsis')
          .map((e) => e.id || e.textContent.trim());""")
    assert not cut, f"{what}: text cut in {cut}"


def accessible(driver, what: str) -> None:
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in results["violations"]
               if v["impact"] in ("serious", "critical")]
    assert not serious, f"{what}: {serious}"


def joined(driver, room: str) -> None:
    wait_until(lambda: driver.find_element(By.ID, "status").text.startswith(f"in {room}"), 20, f"joined {room}")


def test_four_people_see_and_hear_each_other_in_a_grid_at_desktop_and_phone_width(server):
    drivers = []
    try:
        prejoin = client(server, room="standup")
        drivers.append(prejoin)
        wait_until(lambda: prejoin.execute_script("return document.getElementById('previewVideo').videoWidth") > 0, 15, "the preview")
        wait_until(lambda: prejoin.execute_script("return document.getElementById('cameraSelect').options.length") > 0, 10, "devices")
        assert_sensible(prejoin, "pre-join")
        accessible(prejoin, "pre-join")
        screenshot(prejoin, "prejoin")
        set_size(prejoin, PHONE)
        assert_sensible(prejoin, "pre-join on a phone")
        screenshot(prejoin, "prejoin")
        prejoin.quit()
        drivers.remove(prejoin)

        # One small camera layer each: four browsers encoding 540p in three layers and decoding
        # nine streams overload the two cores the tests run on, and the bandwidth estimate then
        # follows the CPU's delay and pauses the video.
        names = ["Ada", "Bo", "Cy", "Di"]
        for name in names:
            drivers.append(client(server, "standup", name, extra="&simulcast=0&camera=180p"))
        for driver in drivers:
            joined(driver, "standup")
        for driver in drivers:
            try:
                wait_until(lambda d=driver: len([t for t in tiles(d) if t["key"] != "local" and t["playing"]]) == 3, 40, "three playing remote tiles")
            except AssertionError:
                print("video:", stats(driver).get("video"))
                ident = driver.execute_script("return window.parley.room.localParticipant.identity")
                print("media:", server.admin("GET", f"/v1/rooms/standup/participants/{ident}").text[:3000])
                print("load:", open("/proc/loadavg").read())
                raise
            wait_until(lambda d=driver: stats(d).get("audioBytesReceived", 0) > 3000, 20, "the others' audio")
        ada = drivers[0]
        assert_sensible(ada, "four-person grid")
        accessible(ada, "call")
        screenshot(ada, "grid")
        set_size(ada, PHONE)
        time.sleep(1)
        assert_sensible(ada, "four-person grid on a phone")
        screenshot(ada, "grid")
        set_size(ada, DESKTOP)

        # Mute by keyboard (M): the others' tile for Bo says muted; M again, it does not.
        bo = drivers[1]
        bo.find_element(By.TAG_NAME, "body").send_keys("m")
        bo_sid = bo.execute_script("return window.parley.room.localParticipant.sid")
        wait_until(lambda: any(t["key"] == bo_sid and t["muted"] for t in tiles(ada)), 10, "Bo's tile muted at Ada")
        assert bo.find_element(By.ID, "micButton").get_attribute("aria-pressed") == "true"
        bo.find_element(By.TAG_NAME, "body").send_keys("m")
        wait_until(lambda: any(t["key"] == bo_sid and not t["muted"] for t in tiles(ada)), 10, "Bo's tile unmuted at Ada")

        # Chat: unread count while closed, typing, then the panel with history.
        cy = drivers[2]
        cy.find_element(By.ID, "chatButton").click()
        cy.find_element(By.ID, "text").send_keys("first")
        wait_until(lambda: "Cy is typing" in ada.find_element(By.ID, "typing").get_attribute("textContent"), 10, "typing at Ada")
        cy.find_element(By.CSS_SELECTOR, "#send button").click()
        for text in ["second", "third"]:
            cy.find_element(By.ID, "text").send_keys(text)
            cy.find_element(By.CSS_SELECTOR, "#send button").click()
        wait_until(lambda: ada.find_element(By.ID, "unread").text == "3", 10, "three unread at Ada")
        ada.find_element(By.ID, "chatButton").click()
        wait_until(lambda: ada.find_element(By.ID, "messages").text.count("Cy ") == 3, 10, "the lines at Ada")
        assert ada.find_element(By.ID, "unread").get_attribute("hidden") is not None
        assert_sensible(ada, "chat panel")
        accessible(ada, "chat panel")
        screenshot(ada, "chat")
        set_size(ada, PHONE)
        time.sleep(0.5)
        assert_sensible(ada, "chat panel on a phone")
        screenshot(ada, "chat")
    finally:
        for driver in drivers:
            driver.quit()


def test_a_shared_screen_shows_large_on_the_others_pages(server):
    drivers = []
    try:
        drivers += [client(server, "demo", "Ada"), client(server, "demo", "Bo")]
        for driver in drivers:
            joined(driver, "demo")
        ada, bo = drivers
        wait_until(lambda: len([t for t in tiles(bo) if t["key"] != "local" and t["playing"]]) == 1, 30, "Ada's camera at Bo")
        ada.find_element(By.ID, "screenButton").click()
        ada_sid = ada.execute_script("return window.parley.room.localParticipant.sid")

        def shown() -> dict | None:
            found = {t["key"]: t for t in tiles(bo)}
            screen = found.get(f"{ada_sid}:screen")
            return screen if screen and screen["playing"] and screen["parent"] == "focus" else None

        screen = wait_until(shown, 20, "Ada's screen in Bo's focus")
        others = [t for t in tiles(bo) if t["key"] != f"{ada_sid}:screen"]
        assert all(screen["w"] * screen["h"] > 3 * t["w"] * t["h"] for t in others), (screen, others)
        source = ada.execute_script("return window.parley.room.localTracks.map((t) => t.source)")
        assert "screen_share" in source, source
        assert_sensible(bo, "screen share")
        screenshot(bo, "screen-share")
        set_size(bo, PHONE)
        time.sleep(1)
        assert_sensible(bo, "screen share on a phone")
        screenshot(bo, "screen-share")
        # Stopping it takes the tile away.
        ada.find_element(By.ID, "screenButton").click()
        wait_until(lambda: not any(t["key"].endswith(":screen") for t in tiles(bo)), 15, "the screen gone at Bo")
    finally:
        for driver in drivers:
            driver.quit()


def test_the_reconnect_banner_shows_through_a_restart_and_the_call_comes_back(server):
    drivers = []
    try:
        drivers += [client(server, "again", "Ada"), client(server, "again", "Bo")]
        for driver in drivers:
            joined(driver, "again")
            wait_until(lambda d=driver: stats(d).get("framesDecoded", 0) > 10, 30, "the other's video")
        server.restart(same_port=True)
        for driver in drivers:
            wait_until(lambda d=driver: d.find_element(By.ID, "status").text.startswith("reconnected to again"), 30, "back after the restart")
            assert "new session" in driver.find_element(By.ID, "status").text
            assert not driver.find_element(By.ID, "banner").is_displayed()
            wait_until(lambda d=driver: len([t for t in tiles(d) if t["key"] != "local" and t["playing"]]) == 1, 30, "the other's video again")
        # The banner showed meanwhile (its text stays in the element).
        assert "Reconnecting" in drivers[0].find_element(By.ID, "banner").get_attribute("textContent")
    finally:
        for driver in drivers:
            driver.quit()


def test_a_refused_token_a_full_room_and_a_denied_camera_say_so(server):
    drivers = []
    try:
        refused = client(server, "gate", "Eve", extra="&token=not-a-token")
        drivers.append(refused)
        wait_until(lambda: "refused the token" in refused.find_element(By.ID, "joinError").text, 15, "the refusal")
        assert refused.find_element(By.ID, "prejoin").is_displayed()

        assert server.admin("POST", "/v1/rooms", body={"name": "small", "maxParticipants": 1}).status == 201
        first = client(server, "small", "Ada")
        drivers.append(first)
        joined(first, "small")
        full = client(server, "small", "Bo", extra="&token=" + mint_token("bo", "small"))
        drivers.append(full)
        wait_until(lambda: "full" in full.find_element(By.ID, "joinError").text, 15, "the full room")

        denied = client(server, "gate", grant_media=False)
        drivers.append(denied)
        wait_until(lambda: "blocked" in denied.find_element(By.ID, "previewNote").text, 15, "the denied camera")
        accessible(denied, "pre-join with a denied camera")
        # Joining still works, to watch and listen.
        denied.find_element(By.ID, "name").send_keys("Cy")
        denied.find_element(By.CSS_SELECTOR, "#join button").click()
        joined(denied, "gate")
        assert "watching and listening" in denied.find_element(By.ID, "mediaStatus").text
    finally:
        for driver in drivers:
            driver.quit()


def test_chat_history_pages_back_to_the_first_message(server):
    for i in range(60):
        assert server.admin("POST", "/v1/rooms/history/messages", body={"text": f"note {i}", "name": "bot"}).status == 201
    driver = client(server, "history", "Ada")
    try:
        joined(driver, "history")
        driver.find_element(By.ID, "chatButton").click()
        wait_until(lambda: "note 59" in driver.find_element(By.ID, "messages").text, 10, "the newest notes")
        assert "note 0" not in driver.find_element(By.ID, "messages").text
        older = driver.find_element(By.ID, "older")
        while older.is_displayed():
            older.click()
            time.sleep(0.3)
        text = driver.find_element(By.ID, "messages").text
        assert all(f"note {i}\n" in text + "\n" for i in range(60)), text[-400:]
        order = [int(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("bot note")]
        assert order == list(range(60)), order
    finally:
        driver.quit()


def test_the_hosted_examples_join_and_show_each_other(server):
    drivers = []
    try:
        for name in ["Ada", "Bo"]:
            driver = browser()
            drivers.append(driver)
            driver.get(f"{server.url}/examples/join.html?room=ex&name={name}")
        for driver in drivers:
            wait_until(lambda d=driver: d.find_element(By.ID, "status").text.startswith("in ex"), 20, "joined by the example")
            wait_until(lambda d=driver: d.execute_script(
                "return [...document.querySelectorAll('video')].filter((v) => v.videoWidth > 0 && !v.paused).length") >= 2,
                30, "own and the other's video playing")
        accessible(drivers[0], "the join example")
        audio = browser()
        drivers.append(audio)
        audio.get(f"{server.url}/examples/audio.html?room=ex&name=Cy")
        wait_until(lambda: audio.find_element(By.ID, "status").text.startswith("in ex"), 20, "joined by the audio example")
        wait_until(lambda: len(audio.find_elements(By.CSS_SELECTOR, "#people li")) == 3, 15, "three people listed")
        wait_until(lambda: audio.execute_script(
            "return [...window.room.subscriptions.values()].filter((s) => s.track.kind === 'audio').length") == 2, 15, "Ada's and Bo's audio")
        # The speaking mark shows only while someone speaks, and the list is redrawn on every
        # speakers message: a marked item of its own, outside the list, has its colours checked.
        audio.execute_script(
            "const li = document.createElement('li'); li.className = 'speaking'; li.textContent = 'Someone speaking';"
            "const ul = document.createElement('ul'); ul.append(li); document.body.append(ul);")
        accessible(audio, "the audio example")
        assert not audio.find_element(By.ID, "mute").get_attribute("disabled")
    finally:
        for driver in drivers:
            driver.quit()
