#!/usr/bin/env python3
"""End-to-end test of the KDCT-native web app in a real headless browser.

Debian's chromium and chromium-driver, driven by selenium (PyPI). Started by the Swift test
WebUITests.browserEndToEnd (Tests/KDCTServerTests/WebUITests.swift), which prepares the fixtures, a private
sshd and the environment below, then checks the outputs with qemu-img. This script starts `kdct-native serve`
on a loopback port itself (so it can restart it), opens the token URL and does everything through the pages:

  inspect a VMDK (producer and sizes shown); convert it to QCOW2 with deflate compression, watching the bar
  reach 100 %; convert an OVA (zstd) and read its domain XML; export to the sshd after trusting its host key in the dialog,
  then see a changed key refused; stop an export and resume it; cancel a long job; reload and restart the service to find the history.

It fails on any request to a non-loopback address, on any console error (a CSP violation is one), on an
inline script or event-handler attribute, on a control without a label, and on raw JSON shown on a page.
Screenshots (PNG) of each screen go to $KDCT_ARTIFACTS (outside the repository), and also to
$KDCT_DOCS_SCREENSHOTS when set (docs/screenshots, committed). What the Swift test checks afterwards is
written to $KDCT_RESULTS as JSON.

Environment: KDCT_BINARY, KDCT_ROOT, KDCT_STATE, KDCT_KNOWN_HOSTS, KDCT_SSH_PORT, KDCT_SSH_USER,
KDCT_SSH_PASSWORD, KDCT_SSH_REMOTE_DIR, (the client key in $KDCT_ROOT/keys/id_ed25519), KDCT_SSH_FINGERPRINT, KDCT_VMDK_PRODUCER, KDCT_ARTIFACTS, KDCT_RESULTS,
optional KDCT_DOCS_SCREENSHOTS, KDCT_CHROMIUM (default /usr/bin/chromium), KDCT_CHROMEDRIVER
(default /usr/bin/chromedriver).
"""

import hashlib
import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for a driver online

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

ENV = os.environ
ROOT = os.path.realpath(ENV["KDCT_ROOT"])
IMAGES = os.path.join(ROOT, "images")
OUTPUT = os.path.join(ROOT, "converted")
ARTIFACTS = ENV["KDCT_ARTIFACTS"]
DOCS = ENV.get("KDCT_DOCS_SCREENSHOTS")
KNOWN_HOSTS = os.path.normpath(ENV["KDCT_KNOWN_HOSTS"])
REMOTE_DIR = os.path.normpath(ENV["KDCT_SSH_REMOTE_DIR"])
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def log(message):
    print(f"webui-e2e: {message}", flush=True)


# ---------------------------------------------------------------------------------------------------------
# The service


class Service_:
    """`kdct-native serve --listen 127.0.0.1:0 --output json`, its first stdout line read for url and token."""

    def __init__(self):
        log_path = os.path.join(ARTIFACTS, "serve.log")
        self.log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [ENV["KDCT_BINARY"], "serve", "--listen", "127.0.0.1:0", "--root", ROOT, "--state", ENV["KDCT_STATE"],
             "--known-hosts", KNOWN_HOSTS, "--output", "json", "-m", "2"],
            stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self.process.stdout.readline().decode()
        check(line.strip(), "kdct-native serve printed no startup line (see serve.log)")
        startup = json.loads(line)
        self.url = startup["url"]
        self.token = startup["token"]
        self.port = startup["port"]
        self.base = f"http://127.0.0.1:{self.port}"
        log(f"serve started on port {self.port}")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=60)
        check(status == 0, f"kdct-native serve exited {status} after SIGTERM")
        self.log.close()


# ---------------------------------------------------------------------------------------------------------
# Static checks: CSP header, no inline script in the page, every file served with a type


class InlineScriptFinder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []
        self.scripts = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        for name, _ in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"<{tag} {name}=...> is an inline event handler")
            if name.lower() in ("href", "src") and (names.get(name) or "").strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:...>")
        if tag == "style" or "style" in names:
            self.problems.append(f"<{tag}> carries inline style")
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("a <script> without src (inline script)")
            self.scripts.append(names.get("src"))

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.problems.append("a <script> with inline content")


