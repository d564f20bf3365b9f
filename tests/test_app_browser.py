"""The app in a real browser: Debian's chromium, driven by Playwright, renders the generated mesh
(WebGL2 on SwiftShader, no GPU needed). See shared/BROWSER_TESTING.md.

Needs `apt-get install -y chromium` (Playwright's own browser download is not used); skipped
with that reason where it is missing. The screenshots are kept in test-artifacts/app_browser/.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright
from test_app import ROOT, quiet_env, running_app, tiny_model

CHROMIUM = Path("/usr/lib/chromium/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"chromium is not installed ({CHROMIUM} is missing): apt-get install -y chromium",
                allow_module_level=True)

ARTIFACTS = ROOT / "test-artifacts" / "app_browser"
CHROMIUM_ARGS = ["--no-sandbox", "--enable-unsafe-swiftshader", "--disable-dev-shm-usage"]
RENDER_TIMEOUT_S = 60


def drawn(image: np.ndarray, background: np.ndarray) -> tuple[float, int]:
    """(fraction of pixels clearly unlike `background`, number of distinct colors) of an (H, W, 3) image."""
    differs = np.abs(image.astype(int) - background).sum(-1) > 30
    return float(differs.mean()), len(np.unique(image.reshape(-1, 3), axis=0))


def settled_render(canvas, timeout: float = RENDER_TIMEOUT_S) -> np.ndarray:
    """Canvas screenshots until the mesh is drawn (over 5 % of the pixels unlike the corner's
    clear color, many colors) and two consecutive frames are identical (the zoom-in is over)."""
    previous = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        image = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
        covered, colors = drawn(image, image[0, 0].astype(int))
        if covered > 0.05 and colors > 50 and previous is not None and np.array_equal(image, previous):
            return image
        previous = image
        time.sleep(0.3)
    pytest.fail(f"the viewer showed no settled mesh within {timeout} s (last: {covered:.1%} drawn, {colors} colors)")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_browser")
    with running_app(tiny_model(tmp / "model"), tmp) as running:
        yield running


@pytest.fixture
def page_and_errors(app, tmp_path):
    """A chromium page on the app, and the list its uncaught page errors go to (Babylon's
    console errors about WebGPU before it falls back to WebGL2 are expected and not collected)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, env=quiet_env(tmp_path)
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors = []
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(app.url)
        yield page, errors
        browser.close()


def test_generate_shows_the_mesh_and_bad_input_an_error(page_and_errors):
    page, errors = page_and_errors
    prompt = page.locator("#prompt textarea")
    generate = page.locator("#generate")

    generate.click()  # empty prompt
    page.get_by_text("The prompt is empty").first.wait_for(timeout=10_000)

    prompt.fill("a red cube")
    generate.click()
    canvas = page.locator("#viewer canvas[data-engine^='Babylon']")
    canvas.wait_for(timeout=RENDER_TIMEOUT_S * 1000)
    image = settled_render(canvas)
    assert "a red cube (seen in training)" in page.locator("#info").inner_text()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(ARTIFACTS / "viewer.png")
    page.screenshot(path=ARTIFACTS / "page.png", full_page=True)
    print(f"screenshots: {ARTIFACTS / 'viewer.png'}, {ARTIFACTS / 'page.png'}")

    downloads = "".join(page.locator("#downloads").inner_text().split())  # names show as stem + suffix
    assert "a_red_cube.glb" in downloads and "a_red_cube.obj" in downloads
    assert errors == []
