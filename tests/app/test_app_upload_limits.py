"""What one upload may cost the app's server: Streamlit's upload size limit from the checkout's
.streamlit/config.toml wherever the app starts, the query pixel limit, and decodes bounded server-wide."""

import subprocess
import sys
import threading
import time

from app_helpers import APP, REPO


def test_the_checkouts_streamlit_config_limits_uploads_wherever_the_app_is_started(tmp_path):
    """`streamlit run /path/streamlit_app.py` from another folder reads the .streamlit/ beside the script
    (set up as streamlit's own `run` does: config._main_script_path); the browser test sees the limit
    in the page of a server started from another folder."""
    probe = ("import sys; from streamlit import config; config._main_script_path = sys.argv[1]; "
             "config.get_config_options(force_reparse=True); print(config.get_option('server.maxUploadSize'))")
    assert "maxUploadSize = 50" in (REPO / ".streamlit" / "config.toml").read_text()
    elsewhere = subprocess.run([sys.executable, "-c", probe, str(APP)], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert elsewhere.stdout.split()[-1] == "50"


def test_uploads_are_decoded_at_most_two_at_a_time_whatever_the_sessions(monkeypatch):
    from app_pages import common

    running, most = [0], [0]
    lock = threading.Lock()

    def slow_decode(data, name):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return name

    monkeypatch.setattr(common, "load_image_bytes", slow_decode)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(common.decode_upload(b"x", f"{i}.png"))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(f"{i}.png" for i in range(8))
    assert most[0] == common.UPLOAD_DECODES_AT_ONCE == 2
