"""The shipped Prometheus files, as a user gets them from the installed package (`recorder
prometheus DIR`): promtool checks the rules and the example config, and runs the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed: apt-get install prometheus")


@pytest.fixture(scope="module")
def prom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prometheus")
    r = subprocess.run([sys.executable, "-m", "recorder.cli", "prometheus", str(out)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alerts.yml", "alerts_test.yml", "prometheus.yml"]
    return out


def promtool(*args, cwd):
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@needs_promtool
def test_promtool_check_rules_passes(prom_dir):
    """alerts.yml is valid and holds the six alerts the issue asks for (recorder down included)."""
    r = promtool("check", "rules", "alerts.yml", cwd=prom_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (prom_dir / "alerts.yml").read_text()
    for alert in ("RecorderDown", "RecorderFeedDown", "RecorderFeedStale", "RecorderSubscriptionStale",
                  "RecorderRejectsRising", "RecorderDiskErrors", "RecorderFlushFallingBehind"):
        assert f"alert: {alert}\n" in text


@needs_promtool
def test_promtool_unit_tests_of_the_rules_pass(prom_dir):
    """Every rule fires on its fault and stays quiet otherwise (promtool test rules alerts_test.yml)."""
    r = promtool("test", "rules", "alerts_test.yml", cwd=prom_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


@needs_promtool
def test_the_example_scrape_config_is_valid(prom_dir):
    """prometheus.yml (the README's starting point) passes promtool check config, rules included."""
    r = promtool("check", "config", "prometheus.yml", cwd=prom_dir)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_promtool
def test_a_broken_rule_fails_the_unit_tests(prom_dir, tmp_path):
    """The unit tests can fail: with the subscription threshold raised tenfold, promtool reports it."""
    for name in ("alerts.yml", "alerts_test.yml"):
        shutil.copy(prom_dir / name, tmp_path / name)
    rules = tmp_path / "alerts.yml"
    rules.write_text(rules.read_text().replace("group_left() (2 * recorder_feed_stale_seconds)",
                                               "group_left() (20 * recorder_feed_stale_seconds)"))
    r = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert r.returncode != 0 and "RecorderSubscriptionStale" in r.stdout + r.stderr
