"""The operations console in a real browser (headless Chromium, Debian's package, driven by
Selenium): sign in, the overview updating itself, a request found by its correlation id, a bulk
job's progress bar moving while its page is open, a dead letter replayed from the page and
applied once, a certificate revoked, and an ``ops:read`` key refused an action. Pages are read
as text; screenshots are kept in a temporary directory (printed) for people, never compared."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from nameko.standalone.rpc import ClusterRpcProxy
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.support import System, poll
from tests.e2e.test_console import completed_student, park

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WAIT = 20.0
SCREENSHOTS = Path(tempfile.mkdtemp(prefix="mensageria-console-"))

pytestmark = pytest.mark.parametrize("system", ["sqlite"], indirect=True)  # one backend: this is about pages


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and CHROMEDRIVER, (
        "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    print(f"console screenshots: {SCREENSHOTS}")
    try:
        yield driver
    finally:
        driver.quit()


def purge_status_dead_letters(system: System) -> None:
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:
        rpc.status.purge_dead_letters()


def page_text(driver: webdriver.Chrome) -> str:
    return " ".join(driver.find_element(By.TAG_NAME, "body").text.split())


def replaced_while_read(exc: WebDriverException) -> bool:
    """A page being replaced by the next one (or a part of it by a live update) while it is read:
    a stale element, or (some Chromium builds) the inspector's word for one."""
    return isinstance(exc, StaleElementReferenceException | NoSuchElementException) or (
        "does not belong to the document" in (exc.msg or "")
    )


def until(driver: webdriver.Chrome, condition, what: str):
    def attempt(d: webdriver.Chrome):
        try:
            return condition(d)
        except WebDriverException as exc:
            if replaced_while_read(exc):
                return False  # look again
            raise

    return WebDriverWait(driver, WAIT).until(attempt, message=what)


