"""End to end, as a person uses it: ``deam-mamba serve`` in a subprocess, Debian's headless Chromium uploads files
through the page, and the figures shown must equal the API's answer for the same file.

Needs the packages ``chromium`` and ``chromium-driver`` (the Makefile's install step adds them where apt is
available); skipped with the reason otherwise. A screenshot of the page goes to the test's tmp folder and,
when ``DEAM_SCREENSHOT_DIR`` is set, there too.
"""
from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _inference_helpers import REPO, tiny_run
from test_serve import wav_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists()
                                                else None)
START_TIMEOUT_S = 120
RESULT_TIMEOUT_S = 90


def _need_browser() -> None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; `make install` does it where apt is available)")
    pytest.importorskip("selenium", reason="selenium is not installed (requirements/requirements.txt pins it)")
    pytest.importorskip("httpx", reason="httpx is not installed")


@pytest.fixture()
def server(tmp_path_factory: pytest.TempPathFactory, synth_corpus: Path):
    """``(url, process)`` of ``deam-mamba serve RUN --port 0 --max-upload-mb 1`` on a tiny run."""
    _need_browser()
    run_dir = tiny_run(tmp_path_factory, synth_corpus, "static")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "deam_mamba.cli", "serve", str(run_dir), "--port", "0",
                             "--max-upload-mb", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines: queue.Queue[str] = queue.Queue()
    log: list[str] = []

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            log.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    url, deadline = None, time.monotonic() + START_TIMEOUT_S
    while url is None and time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line.startswith("deam-mamba serve:") and " on http://" in line:
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
    try:
        assert url, f"the server did not start:\n{''.join(log)}"
        import httpx

        while time.monotonic() < deadline:  # listening once the health check answers
            try:
                if httpx.get(url + "api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -15), "".join(log)


def _driver(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                f"--user-data-dir={profile}", "--window-size=1280,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_upload_through_the_page_shows_the_apis_figures(server, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from deam_mamba.inference.files import PredictionRun, predictions_to_csv

    url, _ = server
    songs = {"calm tone.wav": wav_bytes(6.0, freq=220.0, seed=1), "bright tone.wav": wav_bytes(9.0, freq=880.0, seed=2)}
    for name, data in songs.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_text("not audio\n" * 50)
    (tmp_path / "huge.wav").write_bytes(b"RIFF" + b"\0" * (1024 ** 2 + 10))  # over --max-upload-mb 1
    api = {name: httpx.post(url + "api/predict", files={"file": (name, data, "audio/wav")}, timeout=60).json()
           for name, data in songs.items()}

    driver = _driver(tmp_path / "chromium-profile")
    try:
        wait = WebDriverWait(driver, RESULT_TIMEOUT_S)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "model-info").get_attribute("data-ready") == "1")
        assert "mambavision_tiny" in driver.find_element(By.ID, "model-info").text
        upload = driver.find_element(By.ID, "file")
        upload.send_keys(str(tmp_path / "notes.txt"))
        upload.send_keys("\n".join(str(tmp_path / n) for n in (*songs, "huge.wav")))  # several files at once
        cards = lambda d: d.find_elements(By.CSS_SELECTOR, "#songs .song")  # noqa: E731
        wait.until(lambda d: len(cards(d)) == 4 and all(c.get_attribute("data-status") in ("done", "error")
                                                        for c in cards(d)))
        by_name = {c.get_attribute("data-file"): c for c in cards(driver)}
        assert "cannot decode audio file notes.txt" in by_name["notes.txt"].find_element(By.CLASS_NAME, "message").text
        assert "larger than this server's limit of 1 MB" in by_name["huge.wav"].text
        for name, d in api.items():
            card = by_name[name]
            assert card.get_attribute("data-status") == "done", card.text
            shown_v = float(card.find_element(By.CSS_SELECTOR, ".numbers .valence").text)
            shown_a = float(card.find_element(By.CSS_SELECTOR, ".numbers .arousal").text)
            assert abs(shown_v - d["valence"]) <= 0.0005 + 1e-9 and abs(shown_a - d["arousal"]) <= 0.0005 + 1e-9
            assert card.find_element(By.CSS_SELECTOR, ".numbers .quadrant").text == d["quadrant"]
            assert "(1-9)" in card.text
            n_points = sum(int(p.get_attribute("data-points"))
                           for p in card.find_elements(By.CSS_SELECTOR, "svg.curve polyline.curve_valence"))
            assert n_points == len(d["curve_valence"])
            assert len(card.find_elements(By.CSS_SELECTOR, "svg.plane circle.point")) == 1
            assert len(card.find_elements(By.CSS_SELECTOR, ".flag")) == len(d["flags"])  # one warning per flag
        # side by side: one plane with a point per song, a table row per song and per refused file
        assert len(driver.find_elements(By.CSS_SELECTOR, "#cmp-plane circle.point")) == 2
        rows = driver.find_elements(By.CSS_SELECTOR, "#cmp-table tbody tr")
        assert len(rows) == 4 and any("bright tone.wav" in r.text for r in rows)
        # the downloads: the same CSV columns and JSON document as `deam-mamba predict --out`
        csv_text = driver.execute_script("return deamCsv();")
        assert csv_text.splitlines()[0] == predictions_to_csv(PredictionRun()).splitlines()[0]
        assert len(csv_text.splitlines()) == 1 + 2 + 2
        doc = driver.execute_script("return JSON.parse(deamJson());")
        assert [p["source"] for p in doc["predictions"]] == list(songs)
        assert doc["predictions"][0]["valence"] == api["calm tone.wav"]["valence"] and len(doc["skipped"]) == 2
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, min(int(height) + 40, 4000))
        shot = tmp_path / "serve_page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        if os.environ.get("DEAM_SCREENSHOT_DIR"):
            out = Path(os.environ["DEAM_SCREENSHOT_DIR"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, out / shot.name)
    finally:
        driver.quit()
    # the server kept answering throughout
    assert httpx.get(url + "api/health", timeout=5).json()["status"] == "ok"
