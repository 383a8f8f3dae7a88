"""Figures (PNG output, NaN tolerance, no leaked pyplot figures) and the HTML/Markdown report writer."""

import base64
import re
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from neurohorizon.evaluation import figures as F
from neurohorizon.evaluation.report import Section, Table, format_cell, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BIN = 0.020


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) > 5000, f"{path} is suspiciously small ({len(data)} bytes)"
    assert plt.get_fignums() == [], "a pyplot figure was left open"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ figures
def test_plot_decay_with_nan_and_oracle(tmp_path):
    t = np.arange(50)
    curves = {
        "NeuroHorizon (rollout)": 0.3 * np.exp(-t / 20),
        "NeuroHorizon (teacher-forced)": 0.4 * np.exp(-t / 40),
        "persistence": np.where(t % 7 == 0, np.nan, -0.1 + 0.2 * np.exp(-t / 5)),
        "all missing": np.full(12, np.nan),
    }
    out = F.plot_decay(curves, bin_size=BIN, path=tmp_path / "d.png", oracle=np.full(50, 0.5))
    assert out == tmp_path / "d.png"
    assert_png(out)


def test_plot_decay_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no curves"):
        F.plot_decay({}, bin_size=BIN, path=tmp_path / "d.png")
    with pytest.raises(ValueError, match="1-d"):
        F.plot_decay({"m": np.zeros((3, 4))}, bin_size=BIN, path=tmp_path / "d.png")
    with pytest.raises(ValueError, match="bin_size"):
        F.plot_decay({"m": np.zeros(3)}, bin_size=0, path=tmp_path / "d.png")


def _window(rng, Tc=25, T=25, N=30):
    rate = 0.05 + 0.5 * np.exp(-((np.arange(T)[:, None] - rng.uniform(0, T, N)) ** 2) / 20)
    return rng.poisson(0.2, (Tc, N)), rng.poisson(rate), rate, rng.poisson(rate, (16, T, N))


@pytest.mark.parametrize("with_samples", [True, False])
def test_plot_forecast_raster(tmp_path, rng, with_samples):
    context, target, mean, samples = _window(rng)
    mean = mean.copy()
    mean[3, 4] = np.nan  # a missing prediction must not break the heat map or sums
    out = F.plot_forecast_raster(
        context=context,
        target=target,
        mean=mean,
        samples=samples if with_samples else None,
        bin_size=BIN,
        path=tmp_path / "sub" / "r.png",
        max_units=20,
    )
    assert_png(out)


def test_forecast_raster_hatches_bins_past_the_recording(tmp_path, rng, monkeypatch):
    """Unrecorded bins (NaN: a forecast near the recording's end) are not drawn as zero counts."""
    context, target, mean, samples = _window(rng)
    target = target.astype(float)
    target[-5:] = np.nan
    figs = []
    monkeypatch.setattr(F, "_save", lambda fig, path: figs.append(fig) or Path(path))
    F.plot_forecast_raster(context=context, target=target, mean=mean, samples=samples, bin_size=BIN,
                           path=tmp_path / "r.png")
    titles = [ax.get_title(loc="left") for ax in figs[0].axes]
    assert "hatched: not recorded" in titles[0] and not any("hatched" in t for t in titles[1:])
    assert any(p.get_hatch() == "///" for p in figs[0].axes[0].patches)


def test_forecast_raster_unit_choice(rng):
    context, target, mean, _ = _window(rng, N=10)
    assert list(F._choose_units(context, target, mean, [9, 2, 5], 2)) == [9, 2]
    # default: the most active units, ordered by the bin of their predicted peak
    target = np.zeros_like(target)
    context = np.zeros_like(context)
    mean = np.zeros((25, 10))
    mean[20, 7], mean[2, 1], mean[10, 4] = 5.0, 4.0, 3.0
    assert list(F._choose_units(context, target, mean, None, 3)) == [1, 4, 7]
    with pytest.raises(ValueError, match="unit_order"):
        F._choose_units(context, target, mean, [10], 3)


