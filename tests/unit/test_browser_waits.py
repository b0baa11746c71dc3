"""The browser tests' waits look again when a page is replaced while it is read, and only then:
Chromium reports it as a stale element, or in some builds as an inspector error."""

from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

from tests.e2e.test_console_browser import replaced_while_read

INSPECTOR = (
    'unknown error: unhandled inspector error: {"code":-32000,'
    '"message":"Node with given id does not belong to the document"}'
)


def test_a_page_replaced_while_read_is_looked_at_again():
    assert replaced_while_read(StaleElementReferenceException("stale element reference"))
    assert replaced_while_read(WebDriverException(INSPECTOR))


def test_any_other_browser_error_ends_the_wait():
    assert not replaced_while_read(WebDriverException("invalid session id"))
    assert not replaced_while_read(WebDriverException(None))
