"""The page at / in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium): upload an image,
read the text off the page."""

import shutil
from pathlib import Path

import pytest

from test_serve import IMAGES, multipart, png, request, start_server

pytest.importorskip('selenium', reason="selenium is not installed: pip install -e '.[test]'")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which('chromium')
CHROMEDRIVER = shutil.which('chromedriver')


@pytest.fixture
def browser(tmp_path: Path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip('Chromium is not installed (apt-get install chromium chromium-driver)')
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        f'--user-data-dir={tmp_path / "profile"}',
    ):
        options.add_argument(flag)
    # The driver named explicitly: Selenium Manager would otherwise look for one on the network.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_page_reads_an_uploaded_image(browser, tmp_path):
    with start_server('clip4str-tiny') as url:
        # The API's reading of the same files, to compare with the page's.
        api = request(url + '/read', *multipart([png(p) for p in IMAGES[:2]]))[1]['results']
        browser.get(url + '/')
        WebDriverWait(browser, 30).until(lambda b: 'clip4str-tiny' in b.find_element(By.ID, 'info').text)
        upload = browser.find_element(By.ID, 'files')
        upload.send_keys('\n'.join(str(p) for p in IMAGES[:2]))
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, 'tr.result')) == 2)
        rows = browser.find_elements(By.CSS_SELECTOR, 'tr.result')
        names = [row.find_elements(By.TAG_NAME, 'td')[3].text for row in rows]
        texts = [row.find_element(By.CSS_SELECTOR, 'td.text').text for row in rows]
        assert sorted(zip(names, texts)) == sorted((r['name'], r['text']) for r in api)
        assert all(0 < float(row.find_element(By.CSS_SELECTOR, 'td.confidence').text) <= 1 for row in rows)
        # Characters under the threshold are marked: at 1 all but those read with probability 1.0, at 0 none.
        below_one = sum(c['confidence'] < 1 for r in api for c in r['characters'])
        threshold = browser.find_element(By.ID, 'threshold')
        for value, marked in (('1', below_one), ('0', 0)):
            threshold.clear()
            threshold.send_keys(value)
            WebDriverWait(browser, 10).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, 'td.text .low')) == marked)
        # Nothing but the server was asked for (no CDN, no fonts from elsewhere).
        fetched = browser.execute_script('return performance.getEntriesByType("resource").map(e => e.name)')
        assert fetched and all(u.startswith(url) or u.startswith('blob:') for u in fetched), fetched
        # A refused upload shows the server's error.
        bad = tmp_path / 'notes.txt'
        bad.write_text('not an image')
        upload.send_keys(str(bad))
        WebDriverWait(browser, 30).until(lambda b: 'not an image' in b.find_element(By.ID, 'status').text)
