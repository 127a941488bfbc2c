"""The fillets recipe's local preparation (egs/fillets/local/): fillets-ng names, dialog files, the
conversion and its command line, the Festival / KLettres+Hedgewars voice scripts, and gather_speech.py's
Asterisk prompts, G.722 through PyAV (all on synthetic data)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like

from vqaudio.data import load_corpus
from vqaudio.errors import DataError

LOCAL = Path(__file__).resolve().parents[1] / "egs" / "fillets" / "local"


def load_local(name: str) -> ModuleType:
    """Import ``egs/fillets/local/<name>.py`` by path (the recipe's scripts are not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, LOCAL / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as a script beside it would import it (synthesize_voices does)
    spec.loader.exec_module(module)
    return module


fillets = load_local("prepare_fillets")
DialogLine = fillets.DialogLine
clip_speaker = fillets.clip_speaker
parse_clip_name = fillets.parse_clip_name
parse_dialogs = fillets.parse_dialogs
prepare_fillets = fillets.prepare_fillets


def run_local(script: str, *args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(LOCAL / script), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


# --------------------------------------------------------------------------------------------------
# prepare_fillets.py: names, dialog files, the conversion
# --------------------------------------------------------------------------------------------------
def test_parse_clip_name_and_speaker_rule() -> None:
    assert parse_clip_name("let-m-divna") == ("let", "m", "divna")
    assert parse_clip_name("k1-pap-3x-kruty") == ("k1", "pap", "3x-kruty")
    assert parse_clip_name("help1") is None and parse_clip_name("sp-shout_big_00") is None
    small = DialogLine("font_small", "Hi", "Ahoj")
    assert clip_speaker("agenti-m", small, "cs") == ("cs-m", None)  # the font names the fish
    assert clip_speaker("vit-hs-klid1", DialogLine("font_statue", "", "x"), "cs") == ("cs-hs", None)
    assert clip_speaker("zd2-x-fuj", DialogLine("font_white", "", "x"), "cs")[0] is None
    assert clip_speaker("rand-0-1", DialogLine("font_viking1", "", "x"), "nl")[0] is None
    assert clip_speaker("o-o-both", DialogLine("font_both", "", "x"), "cs")[0] is None
    assert clip_speaker("help3", None, "cs")[0] is None


LUA = r"""
-- dialogId("commented-out", "font_big", "ignored")
dialogId("let-m-divna", "font_small", "What kind of strange ship is that?")
dialogStr("Co je to za \"divnou\" loď?")

dialogId("war-v-dir", "font_big", 'C:\\WINDOWS')
dialogStr("Naar \/etc " .. 'om te   kletsen.')

dialogId("let-v-none", "font_big", "Not translated yet")
for i = 0, 29 do dialogId("key"..i, "", "") end
"""


def test_parse_dialogs_handles_escapes_comments_and_concatenation(tmp_path: Path) -> None:
    (tmp_path / "dialogs_cs.lua").write_text(LUA, encoding="utf-8")
    entries = parse_dialogs(tmp_path / "dialogs_cs.lua")
    assert set(entries) == {"let-m-divna", "war-v-dir", "let-v-none"}
    assert entries["let-m-divna"] == DialogLine(
        "font_small", "What kind of strange ship is that?", 'Co je to za "divnou" loď?'
    )
    assert entries["war-v-dir"] == DialogLine("font_big", "C:\\WINDOWS", "Naar /etc om te kletsen.")
    assert entries["let-v-none"].text is None


def test_parse_dialogs_errors_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.lua").write_text('dialogId("x", "font_big", "ok")\ndialogStr("unterminated)\n')
    with pytest.raises(DataError, match=r"a\.lua:2: unterminated string"):
        parse_dialogs(tmp_path / "a.lua")
    (tmp_path / "b.lua").write_text('\ndialogStr("orphan")\n')
    with pytest.raises(DataError, match=r"b\.lua:2: dialogStr\(...\) without a dialogId"):
        parse_dialogs(tmp_path / "b.lua")


def make_fillets(root: Path) -> None:
    """A miniature fillets-ng tree: two levels, cs + nl, both fish, a statue, an effect, a short clip."""
    data = root / "usr" / "share" / "games" / "fillets-ng"
    clips = {  # level -> [(stem, font, seconds)]
        "airplane": [("let-m-a", "font_small", 0.8), ("let-v-b", "font_big", 0.9), ("let-x-bang", "", 0.7)],
        "city": [
            ("vit-m-c", "font_small", 0.6),
            ("vit-v-d", "font_big", 0.7),
            ("vit-hs-e", "font_statue", 1.0),
        ],
        "bathroom": [("bat-m-f", "font_small", 0.6), ("bat-v-g", "font_big", 0.3)],
    }
    for level, entries in clips.items():
        for lang in ("cs", "nl"):
            lua = []
            for index, (stem, font, seconds) in enumerate(entries):
                sf.write(
                    str(_mkdir(data / "sound" / level / lang) / f"{stem}.ogg"),
                    0.1
                    * np.sin(np.linspace(0, 300 * seconds, int(22050 * seconds)))[:, None].repeat(2, axis=1),
                    22050,
                    format="OGG",
                    subtype="VORBIS",
                )
                lua.append(f'dialogId("{stem}", "{font}", "English {index}")')
                if "-x-" not in stem:
                    lua.append(f'dialogStr("{lang} text {index}")')
            (_mkdir(data / "script" / level) / f"dialogs_{lang}.lua").write_text("\n".join(lua) + "\n")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_prepare_fillets_holds_out_whole_speakers(tmp_path: Path) -> None:
    make_fillets(tmp_path / "root")
    summary = prepare_fillets(tmp_path / "root", tmp_path / "out", jobs=1, progress=False)
    splits = {
        split: load_corpus(tmp_path / "out" / split, read_headers=True) for split in ("train", "dev", "test")
    }
    train_speakers = {utt.speaker for utt in splits["train"]}
    assert train_speakers == {"cs-m", "nl-v"}
    for split in ("dev", "test"):
        assert splits[split] and not ({utt.speaker for utt in splits[split]} & train_speakers)
    held_out_levels = [{utt.path.parent.name for utt in splits[split]} for split in ("dev", "test")]
    assert not (held_out_levels[0] & held_out_levels[1])  # dev and test hold different levels
    utt = next(utt for utt in splits["train"] if utt.id == "cs-m-airplane-let-m-a")
    assert (utt.text, utt.sample_rate) == ("cs text 0", 16000)
    assert abs(utt.num_samples - 0.8 * 16000) <= 2  # type: ignore[operator]
    # x effects (no subtitle) and the 0.3 s clip are skipped, both languages
    assert summary.skipped == {"no subtitle (effect or music)": 2, "shorter than 0.5 s": 2}
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["utterances"] == {"train": 5, "dev": len(splits["dev"]), "test": len(splits["test"])}
    assert saved["hours"]["train"]["cs-m"] == pytest.approx((0.8 + 0.6 + 0.6) / 3600, abs=1e-3)
    # a rerun with the same settings resumes; other settings need --overwrite
    prepare_fillets(tmp_path / "root", tmp_path / "out", jobs=1, progress=False)
    with pytest.raises(DataError, match="other settings"):
        prepare_fillets(tmp_path / "root", tmp_path / "out", train_speakers=["cs-v"], jobs=1, progress=False)
    with pytest.raises(DataError, match=r"train speakers \['cs-q'\] have no clips"):
        prepare_fillets(
            tmp_path / "root", tmp_path / "other", train_speakers=["cs-q"], jobs=1, progress=False
        )


def test_prepare_fillets_command_line_writes_the_corpus_and_maps_errors_to_exit_codes(tmp_path: Path) -> None:
    """``python egs/fillets/local/prepare_fillets.py`` (was ``vqaudio prepare-fillets``): 0, 1 (one line), 2."""
    make_fillets(tmp_path / "root")
    out = tmp_path / "out"
    result = run_local("prepare_fillets.py", tmp_path / "root", out, "--jobs", "2")  # a process pool
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("train  ") and "skipped 4 clips" in result.stdout
    assert f"summary: {out / 'summary.json'}" in result.stdout
    train = load_corpus(out / "train", read_headers=True)
    assert {utt.speaker for utt in train} == {"cs-m", "nl-v"} and len(train) == 5
    saved = json.loads((out / "summary.json").read_text())
    assert saved["settings"] == {
        "languages": ["cs", "nl"],
        "train_speakers": ["cs-m", "nl-v"],
        "sample_rate": 16000,
        "min_seconds": 0.5,
    }

    # runtime errors: one line on stderr, exit 1
    other = run_local("prepare_fillets.py", tmp_path / "root", out, "--train-speakers", "cs-v", "-j", "1")
    assert other.returncode == 1
    assert other.stderr.strip().startswith("error: ") and len(other.stderr.strip().splitlines()) == 1
    assert "other settings" in other.stderr and "--overwrite" in other.stderr
    replaced = run_local(
        "prepare_fillets.py",
        tmp_path / "root",
        out,
        "--train-speakers",
        "cs-v,nl-m",
        "-j",
        "1",
        "--overwrite",
    )
    assert replaced.returncode == 0, replaced.stderr
    assert {utt.speaker for utt in load_corpus(out / "train")} == {"cs-v", "nl-m"}
    missing = run_local("prepare_fillets.py", tmp_path / "nothing", tmp_path / "none", "-j", "1")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "no fillets-ng data" in missing.stderr and "Traceback" not in missing.stderr

    # usage errors: exit 2
    for bad in (
        ["--min-seconds", "-1"],
        ["--sample-rate", "100"],
        ["--jobs", "-1"],
        ["--languages", " , "],
        ["--no-such-option"],
        ["--jobs", "two"],
    ):
        usage = run_local("prepare_fillets.py", tmp_path / "root", tmp_path / "bad", *bad)
        assert usage.returncode == 2, (bad, usage.stderr)
    assert run_local("prepare_fillets.py", tmp_path / "root").returncode == 2  # OUT missing
    assert not (tmp_path / "bad").exists()
    helped = run_local("prepare_fillets.py", "--help")
    assert helped.returncode == 0 and "--train-speakers" in helped.stdout and "--overwrite" in helped.stdout


# --------------------------------------------------------------------------------------------------
# synthesize_voices.py and gather_voices.py
# --------------------------------------------------------------------------------------------------
FAKE_FESTIVAL = '''#!{python}
"""Stands in for festival -b: every (utt.save.wave ...) gets 1 s of a 200 Hz tone at 32 kHz, unless the
voice is in $FAKE_FESTIVAL_MISSING (then it says nothing, as festival does for a voice it lacks)."""
import os, re, sys
import numpy as np, soundfile as sf
script = open(sys.argv[-1], "rb").read().decode("latin-1")
voice = re.search(r"\\(voice_(\\w+)\\)", script).group(1)
if voice in os.environ.get("FAKE_FESTIVAL_MISSING", "").split(","):
    sys.exit(0)
for path in re.findall(r'"([^"]+\\.wav)"', script):
    sf.write(path, 0.9 * np.sin(2 * np.pi * 200 * np.arange(32000) / 32000), 32000)
'''


def test_synthesize_voices_writes_a_corpus_and_names_missing_voices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fillets = tmp_path / "fillets"
    (fillets / "sound").mkdir(parents=True)
    level = fillets / "script" / "city"
    level.mkdir(parents=True)
    entries = [
        f'dialogId("c-{i}", "font_small", "Line {i}.")\ndialogStr("Věta číslo {i} je tady.")'
        for i in range(6)
    ]
    entries.append('dialogId("c-short", "font_small", "Hi.")\ndialogStr("Ahoj.")')  # too short: skipped
    (level / "dialogs_cs.lua").write_text("\n".join(entries), encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    festival = bin_dir / "festival"
    festival.write_text(FAKE_FESTIVAL.replace("{python}", sys.executable))
    festival.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return run_local("synthesize_voices.py", *args)

    out = tmp_path / "voices"
    result = run(fillets, out, "--voices", "tts-cs-dita,tts-cs-krb", "--lines", "4")
    assert result.returncode == 0, result.stderr
    for speaker in ("tts-cs-dita", "tts-cs-krb"):
        clips = sorted((out / speaker / "city").glob("*.flac"))
        assert len(clips) == 4
        audio, rate = sf.read(clips[0])
        assert rate == 16000 and len(audio) == 16000
        assert 10 ** (-12.5 / 20) < np.abs(audio).max() < 10 ** (-2.5 / 20)
        transcript = (out / speaker / "city" / f"{speaker}-city.trans.txt").read_text(encoding="utf-8")
        assert len(transcript.splitlines()) == 4 and "Věta číslo" in transcript and "Ahoj" not in transcript
    assert run(fillets, out, "--lines", "2").returncode == 1  # exists, no --overwrite

    monkeypatch.setenv("FAKE_FESTIVAL_MISSING", "czech_krb")
    again = tmp_path / "again"
    result = run(fillets, again, "--voices", "tts-cs-dita,tts-cs-krb", "--lines", "2")
    assert result.returncode == 1 and "apt-get install festvox-czech-krb" in result.stderr
    assert not [path for path in tmp_path.iterdir() if "again" in path.name]  # no staging folder left
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    result = run(fillets, out, "--voices", "tts-cs-dita,tts-cs-krb", "--lines", "2", "--overwrite")
    assert result.returncode == 1
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before  # the old corpus is kept


def test_gather_voices_keeps_non_english_voices_trims_and_caps_them(tmp_path: Path) -> None:
    root = tmp_path / "root"

    def clip(path: Path, seconds: float, rate: int = 44100, seed: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        speech = speech_like(int(seconds * rate), rate, seed)
        silence = np.zeros(rate // 2, dtype=np.float32)  # half a second each side, to be trimmed
        sf.write(path, np.concatenate([silence, speech, silence]), rate, format="OGG", subtype="VORBIS")

    for index in range(6):
        clip(root / "usr/share/klettres/cs/syllab" / f"s{index}.ogg", 1.0, seed=index)
    clip(root / "usr/share/klettres/en/alpha/a.ogg", 1.0)  # English: left out
    clip(root / "usr/share/klettres/de/alpha/b.ogg", 0.1)  # too short once trimmed: skipped
    clip(root / "usr/share/klettres/de/alpha/c.ogg", 1.0, rate=22050)
    voices = root / "usr/share/games/hedgewars/Data/Sounds/voices"
    clip(voices / "Default_pl" / "Hello.ogg", 1.0)
    clip(voices / "Pirate" / "Arr.ogg", 1.0)  # an English pack: left out

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        return run_local("gather_voices.py", *args)

    out = tmp_path / "voices"
    result = run(root, out, "--max-minutes", 3.5 / 60)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["hw-default-pl", "kl-cs", "kl-de"]
    cs = sorted((out / "kl-cs" / "syllab").glob("*.flac"))
    assert len(cs) == 4  # 1 s each, capped at 3.5 s: the fourth clip crosses the cap, then it stops
    audio, rate = sf.read(cs[0])
    assert rate == 16000 and 0.95 * rate < len(audio) < 1.1 * rate  # the silence is trimmed
    transcript = (out / "kl-cs" / "syllab" / "kl-cs-syllab.trans.txt").read_text().splitlines()
    assert len(transcript) == 4 and all(line.split()[0] in {p.stem for p in cs} for line in transcript)
    assert [path.name for path in (out / "kl-de").rglob("*.flac")] != [] and not (out / "kl-en").exists()
    assert len(list((out / "kl-de").rglob("*.flac"))) == 1
    assert run(root, out).returncode == 1  # exists, no --overwrite

    empty = run(tmp_path / "nothing", tmp_path / "none")
    assert empty.returncode == 1 and "apt-get download klettres-data hedgewars-data" in empty.stderr
    assert not (tmp_path / "none").exists()


# --------------------------------------------------------------------------------------------------
# gather_speech.py: Asterisk's wideband prompts (G.722 through PyAV, the ``recipes`` extra)
# --------------------------------------------------------------------------------------------------
load_local("gather_voices")  # gather_speech imports it, as a script beside it would
gather_speech = load_local("gather_speech")
NO_AV = "PyAV (av) is not installed: pip install 'vqaudio[recipes]' to test the G.722 prompts"


def encode_g722(audio: np.ndarray) -> bytes:
    """16 kHz float samples -> a raw 64 kbit/s G.722 stream, by FFmpeg's encoder (sox cannot write G.722)."""
    av = pytest.importorskip("av", reason=NO_AV)
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767), -32768, 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
    frame.rate = 16000
    data = io.BytesIO()
    with av.open(data, "w", format="g722") as container:
        stream = container.add_stream("g722", rate=16000, layout="mono")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return data.getvalue()


def test_read_g722_round_trips(tmp_path: Path) -> None:
    speech = speech_like(16000, 16000, seed=3)
    path = tmp_path / "speech.g722"
    path.write_bytes(encode_g722(speech))
    assert path.stat().st_size == 8000  # one byte per two samples: 64 kbit/s
    decoded = gather_speech.read_g722(path)
    assert decoded.dtype == np.float32 and decoded.shape == speech.shape
    delay = 22  # the transmit and receive QMFs
    error = decoded[delay:] - speech[:-delay]
    assert 10 * np.log10(np.mean(speech**2) / np.mean(error**2)) > 20


def test_gather_speech_says_how_to_install_pyav(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError, as when it is not installed
    assert gather_speech.main([str(tmp_path / "root"), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error == (
        "error: gather_speech.py needs PyAV to decode G.722: pip install 'vqaudio[recipes]' (or pip install av)\n"
    )
    assert not list(tmp_path.iterdir())  # said before any work


SOUNDS = "usr/share/asterisk/sounds"


def make_asterisk(root: Path) -> None:
    """Two Asterisk voices in G.722 (one with upstream's transcript list), tones, silence, a short clip, and
    pocketsphinx-testdata-like files that must never be read."""

    def prompt(path: Path, seconds: float, seed: int = 0, pad: float = 0.5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        silence = np.zeros(int(pad * 16000), dtype=np.float32)
        audio = np.concatenate([silence, speech_like(int(seconds * 16000), 16000, seed), silence])
        path.write_bytes(encode_g722(audio))

    allison = root / SOUNDS / "en_US_f_Allison"
    prompt(allison / "vm-goodbye.g722", 1.0, seed=1)
    prompt(allison / "digits" / "5.g722", 0.8, seed=2)
    prompt(allison / "letters" / "a.g722", 0.3, seed=3)  # too short once trimmed
    prompt(allison / "beep.g722", 0.3, seed=4)  # a tone
    prompt(allison / "silence" / "1.g722", 1.0, seed=5)  # named silence (whatever it holds)
    prompt(allison / "pocketsphinx" / "goforward.g722", 1.0, seed=6)  # never training data
    (allison / "core-sounds-en.txt").write_text("; upstream's list\nvm-goodbye: Goodbye.\ndigits/5: five\n")
    carlo = root / SOUNDS / "it_IT_m_Carlo"
    for index in range(4):
        prompt(carlo / f"conf-{index}.g722", 1.0, seed=10 + index)
    testdata = root / "usr/share/pocketsphinx/test/data"
    testdata.mkdir(parents=True)
    sf.write(str(testdata / "goforward.wav"), speech_like(16000, 16000, 7), 16000)
    (testdata / "goforward.g722").write_bytes(encode_g722(speech_like(16000, 16000, 8)))


def test_gather_speech_converts_trims_and_names_the_voices(tmp_path: Path) -> None:
    make_asterisk(tmp_path / "root")
    out = tmp_path / "speech"
    summary = gather_speech.gather_speech(tmp_path / "root", out, max_minutes=2.5 / 60)
    corpus = load_corpus(out, read_headers=True)
    assert {utt.speaker for utt in corpus} == {"ast-en-allison", "ast-it-carlo"}
    assert not [utt for utt in corpus if "pocketsphinx" in utt.text or "goforward" in utt.text]
    for utt in corpus:
        info = sf.info(str(utt.path))
        assert (info.samplerate, info.channels) == (16000, 1)
        assert 0.75 < info.duration < 1.1  # the half second of silence each side is trimmed
    texts = {utt.text for utt in corpus if utt.speaker == "ast-en-allison"}
    assert texts == {"Goodbye.", "five"}  # upstream's transcripts where present
    carlo = [utt for utt in corpus if utt.speaker == "ast-it-carlo"]
    # capped at 2.5 s: the third clip crosses the cap, the fourth is left out
    assert len(carlo) == 3 and {utt.text for utt in carlo} <= {f"conf-{i}" for i in range(4)}
    assert {utt.path.parent.name for utt in corpus} == {"prompts", "digits"}
    assert summary.languages == {"ast-en-allison": "en", "ast-it-carlo": "it"}
    assert summary.skipped == {
        "evaluation set (pocketsphinx)": 1,
        "not speech (tones, silence)": 2,
        "over the per-voice cap": 1,
        "shorter than 0.5 s or silent": 1,
    }
    assert json.loads((out / "summary.json").read_text())["clips"] == {"ast-en-allison": 2, "ast-it-carlo": 3}
    again = tmp_path / "again"  # the same clips on a rerun (the cap's choice is seeded per voice)
    gather_speech.gather_speech(tmp_path / "root", again, max_minutes=2.5 / 60)
    assert sorted(p.relative_to(again) for p in again.rglob("*.flac")) == sorted(
        p.relative_to(out) for p in out.rglob("*.flac")
    )


def test_gather_speech_command_line_leaves_nothing_half_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    make_asterisk(root)
    out = tmp_path / "speech"
    result = run_local("gather_speech.py", root, out)  # the script on its own, importing its neighbours
    assert result.returncode == 0, result.stderr
    assert "ast-it-carlo: 0.1 min, 4 clips" in result.stdout and "wrote " in result.stdout
    before = sorted(path.relative_to(out) for path in out.rglob("*"))

    def run(*args: object) -> tuple[int, str]:  # in this process: the exit status and stderr
        try:
            status = gather_speech.main([str(arg) for arg in args])
        except SystemExit as exc:
            status = exc.code
        return status, capsys.readouterr().err

    assert run(root, out)[0] == 1  # exists, no --overwrite
    (root / SOUNDS / "it_IT_m_Carlo" / "conf-9.g722").symlink_to(tmp_path / "missing.g722")  # unreadable
    status, error = run(root, out, "--overwrite")
    assert status == 1 and error.startswith("error: ") and "conf-9.g722" in error
    assert len(error.strip().splitlines()) == 1
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before  # the old corpus is kept
    assert run(root, tmp_path / "new")[0] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["root", "speech"]  # no staging folder left

    status, error = run(tmp_path / "nothing", tmp_path / "none")
    assert status == 1 and "apt-get download asterisk-core-sounds-en-g722" in error
    assert run(root, tmp_path / "x", "--max-minutes", "0")[0] == 2
    assert not (tmp_path / "none").exists() and not (tmp_path / "x").exists()