def test_plot_forecast_raster_shape_mismatch(tmp_path, rng):
    context, target, mean, samples = _window(rng)
    with pytest.raises(ValueError, match="shapes disagree"):
        F.plot_forecast_raster(
            context=context,
            target=target,
            mean=mean[:-1],
            samples=None,
            bin_size=BIN,
            path=tmp_path / "r.png",
        )
    with pytest.raises(ValueError, match="samples"):
        F.plot_forecast_raster(
            context=context,
            target=target,
            mean=mean,
            samples=samples[:, :-1],
            bin_size=BIN,
            path=tmp_path / "r.png",
        )


def test_plot_psths(tmp_path, rng):
    T, N = 25, 8
    actual = {c: rng.poisson(0.3, (T, N)) / 1.0 for c in range(3)}
    predicted = {c: np.full((T, N), 0.3) for c in range(3)}
    predicted[1][5:8, 2] = np.nan
    context = {c: np.full((10, N), 0.2) for c in range(3)}
    out = F.plot_psths(
        predicted=predicted,
        actual=actual,
        bin_size=BIN,
        path=tmp_path / "p.png",
        units=[0, 2, 5, 7, 1],
        context=context,
    )
    assert_png(out)
    with pytest.raises(ValueError, match="no prediction"):
        F.plot_psths(
            predicted={0: predicted[0]},
            actual=actual,
            bin_size=BIN,
            path=tmp_path / "q.png",
            units=[0],
        )


def test_psth_smoothing_keeps_the_level_ignores_nan_and_shows_a_spread_of_conditions():
    from neurohorizon.evaluation.metrics import smooth_gaussian

    x = np.zeros((30, 2))
    x[15, 0] = 10.0  # one spike of mass 10
    x[:, 1] = 2.0
    x[3, 1] = np.nan
    y = smooth_gaussian(x, 2.0, axis=0)
    assert y[:, 0].sum() == pytest.approx(10.0, rel=1e-6)  # mass kept away from the edges
    assert y[15, 0] < 10.0 and y[13, 0] > 0  # spread out
    assert np.isnan(y[3, 1]) and np.allclose(np.delete(y[:, 1], 3), 2.0)  # NaN left out, a constant kept
    assert F._spread(list("abcdefgh"), 4) == ["a", "c", "f", "h"]
    assert F._spread(list("abc"), 4) == list("abc")
    assert [F._grid(n) for n in (1, 4, 5, 6, 8, 9)] == [(1, 1), (1, 4), (2, 4), (2, 3), (2, 4), (3, 3)]


def test_plot_calibration(tmp_path, rng):
    fano_pred, fano_obs = rng.uniform(0.8, 1.5, 40), rng.uniform(0.7, 2.0, 40)
    fano_obs[:3] = np.nan
    out = F.plot_calibration(
        nominal=[0.5, 0.8, 0.9],
        path=tmp_path / "c.png",
        coverage={"per-neuron": [0.5, 0.79, 0.9], "population": [0.3, np.nan, 0.8]},
        fano_pred=fano_pred,
        fano_obs=fano_obs,
    )
    assert_png(out)
    with pytest.raises(ValueError, match="coverage"):
        F.plot_calibration(
            nominal=[0.5, 0.9],
            coverage={"x": [0.5]},
            fano_pred=fano_pred,
            fano_obs=fano_obs,
            path=tmp_path / "c2.png",
        )


