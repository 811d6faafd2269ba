import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from trainables.data import ohlc as ohlc_data
from trainables.data import synthetic_ohlc as synthetic


def _write(tmp_path, ohlc, name="w.parquet", **extra):
    table = ohlc_data.windows_table(ohlc, [f"w{i}" for i in range(len(ohlc))], **extra)
    path = tmp_path / name
    pq.write_table(table, path)
    return str(path)


def test_roundtrip_and_synthetic_invariants(tmp_path):
    data = synthetic.generate(50, 105, seed=3)
    ohlc_data.check_invariants(data["ohlc"], "synthetic")
    path = _write(tmp_path, data["ohlc"])
    w = ohlc_data.load_windows(path, 105)
    assert w.ohlc.shape == (50, 105, 4)
    np.testing.assert_allclose(w.ohlc, data["ohlc"].astype(np.float32))


def test_synthetic_is_seeded_and_has_planted_spans():
    a, b = synthetic.generate(20, 60, 7), synthetic.generate(20, 60, 7)
    np.testing.assert_array_equal(a["ohlc"], b["ohlc"])
    assert (a["expansion_start"] < a["expansion_end"]).all()
    assert set(a["label"]) <= set(synthetic.LABELS)


def test_nan_rows_are_named(tmp_path):
    ohlc = synthetic.generate(10, 30, 0)["ohlc"]
    ohlc[4, 3, 2] = np.nan
    with pytest.raises(ValueError, match=r"row 4: NaN"):
        ohlc_data.load_windows(_write(tmp_path, ohlc), 30)


def test_broken_invariant_rows_are_named(tmp_path):
    ohlc = synthetic.generate(10, 30, 0)["ohlc"]
    ohlc[2, 5, 1] = ohlc[2, 5, 2] - 1.0  # high below low
    ohlc[7, 1, 2] = ohlc[7, 1, 1] + 5.0  # low above high
    with pytest.raises(ValueError, match=r"rows 2, 7: OHLC invariant broken"):
        ohlc_data.load_windows(_write(tmp_path, ohlc), 30)


def test_wrong_window_length_and_bar_width(tmp_path):
    path = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table({"window_id": ["a", "b"], "ohlc": [[[1, 2, 0.5, 1.5]] * 30, [[1, 2, 0.5, 1.5]] * 29]}), path
    )
    with pytest.raises(ValueError, match=r"row 1: window has 29 bars; expected 30"):
        ohlc_data.load_windows(str(path), 30)
    path2 = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"window_id": ["a"], "ohlc": [[[1, 2, 0.5]] * 30]}), path2)
    with pytest.raises(ValueError, match=r"expected 4 \(open, high, low, close\)"):
        ohlc_data.load_windows(str(path2), 30)


def test_missing_columns_and_not_parquet(tmp_path):
    path = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"id": ["a"]}), path)
    with pytest.raises(ValueError, match=r"missing column\(s\) window_id, ohlc"):
        ohlc_data.load_windows(str(path))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        ohlc_data.load_windows(str(junk))


def test_normalise_keeps_ordering_and_scale_free():
    ohlc = synthetic.generate(8, 40, 1)["ohlc"]
    z = ohlc_data.normalise(ohlc)
    ohlc_data.check_invariants(z, "z")
    np.testing.assert_allclose(z.mean(axis=(1, 2)), 0, atol=1e-9)
    np.testing.assert_allclose(ohlc_data.normalise(ohlc * 37.0 + 0.0), z, atol=1e-6)


def test_csv_converter(tmp_path, cli):
    data = synthetic.generate(1, 300, 0)["ohlc"][0]
    df = pd.DataFrame(data, columns=["Open", "High", "Low", "Close"])
    df.insert(0, "timestamp", pd.date_range("2024-01-01", periods=300, freq="min"))
    csv = tmp_path / "prices.csv"
    df.iloc[::-1].to_csv(csv, index=False)  # unordered: the converter sorts by timestamp
    out = tmp_path / "windows.parquet"
    code, stdout, err = cli("data", "windows", csv, "--out", out, "--length", "105", "--stride", "10")
    assert code == 0, err
    w = ohlc_data.load_windows(str(out), 105)
    assert len(w) == (300 - 105) // 10 + 1
    np.testing.assert_allclose(w.ohlc[1], data[10:115].astype(np.float32))
    assert list(w.start[:3]) == [0, 10, 20]


def test_csv_converter_errors_are_one_line(tmp_path, cli):
    csv = tmp_path / "bad.csv"
    csv.write_text("open,high,low,close\n1,2,0.5,1.5\n1,0.9,0.5,1.5\n")
    code, _, err = cli("data", "windows", csv, "--out", tmp_path / "o.parquet", "--length", "2")
    assert code == 2 and "line 3" in err and "invariant" in err and "Traceback" not in err
    csv.write_text("open,high,close\n1,2,1.5\n")
    code, _, err = cli("data", "windows", csv, "--out", tmp_path / "o.parquet")
    assert code == 2 and "missing column(s) low" in err
