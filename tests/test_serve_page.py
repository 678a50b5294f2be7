"""The chat page in real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium; no
browser is downloaded): type a message, press Send, watch the reply stream in, stop a long one, and keep the
conversation. Skips with the reason when Chromium, its driver or Selenium is missing."""
import json
import os
import shutil

import pytest

import httpx


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
  pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
              allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium)")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def browser():
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
               "--no-first-run", "--disable-extensions"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
  driver.set_page_load_timeout(30)
  yield driver
  driver.quit()


def _health(server) -> dict:
  return httpx.get(server.url + "/health", timeout=30).json()


def test_page_streams_a_reply_keeps_the_conversation_and_stops(serve_server, browser, serve_workdir):
  name = os.path.basename(serve_workdir)
  browser.get(serve_server.url + "/")
  wait = WebDriverWait(browser, 30, poll_frequency=0.05)
  wait.until(lambda d: d.find_element(By.ID, "model").text == name)  # the model name is shown
  # record every text the assistant bubble shows, to see the reply grow token by token
  browser.execute_script("""
    window.seen = [];
    new MutationObserver(() => {
      const last = [...document.querySelectorAll('.assistant')].pop();
      if (last) window.seen.push(last.textContent);
    }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});""")
  browser.find_element(By.ID, "temperature").clear()
  browser.find_element(By.ID, "temperature").send_keys("0")
  browser.find_element(By.ID, "input").send_keys("what is 2 plus 3?")
  browser.find_element(By.ID, "send").click()
  wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".assistant") and d.find_element(By.ID, "send").is_enabled())
  assert not browser.find_elements(By.CSS_SELECTOR, ".error")
  conversation = browser.execute_script("return messages")
  reply = conversation[-1]["content"]
  seen = [s for s in dict.fromkeys(browser.execute_script("return window.seen")) if s]
  assert len(seen) >= 2 and all(reply.startswith(s) for s in seen) and seen[-1] == reply, seen  # streamed

  # the same question over HTTP gives the same greedy reply: the page sent what it should
  body = {"model": name, "temperature": 0, "messages": [{"role": "user", "content": "what is 2 plus 3?"}]}
  expected = httpx.post(serve_server.url + "/v1/chat/completions", json=body, timeout=60).json()
  assert reply == expected["choices"][0]["message"]["content"]

  # a second turn carries the first; Stop (pressed as the request goes out) ends it, the page stays usable
  browser.find_element(By.ID, "input").send_keys("and 4 plus 4?")
  browser.execute_script("document.getElementById('send').click(); document.getElementById('stop').click();")
  wait.until(lambda d: d.find_element(By.ID, "send").is_enabled())
  conversation = browser.execute_script("return messages")
  assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"], json.dumps(conversation)
  assert conversation[0]["content"] == "what is 2 plus 3?" and conversation[1]["content"] == reply
  assert not browser.find_elements(By.CSS_SELECTOR, ".error")
  wait.until(lambda d: _health(serve_server)["running"] == 0)
