"""The supervisor's web status page at `/`, driven in a real headless Chromium.

Debian's `chromium` and `chromium-driver` are installed by `make test` (the Makefile's browser
rule). Every test runs a real supervisor and a fresh browser profile; the browser fixture checks
that no Chromium process outlives the test.
"""

from __future__ import annotations

import os

import psutil
import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from supervisor_harness import SIM_CAMERA, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)
CAMERA = {**SIM_CAMERA, "no_client_timeout": 0}  # stays up without stream clients
WIDE_CAMERA = {**CAMERA, "size_x": 1700, "size_y": 60}  # wider than the preview's 800 px
TOKEN = "web-test-token"


@pytest.fixture
def browser(tmp_path):
    """A headless Chromium with a fresh profile; quit, and its processes gone, at the end."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} is missing: `make browser` (part of `make test`) installs "
                f"Debian's chromium and chromium-driver"
            )
    profile = tmp_path / "chromium-profile"
    options = Options()
    options.binary_location = CHROMIUM
    for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver_process = psutil.Process(service.process.pid)
    try:
        yield driver
    finally:
        family = [driver_process, *_processes_using(profile)]
        assert len(family) > 1, "no Chromium process of this profile found: the check is blind"
        driver.quit()
        _, alive = psutil.wait_procs(family, timeout=10)
        for process in alive:
            process.kill()
        assert not alive, f"processes left running after driver.quit(): {alive}"


def _processes_using(profile) -> list[psutil.Process]:
    """The Chromium processes started with this profile directory."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(profile) in arg for arg in process.info["cmdline"] or ()):
            found.append(process)
    return found


def open_page(driver, sup) -> None:
    driver.get(sup.url + "/")
    wait_for(lambda: refreshes(driver) > 0, what="the page's first refresh")


def refreshes(driver) -> int:
    return int(driver.execute_script("return Number(document.body.dataset.refreshes || 0)"))


def row(driver, key: str):
    try:
        return driver.find_element(By.CSS_SELECTOR, f'tr[data-key="{key}"]')
    except NoSuchElementException:
        return None


def cell(driver, key: str, column: str) -> str:
    return row(driver, key).find_element(By.CSS_SELECTOR, f'td[data-col="{column}"]').text


def fps_in(driver, key: str) -> float:
    """The row's frames/s in, -1 while the row is not there (a camera restarting)."""
    try:
        return float(cell(driver, key, "fps_in"))
    except (AttributeError, StaleElementReferenceException):
        return -1.0


def click_stop(driver, key: str) -> None:
    """Stop asks for a confirming second click."""
    button = row(driver, key).find_element(By.CSS_SELECTOR, "button.stop")
    button.click()
    assert button.text == "Confirm stop"
    button.click()


def message(driver) -> tuple[str, str]:
    element = driver.find_element(By.ID, "message")
    return element.get_attribute("class"), element.text


def preview_size(driver) -> tuple[int, int]:
    return tuple(
        driver.execute_script(
            "const img = document.getElementById('preview-img');"
            "return img.complete ? [img.naturalWidth, img.naturalHeight] : [0, 0];"
        )
    )


def camera_pid(sup) -> int | None:
    active = sup.call("GET", "/api/v1/cam/info")["info"]["active_instances"]
    return active["sim"]["statistics"]["pid"] if "sim" in active else None