def test_decay_shows_the_causal_oracle_and_fano_falls_back_to_predicted_only(tmp_path, monkeypatch):
    seen = {}  # what each figure shows, read before _save clears it
    real_save = F._save

    def save(fig, path):
        seen["legend"] = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
        seen["axes"] = [(ax.get_title(), sum(p.get_height() for p in ax.patches)) for ax in fig.axes]
        return real_save(fig, path)

    monkeypatch.setattr(F, "_save", save)
    F.plot_decay({"m": np.full(50, 0.1)}, bin_size=BIN, path=tmp_path / "d.png", oracle=np.full(50, 0.5),
                 causal_oracle=np.full(50, 0.3))
    assert "oracle (true rates)" in seen["legend"] and "causal oracle (best from the past)" in seen["legend"]
    F.plot_calibration(nominal=[0.5], coverage={"per-neuron": [0.4]}, fano_pred=np.r_[1.1, 1.2, np.nan],
                       fano_obs=np.full(3, np.nan), path=tmp_path / "c.png")
    # both finite neurons, as a histogram of the predicted Fano factors
    assert seen["axes"][1] == ("predicted Fano factor per neuron (n=2)", 2)


def test_plot_calibration_all_nan_fano(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarnings from empty reductions
        out = F.plot_calibration(
            nominal=[0.5],
            coverage={"per-neuron": [0.4]},
            fano_pred=np.full(5, np.nan),
            fano_obs=np.full(5, np.nan),
            path=tmp_path / "c.png",
        )
    assert_png(out)


def _bar_rows():
    rows = [
        {"method": m, "horizon_bins": h, "fp_bps": 0.1 * i + 0.01 * h}
        for i, m in enumerate(["NeuroHorizon (rollout)", "PSTH", "null"])
        for h in (12, 25, 50)
    ]
    rows[1]["fp_bps"] = float("nan")
    del rows[2]["fp_bps"]
    return rows


def test_plot_horizon_bars(tmp_path):
    out = F.plot_horizon_bars(_bar_rows(), metric="fp_bps", path=tmp_path / "b.png")
    assert_png(out)
    with pytest.raises(ValueError, match="horizon_bins"):
        F.plot_horizon_bars(
            [{"method": "m", "fp_bps": 1.0}], metric="fp_bps", path=tmp_path / "x.png"
        )


# ------------------------------------------------------------------ tables
def test_format_cell():
    assert format_cell(0.123456) == "0.123"
    assert format_cell(12.3456) == "12.3"
    assert format_cell(0.1) == "0.100"
    assert format_cell(-0.0042) == "-0.00420"
    assert format_cell(123.4) == "123"
    assert format_cell(4567.8) == "4568"
    assert format_cell(2.5e-5) == "2.50e-05"
    assert format_cell(np.float32(0.5)) == "0.500"
    assert format_cell(-4.61e-4, 3) == "0.000" and format_cell(0.1234, 3) == "0.123"  # fixed decimals, no -0.000
    assert format_cell(7, 3) == "7" and format_cell(float("nan"), 3) == "–"
    assert format_cell(np.int64(12)) == "12"
    assert format_cell(float("nan")) == "–"
    assert format_cell(None) == "–"
    assert format_cell(True) == "True"
    assert format_cell("PSTH") == "PSTH"


def test_table_highlight_and_validation():
    t = Table(
        ["method", "bps", "nll"],
        [["a", 0.2, 3.0], ["b", np.nan, 1.0], ["c", 0.5, 1.0]],
        highlight_max=["bps"],
        highlight_min=["nll"],
    )
    best = [[b for _, b in row] for row in t.cells()]
    assert best == [[False, False, False], [False, False, True], [False, True, True]]
    with pytest.raises(ValueError, match="row 0 has 2 cells"):
        Table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="not in"):
        Table(["a"], [[1]], highlight_max=["z"])


# ------------------------------------------------------------------ report
@pytest.fixture(scope="module")
def figure_png(tmp_path_factory):
    """One real PNG outside the report folder."""
    return F.plot_horizon_bars(
        _bar_rows(), metric="fp_bps", path=tmp_path_factory.mktemp("figs") / "bars.png"
    )


