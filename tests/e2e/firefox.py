"""Browser tests in Firefox: Debian's Firefox ESR driven by Selenium through geckodriver.

Each :class:`FirefoxPage` is one headless Firefox (its own throw-away profile) on the
meeting page of a real node. The preferences in :data:`FIREFOX_PREFS` give it a fake
camera and microphone without a permission prompt and keep ICE on loopback: Firefox
leaves loopback addresses out of its candidates unless told, and hides host addresses
behind mDNS names the SFU cannot resolve.

Selenium is synchronous: every WebDriver call runs in a thread (``asyncio.to_thread``)
so that the node under test, on the test's event loop, keeps running meanwhile.

Firefox is ``firefox-esr`` (or ``firefox``) on PATH; geckodriver is ``PARLEY_GECKODRIVER``
(``.ci/run`` sets it), else on PATH, else in ``~/.cargo/bin`` (``cargo install
geckodriver``). Without either, or without Selenium, the tests are skipped locally and
fail in CI (``PARLEY_CI=1``), as a missing Chromium does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import NodeHarness, token
from tests.e2e.browser import ParleyPage, unavailable

if TYPE_CHECKING:
    from selenium.webdriver import Firefox

FIREFOX_PREFS: dict[str, bool | int | str] = {
    # a fake camera (a moving test pattern) and microphone (a tone), no permission prompt
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # host candidates as addresses, not mDNS names; loopback addresses gathered at all
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.loopback": True,
    # remote audio and video start without a user gesture
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    # nothing in the background reaches out of the machine
    "app.update.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
}
WINDOW = (1280, 720)


def firefox_binary() -> str:
    for name in ("firefox-esr", "firefox"):
        found = shutil.which(name)
        if found is not None:
            return found
    unavailable("firefox-esr is not installed")


def geckodriver_binary() -> str:
    candidates = [os.environ.get("PARLEY_GECKODRIVER"), shutil.which("geckodriver"),
                  str(Path.home() / ".cargo" / "bin" / "geckodriver")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    unavailable("geckodriver is not installed (cargo install geckodriver)")


def start_firefox() -> Firefox:
    """A new headless Firefox ESR with :data:`FIREFOX_PREFS` (blocking: call in a thread)."""
    binary, driver_path = firefox_binary(), geckodriver_binary()
    try:
        from selenium.webdriver import Firefox, FirefoxOptions, FirefoxService
    except ImportError:
        unavailable("selenium is not installed")
    options = FirefoxOptions()
    options.binary_location = binary
    options.add_argument("-headless")
    options.add_argument(f"--width={WINDOW[0]}")
    options.add_argument(f"--height={WINDOW[1]}")
    for name, value in FIREFOX_PREFS.items():
        options.set_preference(name, value)
    service = FirefoxService(executable_path=driver_path, log_output=os.devnull)
    return Firefox(options=options, service=service)


class FirefoxPage(ParleyPage):
    """One headless Firefox on the meeting page."""

    def __init__(self, driver: Firefox, identity: str) -> None:
        self.driver = driver
        self.identity = identity
        self.participant_id = ""
        self._closed = False

    @classmethod
    async def join(cls, node: NodeHarness, room: str, identity: str, *,
                   role: str = "speaker") -> FirefoxPage:
        """Open the page with a fresh token; returns once it joined (and publishes, if allowed)."""
        page = cls(await asyncio.to_thread(start_firefox), identity)
        try:
            url = node.url("/").rstrip("/") + "/?token=" + token(room, identity, role=role)
            await asyncio.to_thread(page.driver.get, url)
            await page.wait_ready()
            page.participant_id = await page.evaluate("parley.participantId")
        except BaseException:
            await page.close()
            raise
        return page

    async def evaluate(self, expression: str) -> Any:
        # WebDriver's Execute Script awaits a returned promise.
        return await asyncio.to_thread(self.driver.execute_script, f"return ({expression});")

    async def outbound(self) -> list[dict[str, Any]]:
        """What the page sends, one entry per encoding (``parley.outbound()``)."""
        result: list[dict[str, Any]] = await self.evaluate("parley.outbound()")
        return result

    async def close(self) -> None:
        """Quit the browser. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self.driver.quit)