def test_page_shows_a_running_camera_with_live_rates_preview_and_log(
    supervisor, browser, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the static files are found through the package, not the cwd
    sup = supervisor(cameras={"sim": CAMERA, "wide": WIDE_CAMERA})
    stream = sup.call("GET", "/api/v1/cam/sim")["stream"]
    page = requests.get(sup.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]

    open_page(browser, sup)
    assert browser.find_element(By.ID, "node-name").text == sup.node
    assert not browser.find_element(By.ID, "token-form").is_displayed()  # no token here
    wait_for(lambda: row(browser, "camera:sim"), what="the camera's row")
    assert cell(browser, "camera:sim", "kind") == "camera"
    assert cell(browser, "camera:sim", "state").startswith("running")
    assert cell(browser, "camera:sim", "pid") == str(camera_pid(sup))
    assert cell(browser, "camera:sim", "stream") == stream

    # the frame rate is live: the table follows the camera to another rate (a steady source
    # can show the same figure for many refreshes, so the camera is made to change)
    wait_for(lambda: fps_in(browser, "camera:sim") > 25, what="the camera's frame rate")
    sup.call("POST", "/api/v1/cam/sim/config", json={**CAMERA, "frame_rate": 10})
    wait_for(lambda: 2 < fps_in(browser, "camera:sim") < 15, what="the camera's new rate")

    row(browser, "camera:sim").find_element(By.CSS_SELECTOR, "button.preview").click()
    wait_for(
        lambda: preview_size(browser) == (SIM_CAMERA["size_x"], SIM_CAMERA["size_y"]),
        what="the preview image",
    )
    shown = browser.find_element(By.ID, "preview-img").get_attribute("src")
    wait_for(
        lambda: browser.find_element(By.ID, "preview-img").get_attribute("src") != shown,
        what="the next preview image",
    )
    assert "camera sim" in browser.find_element(By.ID, "preview-title").text

    # a wide camera is previewed downscaled by the node, to every 3rd pixel of its 1700
    sup.call("GET", "/api/v1/cam/wide")
    wait_for(lambda: row(browser, "camera:wide"), what="the wide camera's row")
    row(browser, "camera:wide").find_element(By.CSS_SELECTOR, "button.preview").click()
    wait_for(lambda: preview_size(browser) == (567, 20), what="the downscaled preview")
    assert "1700 px wide, shown 1:3" in browser.find_element(By.ID, "preview-status").text

    wait_for(
        lambda: f"node {sup.node}: REST API on" in browser.find_element(By.ID, "log").text,
        what="the server log",
    )
    # script errors and blocked content (CSP); failed requests are the other tests' business
    errors = [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and entry["source"] != "network"
    ]
    assert not errors, f"the page logged errors: {errors}"


def test_stop_needs_the_node_token_and_changes_nothing_without_it(supervisor, browser):
    sup = supervisor(cameras={"sim": CAMERA}, token=TOKEN)
    sup.call("GET", "/api/v1/cam/sim")
    pid = camera_pid(sup)
    open_page(browser, sup)
    wait_for(lambda: row(browser, "camera:sim"), what="the camera's row")
    assert browser.find_element(By.ID, "token-form").is_displayed()

    click_stop(browser, "camera:sim")
    kind, text = wait_for(
        lambda: message(browser)[0] == "error" and message(browser), what="the refusal"
    )
    assert "refused (HTTP 401)" in text and "needs its token" in text
    token = browser.find_element(By.ID, "token")
    token.send_keys("not-the-token")
    browser.find_element(By.ID, "token-use").click()
    click_stop(browser, "camera:sim")
    wait_for(lambda: "not the node's token" in message(browser)[1], what="the wrong-token refusal")
    assert camera_pid(sup) == pid and row(browser, "camera:sim") is not None

    token.clear()
    token.send_keys(TOKEN)
    browser.find_element(By.ID, "token-use").click()
    assert browser.execute_script("return sessionStorage.getItem('shmcam.token')") == TOKEN
    click_stop(browser, "camera:sim")
    wait_for(lambda: message(browser) == ("ok", "camera sim stopped"), what="the stop")
    wait_for(lambda: row(browser, "camera:sim") is None, what="the row to go")
    assert camera_pid(sup) is None


def test_start_buttons_start_a_camera_and_a_saved_pipeline(supervisor, browser):
    sup = supervisor(
        cameras={"sim": CAMERA},
        pipelines={
            "beam": {
                "camera_name": "sim",
                "no_client_timeout": 0,
                "image_region_of_interest": [10, 100, 20, 50],
            }
        },
    )
    open_page(browser, sup)
    assert browser.find_element(By.ID, "no-instances").is_displayed()
    wait_for(
        lambda: (
            browser.find_element(By.ID, "start-camera").get_attribute("value") == "sim"
            and browser.find_element(By.ID, "start-pipeline").get_attribute("value") == "beam"
        ),
        what="the saved configs in the start lists",
    )

    browser.find_element(By.ID, "start-camera-button").click()
    wait_for(lambda: row(browser, "camera:sim"), what="the started camera's row")
    browser.find_element(By.ID, "start-pipeline-button").click()
    kind, text = wait_for(
        lambda: message(browser)[0] != "busy" and message(browser),
        timeout=60,
        what="the pipeline's start",
    )
    assert kind == "ok" and text.startswith("pipeline beam running, stream tcp://"), text
    wait_for(lambda: row(browser, "pipeline:beam"), what="the pipeline's row")
    info = sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"]
    assert info["beam"]["config"]["camera_name"] == "sim"

    row(browser, "pipeline:beam").find_element(By.CSS_SELECTOR, "button.preview").click()
    assert "pipeline beam: its output image" in browser.find_element(By.ID, "preview-title").text
    wait_for(lambda: preview_size(browser) == (100, 50), what="the pipeline's output (its ROI)")

    click_stop(browser, "pipeline:beam")
    wait_for(lambda: row(browser, "pipeline:beam") is None, what="the pipeline's row to go")
    status = browser.find_element(By.ID, "preview-status")
    assert status.text == "pipeline beam is stopping: preview stopped"
    assert sup.call("GET", "/api/v1/pipeline/info")["info"]["active_instances"] == {}

    # a camera stopped elsewhere is not started again by its open preview (the image route
    # would start it)
    row(browser, "camera:sim").find_element(By.CSS_SELECTOR, "button.preview").click()
    wait_for(lambda: "320 px wide" in status.text, what="the camera's preview")
    sup.call("DELETE", "/api/v1/cam/sim")
    wait_for(lambda: row(browser, "camera:sim") is None, what="the camera's row to go")
    seen = refreshes(browser)
    wait_for(lambda: refreshes(browser) >= seen + 3, what="three more refreshes")
    assert status.text == "sim is no longer running: preview stopped"
    assert camera_pid(sup) is None and row(browser, "camera:sim") is None


def test_an_unreachable_supervisor_shows_disconnected(supervisor, browser):
    sup = supervisor()
    open_page(browser, sup)
    banner = browser.find_element(By.ID, "banner")
    assert not banner.is_displayed()
    sup.stop()
    wait_for(lambda: banner.is_displayed(), what="the disconnected banner")
    assert "Disconnected from the supervisor" in banner.text
    assert "stale" in browser.find_element(By.TAG_NAME, "body").get_attribute("class")


def test_the_cluster_page_shows_servers_and_every_instance_with_its_node(tmp_path, node, browser):
    """The coordinator serves the same page in cluster mode: a servers panel and a node
    column; stop goes through the coordinator to the node, with the coordinator's token."""
    from cluster_harness import Cluster

    cluster = Cluster(tmp_path / "cluster", node, cameras={"sim": CAMERA}, token=TOKEN)
    try:
        cluster.start()
        cluster.call(
            "POST",
            "/api/v1/pipeline",
            params={"instance_id": "p"},
            json={"camera_name": "sim", "no_client_timeout": 0},
        )
        where = cluster.running("pipeline")["p"][0]
        open_page(browser, cluster.coordinator)
        assert browser.find_element(By.ID, "servers-panel").is_displayed()
        servers = wait_for(
            lambda: (
                len(found := browser.find_elements(By.CSS_SELECTOR, "#servers tbody tr")) == 3
                and found
            ),
            what="three servers",
        )
        assert {s.get_attribute("data-node") for s in servers} == set(cluster.names)
        wait_for(lambda: row(browser, "pipeline:p"), what="the pipeline's row")
        assert cell(browser, "pipeline:p", "node") == where == cell(browser, "camera:sim", "node")
        assert browser.find_element(By.CSS_SELECTOR, "th.cluster-only").is_displayed()
        server = browser.find_element(By.CSS_SELECTOR, f'#servers tr[data-node="{where}"]')
        server.find_element(By.CSS_SELECTOR, "button.log").click()
        wait_for(
            lambda: "REST API on" in browser.find_element(By.ID, "log").text,
            what="the node's own log",
        )
        token = browser.find_element(By.ID, "token")
        token.send_keys(TOKEN)
        browser.find_element(By.ID, "token-use").click()
        click_stop(browser, "pipeline:p")
        wait_for(lambda: message(browser) == ("ok", "pipeline p stopped"), what="the stop")
        wait_for(lambda: "p" not in cluster.running("pipeline"), what="p stopped on its node")
    finally:
        cluster.stop()