def _sections(figure_png, extra_figures=()):
    table = Table(
        ["method", "horizon", "fp-bps"],
        [["NeuroHorizon", 12, 0.31234], ["PSTH | mean", 12, float("nan")], ["null", 12, 0.0]],
        caption="Forecast metrics",
        highlight_max=["fp-bps"],
    )
    return [
        Section(
            "Forecast quality",
            ["Held-out windows <script>alert('x')</script> & more."],
            [table],
            [figure_png, (figure_png, "Bars again")],
        ),
        Section("Notes", ["Second section."], [], list(extra_figures)),
    ]


def test_write_report_html_and_md(tmp_path, figure_png):
    out = tmp_path / "run"
    html_path, md_path = write_report(
        out,
        title="Demo <report>",
        summary=["fp-bps 0.31 at 12 bins (240 ms)"],
        sections=_sections(figure_png),
        metadata={"data": "synthetic:reach", "command": "neurohorizon demo | tee"},
    )
    html = html_path.read_text()
    assert "<title>Demo &lt;report&gt;</title>" in html
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    num = '<td class="num">'
    for name, value in (
        ("NeuroHorizon", "<strong>0.312</strong>"),
        ("PSTH | mean", "–"),
        ("null", "0"),
    ):
        assert f"<tr><td>{name}</td>{num}12</td>{num}{value}</td></tr>" in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2 and base64.b64decode(images[0]) == figure_png.read_bytes()
    assert 'href="#forecast-quality"' in html and 'id="forecast-quality"' in html
    assert "synthetic:reach" in html

    md = md_path.read_text()
    assert "| method | horizon | fp-bps |" in md
    assert "| NeuroHorizon | 12 | **0.312** |" in md
    assert "| PSTH \\| mean | 12 | – |" in md
    assert "\\<script>" in md and "<script>" not in md.replace("\\<script>", "")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links == ["figures/bars.png", "figures/bars.png"]
    assert all((out / link).read_bytes() == figure_png.read_bytes() for link in links)
    assert "`neurohorizon demo \\| tee`" in md


def test_figures_inside_out_dir_stay_and_name_clashes_are_kept_apart(tmp_path, figure_png):
    out = tmp_path / "run"
    inside = F.plot_horizon_bars(_bar_rows()[:3], metric="fp_bps", path=out / "plots" / "bars.png")
    _, md_path = write_report(out, title="t", summary=[], sections=_sections(figure_png, [inside]))
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text())
    assert links == ["figures/bars.png", "figures/bars.png", "plots/bars.png"]
    other = tmp_path / "elsewhere" / "bars.png"  # same name, different content
    other.parent.mkdir()
    other.write_bytes(inside.read_bytes())
    _, md_path = write_report(
        out, title="t", summary=[], sections=_sections(figure_png, [other]), overwrite=True
    )
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_path.read_text())
    assert links[-1] == "figures/bars_1.png"
    assert (out / links[-1]).read_bytes() == other.read_bytes()
    assert (out / "figures" / "bars.png").read_bytes() == figure_png.read_bytes()


def test_write_report_refuses_to_overwrite(tmp_path, figure_png):
    html_path, md_path = write_report(
        tmp_path, title="first", summary=[], sections=_sections(figure_png)
    )
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_report(tmp_path, title="second", summary=[], sections=_sections(figure_png))
    assert "first" in html_path.read_text()
    write_report(
        tmp_path, title="second", summary=[], sections=_sections(figure_png), overwrite=True
    )
    assert "<h1>second</h1>" in html_path.read_text() and md_path.read_text().startswith("# second")


def test_write_report_missing_figure_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="'Broken'.*nope.png"):
        write_report(
            tmp_path / "run",
            title="t",
            summary=[],
            sections=[Section("Broken", figures=[tmp_path / "nope.png"])],
        )
    assert not (tmp_path / "run").exists()


