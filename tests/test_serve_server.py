"""``fcnseg serve`` as people run it: the real command on a free loopback port (API key from the environment, SIGTERM
while a request is in flight), and the page at ``/`` in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, which ``.ci/run`` installs; the test is skipped without them).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_inference_predictor import COLORS, NAMES, smooth_image, write_checkpoint

pytest.importorskip("fastapi")
import uvicorn
from test_serve import colour_predictor

from fcnseg.inference.predictor import Predictor
from fcnseg.serve.app import create_app
from fcnseg.serve.config import ServeConfig

CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http(url: str, body: bytes | None = None, key: str | None = None) -> tuple[int, bytes]:
    """``(status, body)`` of a GET (or a POST of ``body`` as image/png), with the bearer ``key`` if given."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/png"} if body else {})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def wait_for(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {seconds} s")
        time.sleep(0.02)


def test_the_command_serves_and_sigterm_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    checkpoint, image = tmp_path / "model.pt", tmp_path / "street.png"
    write_checkpoint(checkpoint)
    Image.fromarray(smooth_image(40, 52)).save(image)
    expected = Predictor.from_checkpoint(checkpoint, backend="torch", precision="fp32").predict(image)
    port, key = free_port(), "k3y"
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    # A batch of 4 that waits 3 s: the one request sent stays in flight long enough to be caught by SIGTERM.
    command = [sys.executable, "-m", "fcnseg", "serve", str(checkpoint), "--port", str(port), "--backend", "torch"]
    command += ["--precision", "fp32", "--max-batch-size", "4", "--max-wait-ms", "3000"]
    with log.open("w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=os.environ | {"FCNSEG_API_KEY": key}
        )
    try:

        def ready() -> bool:
            assert server.poll() is None, log.read_text()
            try:
                return http(f"{base}/health")[0] == 200
            except OSError:
                return False

        wait_for(ready, "the server's readiness")
        assert f"Uvicorn running on {base}" in log.read_text()  # 127.0.0.1 unless --host says otherwise
        assert http(f"{base}/info")[0] == 401 and http(f"{base}/info", key=key)[0] == 200
        answer: list = []
        client = threading.Thread(target=lambda: answer.append(http(f"{base}/predict", image.read_bytes(), key)))
        client.start()
        wait_for(lambda: json.loads(http(f"{base}/info", key=key)[1])["queued"] >= 1, "the request's arrival")
        server.send_signal(signal.SIGTERM)
        client.join(60)
        assert server.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled, once it is done
    finally:
        if server.poll() is None:
            server.kill()
    status, body = answer[0]
    assert status == 200, body
    with Image.open(io.BytesIO(body)) as mask:
        np.testing.assert_array_equal(np.asarray(mask), expected)
    assert "Shutting down" in log.read_text()
    with pytest.raises(OSError):
        http(f"{base}/health")


@pytest.fixture
def live_server() -> Iterator[tuple[str, Predictor]]:
    """The app of the colour classifier of ``test_serve``, served by uvicorn in a thread on a free loopback port."""
    predictor = colour_predictor()
    app = create_app(predictor, ServeConfig(model_name="tiny", warmup_size=(32, 32)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.config.port}"
    wait_for(lambda: server.started, "the server's start")
    wait_for(lambda: http(f"{base}/health")[0] == 200, "the server's readiness")
    yield base, predictor
    server.should_exit = True
    thread.join(30)


def chromium_driver(tmp_path: Path):
    """A headless Chromium under selenium, or a skip where Chromium, its driver or selenium are missing."""
    webdriver = pytest.importorskip("selenium.webdriver")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


def canvas_pixels(driver) -> np.ndarray:
    url = driver.execute_script("return document.getElementById('overlay').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))) as shown:
        return np.asarray(shown.convert("RGB")).astype(int)


def set_opacity(driver, percent: int) -> None:
    script = (
        "const s = document.getElementById('opacity'); s.value = arguments[0]; s.dispatchEvent(new Event('input'));"
    )
    driver.execute_script(script, percent)


def test_the_page_shows_the_mask_over_the_image_in_a_real_browser(live_server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, predictor = live_server
    photo = smooth_image(90, 120)
    image = tmp_path / "street.png"
    Image.fromarray(photo).save(image)
    mask = predictor.predict(image)
    assert len(np.unique(mask)) == len(NAMES), "the check needs a mask of every class"
    driver = chromium_driver(tmp_path)
    try:
        driver.get(f"{base}/")
        driver.find_element(By.ID, "file").send_keys(str(image))  # the file picker, as a person uses it
        body = driver.find_element(By.TAG_NAME, "body")
        WebDriverWait(driver, 60).until(lambda d: body.get_attribute("data-state") in ("ready", "error"))
        assert body.get_attribute("data-state") == "ready", driver.find_element(By.ID, "status").text
        assert "tiny" in driver.find_element(By.ID, "model").text
        colors = np.asarray(COLORS)
        set_opacity(driver, 100)  # the mask's colours alone, where the mask says
        np.testing.assert_array_equal(canvas_pixels(driver), colors[mask])
        set_opacity(driver, 40)  # blended as (1 - a) * image + a * colour
        blend = 0.6 * photo + 0.4 * colors[mask]
        assert np.abs(canvas_pixels(driver) - blend).max() <= 2
        assert driver.find_element(By.ID, "opacity-value").text == "40%"
        rows = [row.find_elements(By.TAG_NAME, "td") for row in driver.find_elements(By.CSS_SELECTOR, "#areas tr")[1:]]
        counts = np.bincount(mask.ravel(), minlength=len(NAMES))
        assert [cells[1].text for cells in rows] == NAMES  # the legend
        assert [cells[2].text for cells in rows] == [f"{100 * n / mask.size:.1f}%" for n in counts]
        assert [int(cells[3].text.replace(",", "")) for cells in rows] == counts.tolist()
        swatches = [
            cells[0].find_element(By.CLASS_NAME, "swatch").value_of_css_property("background-color") for cells in rows
        ]
        assert swatches == [f"rgba({r}, {g}, {b}, 1)" for r, g, b in COLORS]
        download = driver.find_element(By.ID, "download")
        assert download.get_attribute("download") == "street_mask.png"
        assert download.get_attribute("href").startswith("blob:")
    finally:
        driver.quit()
