"""report.html of ``vqaudio eval``: the example rule, the page's content, and the page in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from browser import Browser, is_blank, requires_chromium
from conftest import make_tiny_tokenizer, speech_like

import vqaudio.evaluation.evaluate as evaluate_module
import vqaudio.evaluation.report as report_module
from vqaudio.evaluation import metrics
from vqaudio.evaluation.baselines import default_baselines
from vqaudio.evaluation.evaluate import EvalOptions, choose_examples, run_evaluation
from vqaudio.evaluation.results import SystemResult, SystemSpec

SAMPLE_RATE = 16000
# one setting of each installed codec keeps the run short; every setting has the same page code
BASELINES = [
    next(b for b in default_baselines() if b.codec == codec and not b.missing_tools())
    for codec in ("codec2", "opus")
    if any(b.codec == codec and not b.missing_tools() for b in default_baselines())
]
INSTALLED_BASELINES = [b.name for b in BASELINES]
CLIP_SECONDS = {"a": 1.2, "b": 2.0, "c": 1.6, "d": 2.4, "e": 1.0}


# --------------------------------------------------------------------------------------------------
# The rule that chooses the examples
# --------------------------------------------------------------------------------------------------
def _system(values: dict[str, float], metric: str = "pesq_wb") -> SystemResult:
    system = SystemResult(SystemSpec("vqaudio_nq8", "vqaudio", 4.4, 8, 450.0, None))
    for utterance_id, value in values.items():
        scores = dict.fromkeys(metrics.METRICS, math.nan)
        scores.update({metric: value, "mel_distance": 1.0 - value / 10})
        system.scores[utterance_id] = metrics.ClipScores(**scores, failures=())
    return system


def test_examples_are_the_median_worst_and_best_then_quartiles() -> None:
    values = {f"u{index}": float(value) for index, value in enumerate([3.1, 1.2, 2.5, 4.0, 1.9, 2.2, 3.6])}
    # ranked worst first: u1 1.2, u4 1.9, u5 2.2, u2 2.5, u0 3.1, u6 3.6, u3 4.0
    choice = choose_examples(_system(values), 3)
    assert choice is not None and choice.metric == "pesq_wb" and choice.candidates == 7
    assert choice.roles == {"u1": "worst", "u2": "median", "u3": "best"}  # worst first
    assert choice.values == {"u1": 1.2, "u2": 2.5, "u3": 4.0}
    five = choose_examples(_system(values), 5)
    assert five is not None
    assert list(five.roles.items()) == [
        ("u1", "worst"),
        ("u5", "percentile 25"),  # rank floor(0.25 * 6 + 0.5) = 2
        ("u2", "median"),
        ("u6", "percentile 75"),
        ("u3", "best"),
    ]
    everything = choose_examples(_system(values), 50)  # more than there are: each once
    assert everything is not None and len(everything.roles) == 7
    assert choose_examples(_system(values), 0) is None
    quiet = choose_examples(_system(values), 3, exclude={"u1", "u3"})  # silent clips are never chosen
    assert quiet is not None and quiet.roles == {"u4": "worst", "u2": "median", "u6": "best"}


def test_examples_fall_back_to_stoi_then_mel_distance_lower_being_better() -> None:
    stoi = choose_examples(_system({"x": 0.9, "y": 0.7, "z": 0.8}, metric="stoi"), 2)
    assert stoi is not None and stoi.metric == "stoi" and stoi.roles == {"y": "worst", "z": "median"}
    only_mel = _system({"x": math.nan, "y": math.nan})  # PESQ failed everywhere; mel = 1 - nan/10 = nan
    for utterance_id, distance in (("x", 0.3), ("y", 0.6)):
        only_mel.scores[utterance_id] = only_mel.scores[utterance_id]._replace(mel_distance=distance)
    mel = choose_examples(only_mel, 2)
    assert mel is not None and mel.metric == "mel_distance"
    assert mel.roles == {"y": "worst", "x": "best"}  # the larger distance is the worse clip
    assert choose_examples(_system({}), 3) is None


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model's report on five speech-like clips and a silent one, with the installed baselines."""
    corpus = tmp_path_factory.mktemp("html_corpus")
    for index, (name, seconds) in enumerate(CLIP_SECONDS.items()):
        sf.write(
            str(corpus / f"{name}.wav"), speech_like(int(seconds * SAMPLE_RATE), seed=index), SAMPLE_RATE
        )
    sf.write(str(corpus / "silent.wav"), np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    out = tmp_path_factory.mktemp("html_report") / "report"
    options = EvalOptions(n_q=(1, 3), num_examples=3, progress=False, voice=False, threads=1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_module, "default_baselines", lambda: BASELINES)
        # matplotlib's figures take most of a report's time (tests/test_evaluation.py draws them): small
        # stand-in PNGs are embedded the same way
        for name in ("plot_quality_vs_bitrate", "plot_codebook_usage", "plot_spectrograms"):
            patch.setattr(report_module, name, _stand_in_figure)
        run_evaluation(corpus, make_tiny_tokenizer(), out, options, model_path="tiny")
    return out


def _stand_in_figure(*args: Any, **kwargs: Any) -> None:
    from PIL import Image

    path = next(arg for arg in args if isinstance(arg, (str, Path)))
    gradient = np.linspace(0, 255, 320 * 120).reshape(120, 320).astype(np.uint8)
    Image.fromarray(gradient, mode="L").save(path)


class _Page(HTMLParser):
    """The tags of a page as (tag, attributes, the h3 / table they are under)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str], str]] = []
        self.headings: list[str] = []
        self.header_titles: list[str] = []
        self.first_cells: list[str] = []
        self._in: str | None = None
        self._cell = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        self.tags.append((tag, values, self.headings[-1] if self.headings else ""))
        if tag == "h3":
            self._in, self.headings = "h3", [*self.headings, ""]
        if tag == "tr":
            self._cell = 0
        if tag in ("td", "th"):
            self._cell += 1
            if tag == "th" and values.get("title"):
                self.header_titles.append(values["title"])
            if tag == "td" and self._cell == 1:
                self._in = "first"
                self.first_cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h3", "td"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "h3":
            self.headings[-1] += data
        elif self._in == "first":
            self.first_cells[-1] += data


def _payload(uri: str, mime: str) -> bytes:
    prefix = f"data:{mime};base64,"
    assert uri.startswith(prefix), uri[:40]
    return base64.b64decode(uri[len(prefix) :], validate=True)


def _parse(folder: Path) -> tuple[str, _Page, dict[str, Any]]:
    text = (folder / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page, json.loads((folder / "report.json").read_text())


def test_report_html_holds_every_system_metric_and_example_player(report_folder: Path) -> None:
    text, page, report = _parse(report_folder)
    systems = ["vqaudio_nq1", "vqaudio_nq3", *INSTALLED_BASELINES]
    assert list(report["systems"]) == systems
    assert "[report.html](report.html)" in (report_folder / "report.md").read_text()

    # the summary: every system a row in each table, every metric a column, with its direction
    assert page.first_cells.count("vqaudio_nq3") == 1  # the voice table was not measured (--no-voice)
    assert set(systems) <= set(page.first_cells)
    for metric in ("pesq_wb", "stoi", "mel_distance", "stft_distance", "si_sdr"):
        assert metrics.METRICS[metric][0] in " ".join(page.header_titles), metric
    assert "↑" in text and "↓" in text and 'class="best"' in text
    assert "Not measured (voicing recall ↑" in text  # the voice table, --no-voice

    # self-contained: nothing fetched from elsewhere, no script
    for tag, attributes, _ in page.tags:
        for key in ("src", "href"):
            assert not re.match(r"(https?:)?//", attributes.get(key, "")), (tag, attributes.get(key, "")[:60])
        assert tag not in ("script", "link", "iframe"), tag
    figures = [a["src"] for tag, a, _ in page.tags if tag == "img" and not a["alt"].startswith("narrow")]
    assert len(figures) == len(report["plots"]) == 2
    assert all(_payload(uri, "image/png")[:8] == b"\x89PNG\r\n\x1a\n" for uri in figures)

    # the examples: median, worst and best by the ranking metric; never the silent clip
    choice = report["example_choice"]
    expected_metric = "pesq_wb" if "pesq_wb" not in metrics.unavailable_metrics() else "stoi"
    assert choice["system"] == "vqaudio_nq3" and choice["metric"] == expected_metric
    assert choice["candidates"] == len(CLIP_SECONDS)  # the silent clip is not ranked
    assert [example["role"] for example in report["examples"]] == ["worst", "median", "best"]
    values = [example["value"] for example in report["examples"]]
    assert values == sorted(values)
    assert "How the examples were chosen" in text and choice["rule"] in text.replace("&#x27;", "'")

    # one player and one narrow-band spectrogram per system and the original, under each example's heading
    for example in report["examples"]:
        under = [(tag, a) for tag, a, heading in page.tags if heading.startswith(example["id"])]
        audios = [a for tag, a in under if tag == "audio"]
        images = [a for tag, a in under if tag == "img"]
        assert len(audios) == len(images) == 1 + len(systems), example["id"]
        assert [a["title"].split(",")[0] for a in audios] == ["original", *systems]
        assert example["role"] in next(h for h in page.headings if h.startswith(example["id"]))
        expected, rate = sf.read(str(report_folder / example["wavs"]["original"]), dtype="int16")
        for audio, name in zip(audios, ["original", *systems], strict=True):
            assert audio["preload"] == "metadata" and "controls" in audio
            flac = _payload(audio["src"], "audio/flac")
            decoded, flac_rate = sf.read(io.BytesIO(flac), dtype="int16")
            wav, _ = sf.read(str(report_folder / example["wavs"][name]), dtype="int16")
            assert flac_rate == rate == SAMPLE_RATE and decoded.shape == expected.shape
            np.testing.assert_array_equal(decoded, wav)  # lossless: the WAV the report holds
        for image in images:
            png = _payload(image["src"], "image/png")
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and image["alt"].startswith("narrow-band spectrogram")


# --------------------------------------------------------------------------------------------------
# In the browser
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Any:
    with Browser() as opened:
        yield opened


@requires_chromium
def test_report_html_in_chromium_plays_every_clip_without_errors(
    report_folder: Path, browser: Browser, tmp_path: Path
) -> None:
    _, page, report = _parse(report_folder)
    sources = [a["src"] for tag, a, _ in page.tags if tag == "audio"]
    expected = [
        sf.info(io.BytesIO(_payload(source, "audio/flac"))).duration for source in sources
    ]  # seconds, per player
    url = (report_folder / "report.html").as_uri()

    desktop = browser.check(url, screenshot=tmp_path / "desktop.png", width=1280, height=900)
    assert desktop.console_errors == []
    assert desktop.title.startswith("vqaudio evaluation")
    assert len(desktop.media) == len(expected) == 3 * (3 + len(INSTALLED_BASELINES))
    assert [state.error for state in desktop.media] == [None] * len(expected)
    np.testing.assert_allclose(desktop.media_durations, expected, atol=0.01)  # every player loaded its clip
    assert all(duration > 0 for duration in desktop.media_durations)
    assert desktop.screenshot is not None and not is_blank(desktop.screenshot)
    assert desktop.scroll_width <= desktop.viewport_width

    phone = browser.check(url, screenshot=tmp_path / "phone.png", width=390, height=844, mobile=True)
    assert phone.console_errors == [] and all(duration > 0 for duration in phone.media_durations)
    assert phone.scroll_width <= phone.viewport_width, "the page scrolls sideways on a phone"
    assert phone.screenshot is not None and not is_blank(phone.screenshot)
    assert report["examples"]


@requires_chromium
def test_the_browser_check_sees_broken_pages(browser: Browser, tmp_path: Path) -> None:
    """The harness itself: errors, a missing clip and a blank page are reported, not missed."""
    clip = io.BytesIO()
    sf.write(clip, speech_like(SAMPLE_RATE // 2), SAMPLE_RATE, format="FLAC")
    good = "data:audio/flac;base64," + base64.b64encode(clip.getvalue()).decode()
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><title>broken</title><p>text</p>"
        f'<audio controls preload="metadata" src="{good}"></audio>'
        '<audio controls preload="metadata" src="missing.flac"></audio>'
        '<div style="width: 3000px">wide</div>'
        "<script>console.error('logged'); undefinedFunction();</script>"
    )
    page = browser.check(broken.as_uri(), screenshot=tmp_path / "broken.png", width=390, mobile=True)
    assert page.media_durations[0] == pytest.approx(0.5, abs=0.01)
    assert math.isnan(page.media_durations[1]) and page.media[1].error is not None
    joined = "\n".join(page.console_errors)
    assert "console.error: logged" in joined and "undefinedFunction" in joined and "missing.flac" in joined
    assert page.scroll_width > page.viewport_width

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><title>blank</title><body style='background: #fff'></body>")
    empty = browser.check(blank.as_uri(), screenshot=tmp_path / "blank.png")
    assert empty.console_errors == [] and empty.media == []
    assert empty.screenshot is not None and is_blank(empty.screenshot)