def test_oracle_shares_are_said_next_to_neurohorizons_own_number():
    from neurohorizon.evaluation.evaluation_report import horizon_table

    def block(v, frac=None, causal=None):
        out = {"pooled": {"rollout": {"fp_bps": v}}}
        if frac is not None:
            out["pooled"]["oracle"] = {"fraction_of_oracle": frac, "fraction_of_causal_oracle": causal}
        return out

    results = {"NeuroHorizon": {"12": block(0.128, 0.54, 0.68), "25": block(0.2, 0.6, 0.7)},
               "psth": {"12": block(0.12), "25": block(0.21)}}
    _, lines = horizon_table(results, [12, 25], 0.02)
    assert "**NeuroHorizon** (0.128 bits/spike; 54% of the oracle's bits/spike, 68% of the causal" in lines[0]
    assert lines[0].endswith("ahead of psth (0.120) by 0.008.")
    assert "**psth** (0.210 bits/spike), ahead of NeuroHorizon (0.200) by 0.010; NeuroHorizon reaches 0.200 (60%" \
        in lines[1]
    alone = {"NeuroHorizon": results["NeuroHorizon"]}
    _, lines = horizon_table(alone, [12], 0.02)
    assert lines == ["At 12 bins (240 ms), NeuroHorizon reaches 0.128 bits/spike, 54% of the oracle's bits/spike, "
                     "68% of the causal oracle's (no other method was evaluated)."]


def test_the_margin_to_the_runner_up_has_a_paired_bootstrap_interval():
    from neurohorizon.evaluation.evaluation_report import horizon_table
    from neurohorizon.evaluation.metrics import bits_per_spike

    rng = np.random.default_rng(0)
    rate = rng.gamma(2.0, 0.1, (1, 1, 5))
    y = rng.poisson(np.broadcast_to(rate, (60, 12, 5))).astype(float)
    preds = {"NeuroHorizon": np.broadcast_to(rate, y.shape) * 1.02, "psth": np.broadcast_to(rate, y.shape) * 1.5}
    groups = {m: {0: {"rollout": p, "target": y, "start": np.arange(60.0)}} for m, p in preds.items()}
    bps = {m: bits_per_spike(p, y) for m, p in preds.items()}
    results = {m: {"12": {"pooled": {"rollout": {"fp_bps": v}}}} for m, v in bps.items()}
    _, lines = horizon_table(results, [12], 0.02, groups)
    assert f"by {bps['NeuroHorizon'] - bps['psth']:.3f} (95% CI " in lines[0]
    assert "paired bootstrap over 60 test windows)" in lines[0] and "within sampling error" not in lines[0]
    groups["psth"][0]["rollout"] = preds["NeuroHorizon"] * 1.0001  # a tie
    results["psth"]["12"]["pooled"]["rollout"]["fp_bps"] = bits_per_spike(groups["psth"][0]["rollout"], y)
    _, lines = horizon_table(results, [12], 0.02, groups)
    assert "within sampling error" in lines[0]


