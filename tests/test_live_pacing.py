"""A live job's pacing (worker/live.py `LiveSession.pace`), in-process: it waits while more than
LIVE_MAX_LEAD_S of video is made ahead of playback, and a wait never fails however long its checks take."""
from __future__ import annotations

import time
from types import SimpleNamespace

from django.conf import settings

from worker.live import LiveSession


def paced_session(lead_s: float, check_s: float) -> LiveSession:
    """A session `lead_s` ahead of playback after 8 frames at 8 fps, whose stop check (a database read in
    the worker) takes `check_s`."""
    session = LiveSession.__new__(LiveSession)
    session.fps, session.stop_reason = 8.0, None
    session.first_chunk_at = time.monotonic() - (1.0 - lead_s)  # 8 frames = 1 s of video
    session.run = SimpleNamespace(should_cancel=lambda: False)
    session.job = SimpleNamespace(live_commands=lambda: time.sleep(check_s) or ("a prompt", False))
    return session


def test_a_wait_whose_checks_outlast_the_lead_ends_instead_of_failing():
    """The lead is 10 ms over the limit and the stop check takes 50 ms: the wait used to read the lead
    again after the checks and pass time.sleep a negative length (ValueError: the live job failed; seen
    on a loaded machine). It is read once per turn now."""
    session = paced_session(settings.LIVE_MAX_LEAD_S + 0.01, check_s=0.05)
    t0 = time.monotonic()
    session.pace(8)
    assert time.monotonic() - t0 < 0.5 and session.stop_reason is None


def test_pace_waits_until_playback_catches_up():
    session = paced_session(settings.LIVE_MAX_LEAD_S + 0.3, check_s=0.0)
    t0 = time.monotonic()
    session.pace(8)
    assert 0.25 <= time.monotonic() - t0 < 1.0
    assert session.lead(8) <= settings.LIVE_MAX_LEAD_S
