"""`power show` output: the model summary and its single fields (also `/show` in `power run`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from power.cli.format import human_number, render_table

__all__ = ["FIELDS", "render_show_info", "show_field"]


def _show_section(title: str, rows: Sequence[Sequence[str]]) -> str:
    body = render_table((), [["", *row] for row in rows])
    return f"  {title}\n{body}\n"


def _head(text: str, n: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [[line] for line in lines[:n]]
    return [*rows, ["..."]] if len(lines) > n else rows


def _metadata_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        shown = " ".join(str(v) for v in value[:10])
        return f"[{shown}{' ...' if len(value) > 10 else ''}]"
    return str(value)


def _projector_rows(info: Mapping[str, Any]) -> list[list[str]]:
    arch = str(info.get("general.architecture", ""))
    rows = [["architecture", arch]]
    if isinstance(info.get("general.parameter_count"), int | float):
        rows.append(["parameters", human_number(int(info["general.parameter_count"]))])
    for label, key in (("embedding length", "embedding_length"), ("dimensions", "projection_dim")):
        if isinstance(info.get(f"{arch}.vision.{key}"), int | float):
            rows.append([label, str(int(info[f"{arch}.vision.{key}"]))])
    return rows


def render_show_info(resp: Mapping[str, Any], *, verbose: bool = False) -> str:
    """The default ``show`` view: Model, Capabilities, Projector, Parameters, System, License."""
    details: Mapping[str, Any] = resp.get("details") or {}
    info: Mapping[str, Any] = resp.get("model_info") or {}
    rows: list[list[str]] = []
    if info:
        arch = str(info.get("general.architecture", details.get("family", "")))
        params = str(details.get("parameter_size") or "")
        if not params and isinstance(info.get("general.parameter_count"), int | float):
            params = human_number(int(info["general.parameter_count"]))
        rows += [["architecture", arch], ["parameters", params]]
        for key in ("context_length", "embedding_length"):
            if isinstance(info.get(f"{arch}.{key}"), int | float):
                rows.append([key.replace("_", " "), str(int(info[f"{arch}.{key}"]))])
    else:
        rows += [["architecture", str(details.get("family", ""))]]
        rows += [["parameters", str(details.get("parameter_size", ""))]]
    rows.append(["quantization", str(details.get("quantization_level", ""))])
    out = _show_section("Model", rows)
    if resp.get("capabilities"):
        out += _show_section("Capabilities", [[str(c)] for c in resp["capabilities"]])
    projector: Mapping[str, Any] = resp.get("projector_info") or {}
    if projector:
        out += _show_section("Projector", _projector_rows(projector))
    if resp.get("parameters"):
        lines = str(resp["parameters"]).splitlines()
        out += _show_section("Parameters", [line.split() for line in lines if line.strip()])
    if verbose and info:
        meta = [[k, _metadata_value(info[k])] for k in sorted(info)]
        out += _show_section("Metadata", meta)
    if verbose and resp.get("tensors"):
        tensors = [
            [str(t.get("name", "")), str(t.get("type", "")), str(t.get("shape", ""))]
            for t in resp["tensors"]
        ]
        out += _show_section("Tensors", tensors)
    for title, key in (("System", "system"), ("License", "license")):
        if resp.get(key):
            out += _show_section(title, _head(str(resp[key]), 2))
    return out


_MISSING = {
    "license": "No license was specified for this model.",
    "parameters": "No parameters were specified for this model.",
    "system": "No system message was specified for this model.",
    "template": "No prompt template was specified for this model.",
    "modelfile": "",
}
FIELDS = frozenset(_MISSING)  # what `show --<field>` and `/show <field>` print


def show_field(resp: Mapping[str, Any], what: str) -> str:
    """One field of /api/show as `show --license` etc. print it."""
    return str(resp.get(what) or "").rstrip("\n") or _MISSING[what]
