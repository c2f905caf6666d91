"""The CSV readers (sources/csv_files.py): a BSC power trace split at its gaps and back-jumps,
the plain CSV format written and read back, some telemetry columns, a bad header named."""
from __future__ import annotations

import numpy as np
import pytest
from helpers.series import T0, component_series

from rackpower_nodes.core.forecast.features import WindowSpec, build_windows
from rackpower_nodes.core.forecast.series import DatasetError
from rackpower_nodes.sources.csv_files import from_bsc_csv, from_plain_csv, write_plain_csv


def test_from_bsc_csv_web_search(shared_data):
    path = shared_data / "bsc-power" / "AMD_Opteron_6140" / "web_search.csv"
    series = from_bsc_csv(path)
    assert len(series) == 3                       # a back-jump and a gap split the file
    assert {s.component for s in series} == {"AMD_Opteron_6140/web_search"}
    assert sum(len(s) for s in series) == 998      # 2 s rows, one per step
    for s in series:
        assert s.step_s == 2.0 and s.t0_unix % 2.0 == 0.0
        assert np.isfinite(s.power_w).all() and 74.0 <= s.power_w.min()
        assert np.all((s.telemetry[:, 0] >= 0) & (s.telemetry[:, 0] <= 1))
        assert np.isnan(s.telemetry[:, 1]).all()               # no memory total
        assert np.isfinite(s.telemetry[:, [0, 2, 3, 4, 5]]).all()
    assert 0 < series[0].idle_w < series[0].max_w <= 304.0
    ws = build_windows(series, WindowSpec(step_s=2.0, history_steps=30, horizon_steps=3,
                                          coarse=(5, 30)))
    assert len(ws) > 0 and np.isfinite(ws.x).all()


def test_plain_csv_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    tel = rng.uniform(0, 1, (40, 6)) * [1, 1, 1e6, 1e6, 1e7, 1e7]
    tel[5:9, 2] = np.nan
    a = component_series(rng.uniform(80, 190, 40), telemetry=tel, name="srv,01")
    b = component_series(rng.uniform(150, 160, 25), t0=T0 + 100.0, name="tor-a", idle_w=140.0)
    path = write_plain_csv(tmp_path / "trace.csv", [a, b])
    back = from_plain_csv(path, 0.1, specs={"srv,01": (50.0, 200.0), "tor-a": (140.0, 200.0)})
    assert [(s.component, s.t0_unix, len(s)) for s in back] == [
        ("srv,01", T0, 40), ("tor-a", T0 + 100.0, 25)]
    for got, want in zip(back, (a, b), strict=True):
        np.testing.assert_array_equal(got.power_w, want.power_w)
        np.testing.assert_array_equal(got.telemetry, want.telemetry)
        assert (got.idle_w, got.max_w) == (want.idle_w, want.max_w)


def test_plain_csv_with_some_telemetry_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("time_s,component,power_w,cpu_util\n"
                    "0.0,a,100,0.5\n0.1,a,110,\n0.2,a,120,0.7\n5.0,a,90,0.1\n")
    series = from_plain_csv(path, 0.1)
    assert [len(s) for s in series] == [3, 1]
    np.testing.assert_allclose(series[0].telemetry[:, 0], [0.5, np.nan, 0.7])
    assert np.isnan(series[0].telemetry[:, 1:]).all()


@pytest.mark.parametrize("header", ["time_s,power_w,component", "time_s,component,power_w,foo",
                                    "time_s,component,power_w,cpu_util,cpu_util"])
def test_plain_csv_rejects_a_bad_header(tmp_path, header):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n")
    with pytest.raises(DatasetError, match="header"):
        from_plain_csv(path, 0.1)
