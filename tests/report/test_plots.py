"""report.plots: real image files whose pixels show the bands, for awkward series too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from report_cases import Case, write_case

from batchcast.errors import ConfigError
from batchcast.report.plots import (
    ACTUAL_COLOR,
    HISTORY_COLOR,
    MEDIAN_COLOR,
    Panel,
    band_colors,
    band_pairs,
    collect_panels,
    default_positions,
    parse_items,
    plot_forecasts,
    render,
)

LEGEND_PIXELS = 400  # a legend swatch is ~20 x 10 px: a band must cover far more than that


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


def _pixels_of(image: np.ndarray, color: str) -> int:
    """How many pixels of a PNG read by matplotlib have exactly ``color``."""
    rgb = np.round(image[..., :3] * 255).astype(np.int16)
    return int((np.abs(rgb - _rgb(color)).max(axis=-1) <= 1).sum())


def _read_png(path: Path) -> np.ndarray:
    from matplotlib import image

    return image.imread(str(path))


def test_band_pairs_and_colours() -> None:
    keys = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    pairs = band_pairs(keys)
    assert [(lo, hi) for lo, hi, _ in pairs] == [("0.1", "0.9"), ("0.2", "0.8"), ("0.3", "0.7"),
                                                 ("0.4", "0.6")]  # fmt: skip
    assert pairs[0][2] == pytest.approx(0.8)
    assert band_pairs(["0.25", "0.5", "0.75", "0.05", "0.95"])[1][2] == pytest.approx(0.5)
    assert band_pairs(["0.5", "0.9"]) == []
    colours = band_colors(4)
    assert len(set(colours)) == 4
    # lighter first: the sum of RGB decreases towards the centre
    assert [int(_rgb(c).sum()) for c in colours] == sorted(
        (int(_rgb(c).sum()) for c in colours), reverse=True
    )


def test_png_shows_every_band_history_median_and_actuals(case: Case, tmp_path: Path) -> None:
    out = tmp_path / "fan.png"
    panels = plot_forecasts(
        str(case.input), str(case.forecasts), str(out), actuals=str(case.actuals),
        items=[10, 20],
    )  # fmt: skip
    assert [p.title for p in panels] == ["item-10 (line 11)", "item-20 (line 21)"]
    image = _read_png(out)
    assert image.shape[:2] == (300, 1000)  # two panels of 5 x 3 inches at 100 dpi
    for colour in band_colors(4):
        assert _pixels_of(image, colour) > LEGEND_PIXELS, colour
    for colour in (MEDIAN_COLOR, HISTORY_COLOR, ACTUAL_COLOR):
        assert _pixels_of(image, colour) > 30, colour


def test_nan_short_and_empty_targets_still_draw(tmp_path: Path) -> None:
    """Line 1 has an empty target, line 2 one point, line 3 two; line 6 an all-NaN horizon;
    a history with NaNs elsewhere (write_case). Each panel still gets its bands."""
    case = write_case(tmp_path, n=8)
    lines = case.input.read_bytes().splitlines()
    record = orjson.loads(lines[7])
    record["target"] = ["NaN"] * len(record["target"])  # an all-missing history
    lines[7] = orjson.dumps(record)
    case.input.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "edge.png"
    panels = plot_forecasts(str(case.input), str(case.forecasts), str(out),
                            actuals=str(case.actuals), items=[0, 1, 2, 5, 7])  # fmt: skip
    assert panels[0].history.size == 0
    assert panels[1].history.size == 1
    assert np.isnan(panels[3].actual).all()  # type: ignore[arg-type]
    image = _read_png(out)
    assert image.shape[:2] == (600, 1500)  # a 3 x 2 grid
    assert _pixels_of(image, band_colors(4)[0]) > 5 * LEGEND_PIXELS  # bands in every panel
    assert _pixels_of(image, HISTORY_COLOR) > 0  # the lone point of line 2 is marked


def test_error_line_becomes_a_note_not_a_crash(tmp_path: Path) -> None:
    case = write_case(tmp_path, n=3)
    lines = case.forecasts.read_bytes().splitlines()
    lines[1] = orjson.dumps({"error": {"line": 2, "field": "target", "message": "bad target"}})
    case.forecasts.write_bytes(b"\n".join(lines) + b"\n")
    panels = collect_panels(str(case.input), str(case.forecasts), items=[0, 1])
    assert panels[1].quantiles is None
    assert panels[1].note is not None
    assert "bad target" in panels[1].note
    image = render(panels[1:])
    assert image.startswith(b"\x89PNG")


def test_actuals_pair_by_item_id_past_an_unreadable_first_line(tmp_path: Path) -> None:
    """A bad first actual line (no item_id) must not switch the actuals to line order; and
    in line order, a line of another item_id is never drawn as this series' actuals."""
    case = write_case(tmp_path, n=6, forward_item_id=True)
    lines = case.actuals.read_bytes().splitlines()
    # reversed, behind one unreadable line: only item_id can pair them
    case.actuals.write_bytes(b"\n".join([b"{not json", *reversed(lines)]) + b"\n")
    panels = collect_panels(
        str(case.input), str(case.forecasts), actuals=str(case.actuals), items=[3, 4]
    )
    for panel, b in zip(panels, (3, 4), strict=True):
        assert panel.actual is not None
        np.testing.assert_array_equal(panel.actual, case.horizon[b])
    # line order (the first readable actual has no id), the lines reversed after it: line 2
    # holds another item_id than input line 2, so it is not drawn as that series' actuals
    first = orjson.loads(lines[0])
    del first["item_id"]
    rest = list(reversed(lines[1:]))
    case.actuals.write_bytes(b"\n".join([orjson.dumps(first), *rest]) + b"\n")
    panels = collect_panels(
        str(case.input), str(case.forecasts), actuals=str(case.actuals), items=[0, 1]
    )
    np.testing.assert_array_equal(panels[0].actual, case.horizon[0])  # its own line 1
    assert panels[1].actual is None


