"""The pure parts of the LAN sharing bench (``bench/sharing_lan.py``, run by hand as root):
how it reads a byte counter's curve, a line's share, a goal's direction, and nginx's log."""

from __future__ import annotations

from bench import sharing_lan
from bench.netns_mode import body_bytes_by_uri, nginx_conf
from bench.sharing_lan import Row, heavy, lan_span, line_share, origin_phases

MiB = 1 << 20


def test_the_lan_span_runs_from_the_first_bytes_to_the_last_and_says_what_moved_between():
    points = [(0.0, 0), (0.1, 100 * 1024), (0.2, MiB), (0.3, 5 * MiB), (0.4, 10 * MiB - 1024), (0.5, 10 * MiB)]
    first, last, share = lan_span(points, 10 * MiB)
    assert (first, last) == (0.2, 0.4)
    assert share == (10 * MiB - 1024 - MiB) / (10 * MiB)
    assert lan_span(points[:3], 10 * MiB) is None  # never came near the end


def test_a_gigabit_line_moves_125_MB_a_second():
    assert line_share(125_000_000, 1.0, 1000) == 1.0
    assert line_share(1, 0.0, 1000) == 0.0


def test_a_goal_points_up_or_down_and_of_goal_is_at_least_one_when_met():
    rate = Row("1", "c", "m", 0.95, 0.9, True, "")
    late = Row("1", "c", "m", 0.25, 0.2, False, "")
    assert rate.met and rate.of_goal > 1
    assert not late.met and late.of_goal == 0.8


def test_a_row_is_run_again_when_other_work_took_over_half_the_machine():
    assert heavy(0.6) and not heavy(0.5) and not heavy(0.1)
    assert sharing_lan.HEAVY_BUSY == 0.5


def test_nginx_logs_body_bytes_per_uri_and_the_sum_can_start_at_an_offset(tmp_path):
    assert "access_log off;" in nginx_conf(tmp_path, tmp_path, ["10.0.0.1:80"])
    log = tmp_path / "access.log"
    assert f"access_log {log} body_bytes;" in nginx_conf(tmp_path, tmp_path, ["10.0.0.1:80"], access_log=log)
    log.write_text("/a.bin 206 1\n/a.bin 206 1048576\n")
    at = log.stat().st_size
    with open(log, "a") as f:
        f.write("/a.bin 206 10\n/b.bin 200 5\n/none 404 153\n")
    assert body_bytes_by_uri(log) == {"/a.bin": 1048587, "/b.bin": 5, "/none": 153}
    assert body_bytes_by_uri(log, at) == {"/a.bin": 10, "/b.bin": 5, "/none": 153}
    assert body_bytes_by_uri(tmp_path / "missing.log") == {}


def test_the_origins_curve_says_how_long_it_sent_at_full_rate_and_when_that_ended():
    # 1 MiB/s (the links' whole rate) for 2 s, then a trickle of 0.1 MiB/s for 1 s
    points = [(t / 100, t * MiB // 100) for t in range(0, 201)]
    points += [(2 + t / 100, 2 * MiB + t * MiB // 1000) for t in range(1, 101)]
    phases = origin_phases(points, MiB, spawn=0.0, step=0.25)
    assert phases["origin_first_byte_s(after the first spawn)"] == 0.07
    assert phases["origin_full_rate_until_s(after the first spawn)"] == 1.82  # the last whole window
    assert phases["origin_last_byte_s(after the first spawn)"] > 2.3
    assert 0.7 < phases["origin_at_full_rate_share(of first to last, 0.25 s windows)"] < 0.85
    assert origin_phases([(0.0, 0)], 1.0, 0.0) == {}