def fetch(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def check_static_files(service):
    status, headers, body = fetch(service.base + "/")
    check(status == 200, f"GET / answered {status}")
    csp = headers.get("Content-Security-Policy", "")
    directives = {part.strip().split(" ")[0]: part.strip() for part in csp.split(";") if part.strip()}
    check(directives.get("default-src") == "default-src 'self'", f"CSP has no default-src 'self': {csp}")
    check("'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, f"CSP allows inline script or eval: {csp}")
    check(directives.get("script-src") in (None, "script-src 'self'"), f"CSP script-src is not 'self': {csp}")
    finder = InlineScriptFinder()
    finder.feed(body.decode())
    check(not finder.problems, f"index.html needs inline script or style: {finder.problems}")
    check(finder.scripts == ["/app.js"], f"index.html loads {finder.scripts}")
    # Every module the app imports is served as JavaScript, under the same CSP, and uses no eval.
    pending, seen = ["/app.js"], set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        status, headers, body = fetch(service.base + path)
        check(status == 200, f"GET {path} answered {status}")
        check(headers.get("Content-Type", "").startswith("text/javascript"), f"{path} is served as {headers.get('Content-Type')}")
        text = body.decode()
        check("eval(" not in text and "new Function" not in text and "innerHTML" not in text,
              f"{path} uses eval, new Function or innerHTML")
        for line in text.splitlines():
            if line.startswith("import ") and " from \"./" in line:
                pending.append("/" + line.split(" from \"./")[1].split("\"")[0])
    check({"/strings.js", "/jobs.js", "/disks.js", "/convert.js", "/export.js"} <= seen, f"modules found: {sorted(seen)}")
    log(f"static checks passed ({len(seen)} modules, CSP {directives.get('default-src')})")


# ---------------------------------------------------------------------------------------------------------
# The browser


def make_driver():
    options = Options()
    options.binary_location = ENV.get("KDCT_CHROMIUM", "/usr/bin/chromium")
    for argument in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800", "--force-device-scale-factor=1",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-sync",
        "--disable-component-update", "--disable-default-apps", "--disable-extensions", "--lang=en-US",
        "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
        "--font-render-hinting=none", "--hide-scrollbars",
    ]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=ENV.get("KDCT_CHROMEDRIVER", "/usr/bin/chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_window_size(1280, 800)
    # The size of the page's viewport, not the window's outer frame.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    return driver


class Browser:
    def __init__(self, driver):
        self.driver = driver
        self.requests = []

    def wait(self, condition, timeout=60, message="timed out"):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                                 ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition())
        except TimeoutException:
            self.screenshot("failure", artifact_only=True)
            raise Failure(message)

    def find(self, selector, timeout=30):
        return self.wait(lambda: self._visible(selector), timeout, f"no visible element {selector}")

    def _visible(self, selector):
        for element in self.driver.find_elements(By.CSS_SELECTOR, selector):
            if element.is_displayed():
                return element
        return None

    @staticmethod
    def _click_found(find, what):
        """Clicks what `find()` returns, finding it again if the page redrew it in between."""
        for _ in range(10):
            try:
                element = find()
                element.click()
                return element
            except StaleElementReferenceException:
                time.sleep(0.1)
        raise Failure(f"{what} kept being redrawn")

    def click(self, selector, timeout=30):
        """Clicks the visible element `selector`."""
        return self._click_found(lambda: self.find(selector, timeout), selector)

    def press(self, text, within="body", timeout=30):
        """Clicks the visible button or link whose text is `text`."""
        return self._click_found(lambda: self.button_with_text(text, within, timeout), f"'{text}'")

    def button_with_text(self, text, within="body", timeout=30):
        def find():
            for element in self.driver.find_elements(By.CSS_SELECTOR, f"{within} button, {within} a"):
                if element.is_displayed() and element.text.strip() == text:
                    return element
            return None
        return self.wait(find, timeout, f"no button '{text}' in {within}")

    def text(self, selector="body"):
        return self.find(selector).text

    def screenshot(self, name, artifact_only=False):
        path = os.path.join(ARTIFACTS, f"{name}.png")
        self.driver.save_screenshot(path)
        if DOCS and not artifact_only:
            os.makedirs(DOCS, exist_ok=True)
            shutil.copyfile(path, os.path.join(DOCS, f"{name}.png"))
        log(f"screenshot {path}")

    def collect_logs(self):
        """Network requests and console messages since the last call; fails on any of them that is wrong."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                url = message["params"]["request"]["url"]
                self.requests.append(url)
                parsed = urllib.parse.urlparse(url)
                if parsed.scheme in ("data", "blob", "about"):
                    continue
                check(parsed.scheme in ("http", "ws") and parsed.hostname in LOOPBACK,
                      f"the page requested {url}, which is not the loopback service")
        for entry in self.driver.get_log("browser"):
            text = entry.get("message", "")
            check("Content Security Policy" not in text and "Refused to" not in text, f"CSP violation: {text}")
            check(entry.get("level") != "SEVERE", f"console error: {text}")

    def check_page(self, label):
        """Every control has a name; no raw JSON and no stack trace is shown."""
        unlabeled = self.driver.execute_script("""
            const missing = [];
            for (const element of document.querySelectorAll('input, select, textarea, button, a[href], progress')) {
              if (element.closest('[hidden]') || element.offsetParent === null) continue;
              const name = (element.labels && element.labels.length > 0 ? [...element.labels].map(l => l.textContent).join(' ') : '')
                || element.getAttribute('aria-label') || (element.getAttribute('aria-labelledby') ? 'x' : '')
                || (element.type === 'radio' || element.type === 'checkbox' ? '' : element.textContent);
              if (!name || !name.trim()) missing.push(element.outerHTML.slice(0, 120));
            }
            return missing;""")
        check(not unlabeled, f"{label}: controls without a label: {unlabeled}")
        body = self.driver.find_element(By.TAG_NAME, "body").text
        for sign in ('{"', '":', "Traceback", "at Object.", "Error:", "undefined", "[object Object]", "NaN"):
            check(sign not in body, f"{label}: the page shows '{sign}': {body[:2000]}")
        self.collect_logs()


# ---------------------------------------------------------------------------------------------------------
# Steps


def open_screen(browser, name):
    browser.click(f"#nav-{name}")
    browser.find(f"#screen-{name}")


def open_images_folder(browser):
    open_screen(browser, "disks")
    walk_to(browser, "#disk-browser", ".location", IMAGES)
    browser.wait(lambda: "debian12.vmdk" in browser.text("#disk-browser"), 30, "the images folder is not listed")


def job(browser, number):
    """A job card as the page shows it now, read in one step (cards are redrawn as progress arrives):
    {state, text, percent} or None."""
    return browser.driver.execute_script("""
        const card = document.querySelector(`#job-list li.job[data-number="${arguments[0]}"]`);
        if (!card || card.offsetParent === null) return null;
        const bar = card.querySelector("progress");
        return { state: card.dataset.state, text: card.innerText, percent: bar ? Number(bar.value) : null };""", number)


def jobs_shown(browser):
    """{number: state} of every job card."""
    return browser.driver.execute_script("""
        const jobs = {};
        for (const card of document.querySelectorAll("#job-list li.job")) jobs[card.dataset.number] = card.dataset.state;
        return jobs;""")


def newest_job_number(browser):
    browser.find("#job-list li.job")
    return max(int(number) for number in jobs_shown(browser))


def wait_for_state(browser, number, states, timeout=300):
    def done():
        shown = job(browser, number)
        return shown if shown is not None and shown["state"] in states else None
    return browser.wait(done, timeout, f"job #{number} did not reach {states}")


def walk_to(browser, scope, location_selector, folder):
    """In the folder list `scope` (the Disks browser or the open chooser), walks to `folder`: up, or down one
    folder at a time."""
    def location():
        return browser.find(f"{scope} {location_selector}").get_attribute("data-path")
    for _ in range(20):
        browser.find(f"{scope} button")
        current = location()
        if current == folder:
            return
        if current and (folder + "/").startswith(current + "/"):
            step = os.path.join(current, folder[len(current) + 1:].split("/")[0])
            browser.click(f'{scope} button.folder[data-path="{step}"]')
        elif current:
            browser.click(f"{scope} button.up")
        else:
            roots = browser.driver.find_elements(By.CSS_SELECTOR, f"{scope} button.folder")
            next(b for b in roots if (folder + "/").startswith(b.get_attribute("data-path") + "/")).click()
        browser.wait(lambda: location() != current, 30, f"the folder list did not leave {current}")
    check(location() == folder, f"the folder list did not reach {folder}")


def choose_in_picker(browser, folder, file_name=None):
    """In the open chooser, walks to `folder`, then picks `file_name` there (or, without one, the folder)."""
    walk_to(browser, "dialog[open]", ".picker-location", folder)
    if file_name:
        browser.click(f'dialog[open] .picker-list button.file[data-path="{os.path.join(folder, file_name)}"]')
    else:
        browser.click("#picker-use-folder")
    browser.wait(lambda: not browser.driver.find_elements(By.CSS_SELECTOR, "dialog[open]"), 10, "the chooser stayed open")


def step_disks(browser, results):
    open_screen(browser, "disks")
    # The only root opens by itself.
    browser.wait(lambda: f"You are in {ROOT}" in browser.text("#disk-browser"), 30, "the root is not opened")
    browser.press("images", "#disk-browser")
    browser.wait(lambda: "debian12.vmdk" in browser.text("#disk-browser"), 30, "the images folder is not listed")
    listing = browser.text("#disk-browser")
    for expected in ("VMDK (VMware)", "OVA virtual appliance", "VHDX (Hyper-V)", "VDI (VirtualBox)", "not a disk image"):
        check(expected in listing, f"the listing lacks '{expected}': {listing}")

    # Keyboard only: Tab to the VMDK's button, Enter shows its details.
    browser.driver.find_element(By.TAG_NAME, "body").click()
    for _ in range(80):
        browser.driver.switch_to.active_element.send_keys(Keys.TAB)
        if browser.driver.switch_to.active_element.text == "debian12.vmdk":
            break
    check(browser.driver.switch_to.active_element.text == "debian12.vmdk", "Tab never reached the VMDK")
    browser.driver.switch_to.active_element.send_keys(Keys.ENTER)
    facts = browser.text("#disk-facts")
    log(f"VMDK details: {facts!r}")
    check("VMDK (VMware)" in facts, f"format not shown: {facts}")
    check("monolithicSparse" in facts, f"subformat not shown: {facts}")
    check(results["vmdk_producer"] in facts, f"producer '{results['vmdk_producer']}' not shown: {facts}")
    check("256 MiB (268,435,456 bytes)" in facts, f"virtual size not shown: {facts}")
    check("Space used on this computer" in facts, f"allocated size not shown: {facts}")
    browser.check_page("disks")
    browser.screenshot("disks")

    # A child image whose parent is missing: the warning names where it was looked for and what would fix it.
    browser.press("orphan-child.qcow2", "#disk-browser")
    warnings = browser.text("#disk-warnings")
    log(f"orphan warnings: {warnings!r}")
    check("pattern-v2.qcow2" in warnings and IMAGES in warnings, f"the missing parent is not named with its folder: {warnings}")
    check("put the parent at the place shown" in warnings, f"no advice on the missing parent: {warnings}")
    browser.check_page("disks-orphan")
    browser.screenshot("disks-missing-parent")

    # A VirtualBox snapshot (from the corpus) whose parent is elsewhere: choosing it completes the chain, as the
    # CLI's --parent does.
    if ENV.get("KDCT_VDI_SNAPSHOT"):
        snapshot_folder = os.path.join(ROOT, "snapshots")
        walk_to(browser, "#disk-browser", ".location", snapshot_folder)
        browser.press(ENV["KDCT_VDI_SNAPSHOT"], "#disk-browser")
        warnings = browser.text("#disk-warnings")
        log(f"VDI snapshot warnings: {warnings!r}")
        check("--parent" in warnings and snapshot_folder in warnings, f"the missing VDI parent is not explained: {warnings}")
        browser.click("#disk-choose-parent")
        choose_in_picker(browser, os.path.join(ROOT, "base-images"), ENV["KDCT_VDI_PARENT"])
        browser.wait(lambda: "Layers" in browser.text("#disk-details"), 30, "the chain is not shown after choosing the parent")
        details = browser.text("#disk-details")
        log(f"VDI snapshot with its parent: {details!r}")
        check("No warnings." in details and ENV["KDCT_VDI_PARENT"] in details and "VirtualBox" in details,
              f"the chosen parent did not complete the chain: {details}")
        browser.check_page("disks-chain")
        browser.screenshot("disks-vdi-snapshot")
        browser.press("hyperv-dirty.vhdx", "#disk-browser")
        browser.wait(lambda: "Closed cleanly" in browser.text("#disk-details"), 30, "the dirty VHDX is not described")
        details = browser.text("#disk-details")
        log(f"dirty VHDX: {details!r}")
        check("replayed in memory" in details and "Closed cleanly\nNo" in details, f"the dirty log is not explained: {details}")
        browser.check_page("disks-dirty")
        browser.screenshot("disks-dirty-vhdx")
        open_images_folder(browser)
    else:
        log("CORPUS SKIPPED: no VirtualBox snapshot to choose a parent for")

    browser.press("webserver.ova", "#disk-browser")
    vm = browser.text("#vm-facts")
    log(f"OVA details: {vm!r}")
    for expected in ("webserver", "debian10_64Guest", "3", "1.50 GiB", "BIOS", "webserver.mf"):
        check(expected in vm, f"the VM summary lacks '{expected}': {vm}")
    check("VMXNET3" in browser.text("#vm-nics"), f"the NICs are not shown: {browser.text('#vm-nics')}")
    browser.check_page("disks-ova")
    browser.screenshot("disks-appliance")


def step_convert(browser, results):
    open_images_folder(browser)
    browser.press("debian12.vmdk", "#disk-browser")
    browser.find("#disk-facts")
    browser.click("#disk-convert")
    browser.find("#screen-convert")
    check(browser.find("#convert-source").get_attribute("value") == os.path.join(IMAGES, "debian12.vmdk"), "source not carried over")
    browser.wait(lambda: browser.find("#convert-name").get_attribute("value") == "debian12.qcow2", 30, "name not suggested as debian12.qcow2")
    browser.click('input[name=compression][value=deflate]')
    browser.click("#convert-folder-choose")
    choose_in_picker(browser, OUTPUT)
    check(browser.find("#convert-folder").get_attribute("value") == OUTPUT, "the chosen folder is not used")
    browser.wait(lambda: "free in" in browser.text("#convert-space"), 60, "the space needed is not shown")
    log(f"space: {browser.text('#convert-space')!r}")
    browser.check_page("convert")
    browser.screenshot("convert")
    browser.click("#convert-submit")

    browser.find("#screen-jobs")
    number = newest_job_number(browser)
    seen = []
    def finished():
        shown = job(browser, number)
        if shown is None:
            return None
        if shown["percent"] is not None:
            seen.append(shown["percent"])
        return shown if shown["state"] in ("succeeded", "failed") else None
    card = browser.wait(finished, 300, "the conversion did not finish")
    check(card["state"] == "succeeded", f"the conversion failed: {card['text']}")
    middle = [value for value in seen if 0 < value < 100]
    log(f"progress values seen: {len(seen)}, between 0 and 100: {len(middle)}, last {seen[-1] if seen else None}")
    check(middle, f"the bar never showed progress between 0 and 100 % ({seen[:20]})")
    check(seen[-1] == 100.0, f"the bar did not end at 100 % ({seen[-5:]})")
    text = card["text"]
    output = os.path.join(OUTPUT, "debian12.qcow2")
    check(output in text, f"the output path is not shown: {text}")
    sha = hashlib.sha256(open(output, "rb").read()).hexdigest()
    check(sha in text, f"the SHA-256 shown is not the output's ({sha}): {text}")
    check("Took" in text and "Size" in text, f"duration or size missing: {text}")
    browser.check_page("jobs-convert")
    browser.screenshot("jobs-converted")
    results["qcow2_output"] = output
    results["qcow2_source"] = os.path.join(IMAGES, "debian12.vmdk")


def step_appliance(browser, results):
    open_images_folder(browser)
    browser.press("webserver.ova", "#disk-browser")
    browser.find("#vm-facts")
    browser.click("#disk-convert")
    browser.wait(lambda: browser.find("#convert-name").get_attribute("value") == "webserver", 30, "no folder name suggested")
    check("New folder for the virtual machine" in browser.text("#convert-form"), "the appliance form is not shown")
    browser.find("#convert-folder").clear()
    browser.find("#convert-folder").send_keys(OUTPUT, Keys.TAB)
    browser.click('input[name=compression][value=zstd]')
    browser.wait(lambda: "free in" in browser.text("#convert-space"), 60, "no space estimate for the appliance")
    browser.click("#convert-submit")
    browser.find("#screen-jobs")
    number = newest_job_number(browser)
    card = wait_for_state(browser, number, ("succeeded", "failed"))
    check(card["state"] == "succeeded", f"the appliance job failed: {card['text']}")
    check("libvirt domain" in card["text"], f"no domain XML in {card['text']}")
    browser.click(f'li.job[data-number="{number}"] [data-action="view-xml"]')
    xml = browser.text("dialog[open] pre")
    check("<domain" in xml and "<name>webserver</name>" in xml, f"the domain XML is not shown: {xml[:300]}")
    download = browser.find("dialog[open] a[download]").get_attribute("href")
    check("download=1" in download, f"no download link: {download}")
    browser.check_page("appliance-xml")
    browser.screenshot("appliance-domain-xml")
    browser.driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    browser.wait(lambda: not browser.driver.find_elements(By.CSS_SELECTOR, "dialog[open]"), 10, "Escape did not close the dialog")
    status, headers, body = fetch(download, {"Cookie": f"kdct_token={results['token']}", "Host": f"127.0.0.1:{results['port']}"})
    check(status == 200 and b"<domain" in body and "attachment" in headers.get("Content-Disposition", ""), f"download: {status} {headers}")
    results["appliance_folder"] = os.path.join(OUTPUT, "webserver")


def fill_export(browser, source_folder, source_name, remote_name, auth="key"):
    """The export form: the file chosen in the chooser, the test sshd, signing in with the key file in the
    root's keys folder (or the password: other test runs on a shared machine may change the test account's
    password while this one runs, so the steps that must pass use the key)."""
    open_screen(browser, "export")
    browser.click("#export-source-choose")
    choose_in_picker(browser, os.path.join(ROOT, source_folder), source_name)
    browser.find("#export-host").clear()
    browser.find("#export-host").send_keys("127.0.0.1")
    browser.find("#export-port").clear()
    browser.find("#export-port").send_keys(ENV["KDCT_SSH_PORT"])
    browser.find("#export-user").clear()
    browser.find("#export-user").send_keys(ENV["KDCT_SSH_USER"])
    browser.click(f"input[name=auth][value={auth}]")
    if auth == "password":
        browser.find("#export-password").clear()
        browser.find("#export-password").send_keys(ENV["KDCT_SSH_PASSWORD"])
    else:
        browser.click("#export-key-choose")
        choose_in_picker(browser, os.path.join(ROOT, "keys"), "id_ed25519")
        check(browser.find("#export-key").get_attribute("value") == os.path.join(ROOT, "keys", "id_ed25519"), "the key file is not used")
    browser.find("#export-path").clear()
    browser.find("#export-path").send_keys(os.path.join(REMOTE_DIR, remote_name))


def step_export(browser, results):
    fill_export(browser, "converted", "debian12.qcow2", "debian12.qcow2")
    browser.check_page("export")
    browser.screenshot("export")
    browser.click("#export-submit")
    # First connection: the dialog shows the host key's fingerprint and asks.
    fingerprint = browser.text("dialog[open] #trust-fingerprint")
    check(fingerprint == ENV["KDCT_SSH_FINGERPRINT"], f"the dialog shows {fingerprint}, the host's key is {ENV['KDCT_SSH_FINGERPRINT']}")
    browser.check_page("export-trust")
    browser.screenshot("export-trust-host")
    browser.click("#trust-confirm")
    browser.find("#screen-jobs")
    number = newest_job_number(browser)
    card = wait_for_state(browser, number, ("succeeded", "failed"))
    check(card["state"] == "succeeded", f"the export failed: {card['text']}")
    sha = hashlib.sha256(open(os.path.join(OUTPUT, "debian12.qcow2"), "rb").read()).hexdigest()
    check(sha in card["text"], f"the export's SHA-256 is not shown: {card['text']}")
    name = f"[127.0.0.1]:{ENV['KDCT_SSH_PORT']}"
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", KNOWN_HOSTS], capture_output=True, text=True).stdout
    check(sum(line.startswith("# Host") for line in found.splitlines()) == 1, f"the key was not recorded once: {found}")
    browser.check_page("jobs-export")
    results["remote_file"] = os.path.join(REMOTE_DIR, "debian12.qcow2")
    results["exported_source"] = os.path.join(OUTPUT, "debian12.qcow2")

    # The recorded key replaced by another: the next export is refused in plain words, and nothing is sent.
    known = open(KNOWN_HOSTS).read()
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(scratch, "other")], check=True)
        other = open(os.path.join(scratch, "other.pub")).read().split()[:2]
    # (The file holds only this host's entry, hashed: it is replaced by a plain one with the other key.)
    open(KNOWN_HOSTS, "w").write(f"{name} {other[0]} {other[1]}\n")
    jobs_before = newest_job_number(browser)
    fill_export(browser, "images", "pattern.vdi", "refused.vdi", auth="password")
    browser.click("#export-submit")
    browser.wait(lambda: "has changed" in browser.text("#export-message"), 60, "the changed key was not refused")
    refusal = browser.text("#export-message")
    log(f"refusal: {refusal!r}")
    check(KNOWN_HOSTS in refusal and ENV["KDCT_SSH_FINGERPRINT"] in refusal, f"the refusal lacks the file or key: {refusal}")
    check(not browser.driver.find_elements(By.CSS_SELECTOR, "dialog[open]"), "a changed key must not offer to trust")
    check(not os.path.exists(os.path.join(REMOTE_DIR, "refused.vdi")), "a file was sent to a host with a changed key")
    browser.check_page("export-refused")
    browser.screenshot("export-changed-key")
    open(KNOWN_HOSTS, "w").write(known)
    open_screen(browser, "jobs")
    check(newest_job_number(browser) == jobs_before, "a job was created for a refused host")

    # An export stopped half-way offers Resume; the password (never stored) is asked again, and the upload
    # continues from what the host already has.
    fill_export(browser, "images", "large.raw", "large.raw")
    browser.click("#export-submit")
    browser.find("#screen-jobs")
    number = newest_job_number(browser)
    check(number == jobs_before + 1, "the export was not queued")
    browser.wait(lambda: "Sending" in (job(browser, number) or {}).get("text", "") and job(browser, number)["percent"] > 5,
                 120, "the export never showed its upload")
    browser.click(f'li.job[data-number="{number}"] [data-action="cancel"]')
    browser.click("dialog[open] #dialog-confirm")
    card = wait_for_state(browser, number, ("cancelled", "succeeded", "failed"), 120)
    check(card["state"] == "cancelled" and "Resume" in card["text"], f"the stopped export offers no resume: {card['text']}")
    browser.check_page("jobs-resumable")
    browser.screenshot("jobs-resumable")
    browser.click(f'li.job[data-number="{number}"] [data-action="resume"]')
    # Signed in with a key: the dialog asks for its passphrase (none here).
    secret = browser.find("dialog[open] #dialog-secret")
    check("passphrase" in browser.text("dialog[open]"), "the resume dialog does not ask for the key's passphrase")
    secret.send_keys(Keys.ENTER)
    if browser.driver.find_elements(By.CSS_SELECTOR, "dialog[open]"):
        browser.press("Continue", "dialog[open]")
    wait_for_state(browser, number, ("queued", "running", "succeeded", "failed"), 60)
    card = wait_for_state(browser, number, ("succeeded", "failed", "cancelled"), 300)
    check(card["state"] == "succeeded", f"the resumed export did not finish: {card['text']}")
    check("Continued after" in card["text"], f"the export started over instead of resuming: {card['text']}")
    results["resumed_remote_file"] = os.path.join(REMOTE_DIR, "large.raw")
    results["resumed_source"] = os.path.join(IMAGES, "large.raw")


def step_cancel(browser, results):
    open_screen(browser, "convert")
    source = browser.find("#convert-source")
    source.clear()
    source.send_keys(os.path.join(IMAGES, "large.raw"), Keys.TAB)
    browser.wait(lambda: "Raw disk image" in browser.text("#convert-source-info"), 30, "the raw source is not described")
    browser.find("#convert-folder").clear()
    browser.find("#convert-folder").send_keys(OUTPUT, Keys.TAB)
    browser.click('input[name=compression][value=deflate]')
    browser.click("#convert-submit")
    browser.find("#screen-jobs")
    number = newest_job_number(browser)
    browser.wait(lambda: (job(browser, number) or {}).get("percent", 0) > 0, 120, "the long job never showed progress")
    browser.wait(lambda: "left" in job(browser, number)["text"], 30, "no time left shown")
    card = job(browser, number)
    log(f"running job: {card['text']!r}")
    check("/s" in card["text"] and "left" in card["text"], f"no rate or time left on a running job: {card['text']}")
    browser.check_page("jobs-running")
    browser.screenshot("jobs-running")
    browser.click(f'li.job[data-number="{number}"] [data-action="cancel"]')
    browser.click("dialog[open] #dialog-confirm")
    card = wait_for_state(browser, number, ("cancelled", "succeeded", "failed"), 120)
    check(card["state"] == "cancelled", f"the job was not cancelled: {card['text']}")
    output = os.path.join(OUTPUT, "large.qcow2")
    check(not os.path.exists(output), f"a cancelled job left {output}")
    leftovers = [name for name in os.listdir(OUTPUT) if name.endswith(".part") or name.startswith(".")]
    check(not leftovers, f"temporary files left: {leftovers}")
    results["cancelled_output"] = output


def step_history(browser, results, service):
    open_screen(browser, "jobs")
    before = jobs_shown(browser)
    browser.driver.refresh()
    browser.find("#screen-jobs")
    browser.wait(lambda: len(browser.driver.find_elements(By.CSS_SELECTOR, "#job-list li.job")) >= len(before), 30, "history lost on reload")
    after = jobs_shown(browser)
    check(after == before, f"after a reload the jobs are {after}, were {before}")
    check(sorted(set(after.values())) == ["cancelled", "succeeded"] and len(after) == 5, f"unexpected jobs {after}")
    browser.check_page("jobs-history")
    browser.screenshot("jobs")

    # A restart of the service: a new token, the same job store.
    service.stop()
    service = Service_()
    results["token"], results["port"] = service.token, service.port
    # While the service was down the page's refreshes failed to connect (and said so on the page); nothing else
    # may have gone wrong.
    for entry in browser.driver.get_log("browser"):
        check("ERR_CONNECTION_REFUSED" in entry.get("message", "") or entry.get("level") != "SEVERE",
              f"console error around the restart: {entry}")
    browser.driver.get(service.url)
    browser.find("#nav-jobs")
    open_screen(browser, "jobs")
    browser.wait(lambda: len(browser.driver.find_elements(By.CSS_SELECTOR, "#job-list li.job")) >= len(before), 30, "history lost on restart")
    restarted = jobs_shown(browser)
    check(restarted == before, f"after a restart the jobs are {restarted}, were {before}")
    log(f"history kept across reload and restart: {restarted}")
    return service


def step_looks(browser):
    """Dark mode and a narrow window."""
    browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    open_images_folder(browser)
    browser.press("debian12.vmdk", "#disk-browser")
    browser.find("#disk-facts")
    background = browser.driver.execute_script("return getComputedStyle(document.documentElement).backgroundColor")
    check(background != "rgb(244, 246, 249)", f"dark mode did not change the background ({background})")
    browser.screenshot("dark-disks")
    browser.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
    browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 400, "height": 860, "deviceScaleFactor": 1, "mobile": False})
    open_screen(browser, "jobs")
    browser.find("#job-list li.job")
    overflow = browser.driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    check(overflow <= 0, f"the narrow page scrolls sideways by {overflow} px")
    browser.check_page("narrow-jobs")
    browser.screenshot("narrow-jobs")
    open_screen(browser, "convert")
    overflow = browser.driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    check(overflow <= 0, f"the narrow convert screen scrolls sideways by {overflow} px")
    browser.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})


def main():
    os.makedirs(ARTIFACTS, exist_ok=True)
    results = {}
    results["vmdk_producer"] = ENV["KDCT_VMDK_PRODUCER"]
    service = Service_()
    results["token"], results["port"] = service.token, service.port
    driver = None
    try:
        check_static_files(service)
        driver = make_driver()
        browser = Browser(driver)
        # Without the token the page says how to sign in, and nothing else.
        driver.get(service.base + "/")
        browser.wait(lambda: "token" in browser.text("#signed-out"), 30, "the signed-out page is not shown")
        driver.get_log("browser")  # the 401 of the status request is expected there
        driver.get(service.url)
        check("token=" not in driver.current_url, f"the token stayed in the address bar: {driver.current_url}")
        browser.find("#nav-disks")
        browser.collect_logs()
        step_disks(browser, results)
        step_convert(browser, results)
        step_appliance(browser, results)
        step_export(browser, results)
        step_cancel(browser, results)
        service = step_history(browser, results, service)
        step_looks(browser)
        browser.collect_logs()
        hosts = sorted({urllib.parse.urlparse(url).hostname for url in browser.requests})
        log(f"{len(browser.requests)} requests, all to {hosts}")
        check(hosts == ["127.0.0.1"], f"requests went to {hosts}")
        results["requests"] = len(browser.requests)
    except Exception:
        if driver is not None:
            try:
                Browser(driver).screenshot("failure", artifact_only=True)
                with open(os.path.join(ARTIFACTS, "failure.html"), "w") as handle:
                    handle.write(driver.page_source)
            except Exception:
                pass
        raise
    finally:
        if driver is not None:
            driver.quit()
        if service.process.poll() is None:
            service.stop()
    with open(ENV["KDCT_RESULTS"], "w") as handle:
        json.dump(results, handle)
    log("all steps passed")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"webui-e2e: FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