def shot(driver: webdriver.Chrome, name: str) -> None:
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def sign_in(driver: webdriver.Chrome, system: System, key: str, start: str = "/ops") -> None:
    driver.delete_all_cookies()
    driver.get(system.base_url + start)
    until(driver, lambda d: "/ops/login" in d.current_url, "redirected to the sign-in page")
    driver.find_element(By.NAME, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(driver, lambda d: "Signed in as" in page_text(d), "signed in")


def test_an_operator_works_through_the_console(browser: webdriver.Chrome, system: System, unique: str) -> None:
    driver = browser
    # a scripted workload first: a completion with a correlation id of its own, mailed and certified
    student, certificate = completed_student(system, unique)
    correlation_id = f"browser-{unique}"
    # completed is final: this one is rejected, and findable by its id
    completion = system.post(
        f"/students/{student['id']}/status", json={"status": "active"}, headers={"X-Request-Id": correlation_id}
    )
    request_id = completion.json()["request_id"]
    system.settled_request(request_id)
    _, key = system.create_key(f"operator {unique}", ["ops:read", "ops:write"])

    sign_in(driver, system, key)
    # the page updates itself: live samples replace the served-at note, then draw the last hour
    until(driver, lambda d: d.find_element(By.ID, "updated").text.endswith("UTC"), "a live sample")
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-chart=applied_per_second] svg path"), "a chart")

    def all_up(d: webdriver.Chrome) -> bool:
        shown = d.find_element(By.TAG_NAME, "main").text
        return all(f"{service}\nup" in shown for service in ("students", "status", "certificates", "notifications"))

    until(driver, all_up, "every service up, as the live samples say")
    shot(driver, "1-overview")

    # find the request by its correlation id, open it
    driver.find_element(By.LINK_TEXT, "Requests").click()
    driver.find_element(By.NAME, "correlation_id").send_keys(correlation_id)
    driver.find_element(By.CSS_SELECTOR, "form.filters button").click()
    until(driver, lambda d: request_id in page_text(d), "the request listed")
    driver.find_element(By.LINK_TEXT, request_id).click()
    until(driver, lambda d: "What followed" in page_text(d), "the request's page")
    assert "rejected" in page_text(driver) and correlation_id in page_text(driver)
    shot(driver, "2-request")

    # a bulk job's progress bar moves while its page is open
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:
        others = [system.create_student(f"{unique}-job{n}") for n in range(3)]
        job = rpc.status.create_job(actor="browser test")
        rows = [
            [n + 1, other["id"], "active" if n // 3 % 2 == 0 else "suspended", None]
            for n, other in zip(range(300), others * 100, strict=True)
        ]
        rpc.status.add_job_rows(job["job_id"], job["upload"], rows, [])
        driver.get(f"{system.base_url}/ops/jobs/{job['job_id']}")
        progress = driver.find_element(By.ID, "progress")
        assert progress.get_attribute("value") == "0" and "receiving" in page_text(driver)
        rpc.status.seal_job(job["job_id"], job["upload"], len(rows))
    until(driver, lambda d: d.find_element(By.ID, "job-state").text == "done", "the job done, without a reload")
    assert progress.get_attribute("value") == progress.get_attribute("max") == "300"
    shot(driver, "3-job")

    # a dead letter replayed from its page, applied once
    replayed_request = str(uuid.uuid4())
    change = {"request_id": replayed_request, "student_id": others[0]["id"], "status": "withdrawn"}
    park(system, {"requests": [change]}, f"OperationalError: disk full ({unique})", f"browser-dl-{unique}")
    driver.get(f"{system.base_url}/ops/dead-letters/status?error={unique}")
    until(driver, lambda d: "1 message(s) match" in page_text(d), "the dead letter found")
    shot(driver, "4-dead-letter")
    driver.find_element(By.XPATH, "//form[contains(@action, '/replay')]/button[text()='Replay']").click()
    until(driver, lambda d: "Replayed" in page_text(d), "replayed")
    assert system.settled_request(replayed_request)["state"] == "applied"
    history = system.get(f"/students/{others[0]['id']}/history", params={"limit": 500}).json()["items"]
    assert [entry["request_id"] for entry in history].count(replayed_request) == 1

    # a certificate revoked with a reason
    driver.get(f"{system.base_url}/ops/certificates?code={certificate['code']}")
    driver.find_element(By.NAME, "reason").send_keys(f"revoked in the browser {unique}")
    driver.find_element(By.XPATH, "//button[text()='Revoke']").click()
    until(driver, lambda d: "is revoked" in page_text(d), "revoked")
    assert system.get(f"/certificates/{certificate['code']}").json()["status"] == "revoked"
    shot(driver, "5-certificate")


def test_a_read_only_key_sees_no_action_and_is_refused_one(
    browser: webdriver.Chrome, system: System, unique: str, request: pytest.FixtureRequest
) -> None:
    driver = browser
    _, certificate = completed_student(system, unique)
    park(system, {"requests": []}, f"ValidationFailed: empty ({unique})", f"browser-ro-{unique}")
    request.addfinalizer(lambda: purge_status_dead_letters(system))  # the system is shared: leave none
    _, key = system.create_key(f"reader {unique}", ["ops:read"])
    sign_in(driver, system, key, f"/ops/dead-letters/status?error={unique}")
    until(driver, lambda d: "1 message(s) match" in page_text(d), "the dead letter listed")
    assert "(read only)" in page_text(driver)
    assert not driver.find_elements(By.XPATH, "//button[text()='Replay']")
    driver.get(f"{system.base_url}/ops/certificates?code={certificate['code']}")
    assert not driver.find_elements(By.XPATH, "//button[text()='Revoke']")
    # the same form a writer would post, made by hand in the page: refused, with the reason
    csrf = driver.find_element(By.CSS_SELECTOR, "input[name=csrf]").get_attribute("value")
    driver.execute_script(
        """const form = document.createElement("form");
        form.method = "post"; form.action = arguments[0];
        for (const [name, value] of [["csrf", arguments[1]], ["reason", "not mine to revoke"]]) {
          const input = document.createElement("input"); input.name = name; input.value = value; form.append(input);
        }
        document.body.append(form); form.submit();""",
        f"/ops/certificates/{certificate['code']}/revocation",
        csrf,
    )
    until(driver, lambda d: "Not allowed" in page_text(d), "refused")
    assert "lacks the scope ops:write" in page_text(driver)
    shot(driver, "6-refused")
    assert poll(lambda: system.get(f"/certificates/{certificate['code']}").json()["status"], bool) == "valid"


def test_the_page_a_scanned_qr_code_opens_in_a_browser(browser, system: System, unique: str) -> None:
    student, certificate = completed_student(system, unique)
    browser.delete_all_cookies()  # anyone: no key, no session
    browser.get(certificate["verification_url"] + "?lang=pt_BR")
    until(browser, lambda d: d.find_element(By.ID, "verdict").text, "the verdict")
    shot(browser, "certificate-pt")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "pt-BR"
    assert browser.find_element(By.ID, "verdict").text == "Válido"
    assert browser.find_element(By.ID, "name").text == student["name"]
    assert browser.find_element(By.ID, "course").text == certificate["course"]
    assert student["email"] not in browser.page_source
    assert browser.find_element(By.ID, "pdf").get_attribute("href") == certificate["pdf_url"]
    assert browser.find_element(By.ID, "credential").get_attribute("href") == certificate["credential_url"]

    browser.find_element(By.LINK_TEXT, "English").click()  # the language switch
    until(browser, lambda d: d.find_element(By.ID, "verdict").text == "Valid", "the English page")
    assert "tools.verify_certificate" in page_text(browser)
    shot(browser, "certificate-en")

    browser.get(system.base_url + "/certificates/" + "C" * 32 + "?lang=en")
    until(browser, lambda d: "Certificate not found" in d.title, "the not-found page")