def test_predictability_reads_the_first_fall_below_the_threshold():
    from neurohorizon.evaluation.evaluation_report import predictability, predictability_text

    decay = 0.2 * np.exp(-np.arange(50) / 10)  # 20 ms bins: the true curve crosses 0.01 after 600 ms
    pred = predictability(decay, 0.02, smooth_bins=1)
    assert pred["limit_ms"] == 600 and pred["half_life_ms"] == 160  # e^(-7/10) < 1/2 at the 8th bin
    noisy = np.r_[-0.07, 0.02, -0.01, np.full(46, 0.005), 0.5]  # a late spike must not extend the limit
    pred = predictability(noisy, 0.02)
    assert pred["limit_ms"] == 0 and np.isnan(pred["half_life_ms"])
    said = predictability_text(pred)
    assert "at or below 0.01 bits/spike from the first bin on" in said
    assert f"starting at {(-0.07 + 0.02 - 0.01) / 3:.3f} bits/spike; first bin alone: -0.070" in said  # no contradiction
    flat = predictability(np.full(50, 0.1), 0.02)
    assert flat["limit_ms"] == 1000 and "without halving" in predictability_text(flat)
    assert "through the whole 1000 ms evaluated (the longest horizon; it may carry further)" in predictability_text(flat)
    # beside a forecaster without single-trial information, the text says what the context adds
    said = predictability_text(flat, ("the PSTH baseline", predictability(np.full(50, 0.07), 0.02), False))
    assert "the PSTH baseline, which has no single-trial information, averages 0.070" in said
    assert "NeuroHorizon 0.100 (+0.030 from the context's single-trial information)" in said
    # a factor prior reads single-trial latents itself: what is left is the network's, and a gain
    # that rounds to zero is never printed as -0.000
    said = predictability_text(flat, ("the model's rate prior alone", predictability(np.full(50, 0.1004), 0.02), True))
    assert "the condition average moved by single-trial latents it infers from the context" in said
    assert "(+0.000 from the network on top of its prior)" in said and "no single-trial" not in said
    silent_first = predictability(np.r_[np.nan, np.full(49, 0.1)], 0.02)
    assert "first bin: no spikes to score" in predictability_text(silent_first)
    assert "nan" not in predictability_text(silent_first)


def test_report_html_renders_bold_and_code_and_escapes_the_rest(tmp_path):
    html_path, md_path = write_report(tmp_path, title="t", summary=["best is **psth** <b>, run `neurohorizon x`"],
                                      sections=[])
    html = html_path.read_text()
    assert "best is <strong>psth</strong> &lt;b&gt;, run <code>neurohorizon x</code>" in html and "**" not in html
    assert "**psth**" in md_path.read_text()


def test_inline_markup_never_bolds_inside_code():
    from neurohorizon.evaluation.report import _inline

    assert _inline("`**x**` and **y**") == "<code>**x**</code> and <strong>y</strong>"
    assert _inline("**a`b**c`") == "**a<code>b**c</code>"  # unbalanced: left as text, tags nest


def test_decay_curves_get_distinct_colours_and_only_teacher_forced_ones_are_dashed(tmp_path, monkeypatch):
    """Eleven curves (every baseline, the prior, both NeuroHorizon modes) stay distinguishable."""
    figs = []
    monkeypatch.setattr(F, "_save", lambda fig, path: figs.append(fig) or Path(path))
    names = ["NeuroHorizon (rollout)", "NeuroHorizon (teacher-forced)", "teacher_forcing (rollout)",
             *[f"baseline {i}" for i in range(8)]]
    F.plot_decay({n: np.linspace(0.1, 0.0, 12) for n in names}, bin_size=BIN, path=tmp_path / "d.png")
    lines = {line.get_label(): line for line in figs[0].axes[0].get_lines()}
    assert len({lines[n].get_color() for n in names}) == len(names)
    assert [n for n in names if lines[n].get_linestyle() == "--"] == ["NeuroHorizon (teacher-forced)"]


def test_calibration_text_names_the_session_shown_and_lists_every_session():
    from neurohorizon.evaluation.evaluation_report import calibration_sessions_text

    def cal(a, b):
        return {"calibration": {"coverage": {"population": {"pit": {"0.5": a, "0.9": b}}}}}

    one = {"NeuroHorizon": {"50": {"sessions": {"0": cal(0.45, 0.86)}}}}
    assert calibration_sessions_text(one, "50", {"0": "day1"}) == ""
    two = {"NeuroHorizon": {"50": {"sessions": {"0": cal(0.448, 0.858), "1": cal(0.416, 0.834)}}}}
    text = calibration_sessions_text(two, "50", {"0": "day1", "1": "day2"})
    assert "session day1's, the first of 2" in text and "day1 44.8 % / 85.8 %; day2 41.6 % / 83.4 %" in text
