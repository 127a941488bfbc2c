"""``vqaudio export-onnx``: a tokenizer as two ONNX graphs for onnxruntime (``vqaudio.codec.onnx_export``).

vqaudio export-onnx exp/run1 onnx/            # encoder.onnx, decoder.onnx, vqaudio_onnx.json
vqaudio export-onnx default onnx/ --overwrite # the embedded model
"""

from __future__ import annotations

from pathlib import Path

import typer

EXPORT_ONNX_HELP = (
    "Export a tokenizer to ONNX: DIR gets encoder.onnx (audio float32 [1, samples] -> codes int64 [rows, frames]), "
    "decoder.onnx (codes [rows, frames], any number of the first codebooks -> audio [1, frames * hop]) and "
    "vqaudio_onnx.json (the model's name and weights hash, rates, the inputs and outputs). Both lengths are "
    "dynamic; the log-mel front end, the pitch tracker and the iSTFT head are in the graphs. The export is checked "
    "in onnxruntime against torch on a synthetic clip (--no-check skips it). Needs pip install 'vqaudio[onnx]'. "
    "DIR is written atomically; --overwrite replaces an earlier export."
)


def export_onnx_command(
    model: str = typer.Argument(
        ..., help="Tokenizer model folder or .safetensors file; 'default' for the embedded model."
    ),
    out: Path = typer.Argument(..., help="Output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export in DIR."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare onnxruntime with torch on a synthetic clip."
    ),
) -> None:
    """Tokenizer -> DIR/encoder.onnx + decoder.onnx + vqaudio_onnx.json (help: EXPORT_ONNX_HELP)."""
    from vqaudio.codec.onnx_export import EXTRA, FILES, export_onnx
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.io.atomic import check_output
    from vqaudio.optional import require

    for module in ("onnx", "onnxscript", "onnxruntime"):  # the missing extra before any work
        require(module, EXTRA, "vqaudio export-onnx")
    check_output(
        out,
        overwrite=overwrite,
        folder=True,
        replaceable=lambda path: str(path) in FILES,
        what="`vqaudio export-onnx`",
    )
    tokenizer = Tokenizer.from_pretrained(model)
    spec = export_onnx(tokenizer, out, overwrite=overwrite, check=check)
    summary = f"wrote {out}/: encoder.onnx, decoder.onnx, vqaudio_onnx.json (model {spec['model']}, {spec['weights_sha256'][:12]})"
    if "check" in spec:
        result = spec["check"]
        summary += (
            f"; onnxruntime vs torch: {100 * result['codes_equal']:.2f}% codes equal, audio within "
            f"{result['audio_max_error']:.1g}"
        )
    typer.echo(summary)


def register(app: typer.Typer) -> None:
    """Add ``vqaudio export-onnx`` to the vqaudio app."""
    app.command("export-onnx", help=EXPORT_ONNX_HELP)(export_onnx_command)