@pytest.mark.parametrize(("suffix", "magic"), [("svg", b"<?xml"), ("pdf", b"%PDF")])
def test_format_follows_the_extension(case: Case, tmp_path: Path, suffix: str,
                                      magic: bytes) -> None:  # fmt: skip
    out = tmp_path / f"fan.{suffix}"
    plot_forecasts(str(case.input), str(case.forecasts), str(out), items=[4])
    assert out.read_bytes().startswith(magic)


def test_unknown_extension_is_refused(case: Case, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.png, \.svg or \.pdf"):
        plot_forecasts(str(case.input), str(case.forecasts), str(tmp_path / "fan.gif"))


def test_items_by_id_and_position(case: Case) -> None:
    panels = collect_panels(str(case.input), str(case.forecasts), items=["item-7", 3, "item-19"])
    assert [p.title for p in panels] == ["item-3 (line 4)", "item-7 (line 8)",
                                         "item-19 (line 20)"]  # fmt: skip
    np.testing.assert_array_equal(panels[1].history, case.history[7].astype(np.float32))
    with pytest.raises(ConfigError, match="99, item-404"):
        collect_panels(str(case.input), str(case.forecasts), items=[99, "item-404"])


def test_default_items_spread_over_the_file(case: Case) -> None:
    assert default_positions(24) == [0, 5, 9, 14, 18, 23]
    assert default_positions(3) == [0, 1, 2]
    assert default_positions(0) == []
    panels = collect_panels(str(case.input), str(case.forecasts))
    assert next(p.title for p in panels) == "item-0 (line 1)"
    assert len(panels) == 6


def test_parse_items() -> None:
    assert parse_items("0,5,item-42") == [0, 5, "item-42"]
    assert parse_items(" 3 , a b ,") == [3, "a b"]
    with pytest.raises(ConfigError):
        parse_items(" , ")


def test_same_chart_same_bytes(case: Case) -> None:
    panels = collect_panels(str(case.input), str(case.forecasts), items=[9])
    assert render(panels) == render(panels)


def test_no_panel_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nothing to plot"):
        render([])
    assert render([Panel("empty", np.zeros(0))]).startswith(b"\x89PNG")
