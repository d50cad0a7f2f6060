"""The REPL's slash commands: /set, /show, /load, /save and the /? help texts.

Texts and replies follow Ollama's ``cmd/interactive.go`` line for line, so what an Ollama user
expects to read is what they get; help goes to stderr and replies to stdout, as there.
"""

from __future__ import annotations

import json
from typing import Any

import click

from power.cli.chat import Session, adopt_model, load_model
from power.cli.client import Client, ResponseError
from power.cli.history import LineReader
from power.cli.show import render_show_info

__all__ = [
    "HELP",
    "HELP_SET",
    "HELP_SHORTCUTS",
    "HELP_SHOW",
    "help_",
    "load",
    "save",
    "set_",
    "show",
]

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command
  /? shortcuts    Help for keyboard shortcuts

Use \"\"\" to begin a multi-line message.
"""
HELP_IMAGES = "Use /path/to/file to include .jpg, .png, .gif, .bmp or .webp images.\n"
HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set history           Enable history
  /set nohistory         Disable history
  /set wordwrap          Enable wordwrap
  /set nowordwrap        Disable wordwrap
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
  /set think             Enable thinking
  /set nothink           Disable thinking

"""
HELP_SHORTCUTS = """Available keyboard shortcuts:
  Ctrl + a            Move to the beginning of the line (Home)
  Ctrl + e            Move to the end of the line (End)
   Alt + b            Move back (left) one word
   Alt + f            Move forward (right) one word
  Ctrl + k            Delete the sentence after the cursor
  Ctrl + u            Delete the sentence before the cursor
  Ctrl + w            Delete the word before the cursor

  Ctrl + l            Clear the screen
  Ctrl + c            Stop the model from responding
  Ctrl + d            Exit power (/bye)

"""
HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template

"""
HELP_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter num_gpu <int>          The number of layers to send to the GPU
  /set parameter stop <string> <string> ...   Set the stop parameters

"""


def _err(text: str) -> None:
    click.echo(text, nl=False, err=True)


def help_(session: Session, topic: str) -> None:
    """``/?`` and ``/help``, with an optional topic."""
    if not topic:
        _err(HELP + (HELP_IMAGES if session.vision else "") + "\n")
    elif topic in {"set", "/set"}:
        _err(HELP_SET)
    elif topic in {"show", "/show"}:
        _err(HELP_SHOW)
    elif topic in {"shortcut", "shortcuts"}:
        _err(HELP_SHORTCUTS)


# -- /set ------------------------------------------------------------------------------------


def _parameter(session: Session, name: str, values: list[str]) -> None:
    """Typed as a Modelfile PARAMETER is; ``stop`` takes every value given."""
    from power.errors import PowerError
    from power.store.modelfile import parse_parameter

    try:
        if name == "stop":
            value: Any = [v for text in values for v in parse_parameter(name, text)]
        else:
            value = parse_parameter(name, " ".join(values))
    except PowerError as exc:
        click.echo(f"Couldn't set parameter: {json.dumps(str(exc))}")
        return
    session.options[name] = value
    click.echo(f"Set parameter '{name}' to '{', '.join(values)}'")


def _warn_no_thinking(client: Client, session: Session) -> None:
    try:
        caps = (client.post("/api/show", {"model": session.model}) or {}).get("capabilities")
    except ResponseError:
        return
    if "thinking" not in (caps or []):
        _err(f'warning: model "{session.model}" does not support thinking output\n')


def set_(client: Client, session: Session, history: LineReader, line: str) -> None:
    """``/set ...``: session variables; each reply is Ollama's one line."""
    args = line.split()
    what = args[1] if len(args) > 1 else ""
    toggles: dict[str, tuple[str, object, str]] = {
        "wordwrap": ("word_wrap", True, "Set 'wordwrap' mode."),
        "nowordwrap": ("word_wrap", False, "Set 'nowordwrap' mode."),
        "verbose": ("verbose", True, "Set 'verbose' mode."),
        "quiet": ("verbose", False, "Set 'quiet' mode."),
        "noformat": ("format", None, "Disabled format."),
    }
    if not what:
        _err(HELP_SET)
    elif what in toggles:
        attr, value, reply = toggles[what]
        setattr(session, attr, value)
        click.echo(reply)
    elif what in {"history", "nohistory"}:
        history.enabled = what == "history"
    elif what in {"think", "nothink"}:
        level = args[2] if what == "think" and len(args) > 2 else None
        session.think = level or what == "think"
        session.think_set = True
        _warn_no_thinking(client, session)
        click.echo(f"Set 'think' mode to '{level}'." if level else f"Set '{what}' mode.")
    elif what == "format":
        if args[2:] != ["json"]:
            click.echo("Invalid or missing format. For 'json' mode use '/set format json'")
        else:
            session.format = "json"
            click.echo("Set format to 'json' mode.")
    elif what == "parameter":
        if len(args) < 4:
            _err(HELP_PARAMETERS)
        else:
            _parameter(session, args[2], args[3:])
    elif what == "system":
        text = line.split(None, 2)[2].strip() if len(args) > 2 else ""
        if not text:
            _err(HELP_SET)
            return
        session.system = text
        click.echo("Set system message.")
    else:
        click.echo(f"Unknown command '/set {what}'. Type /? for help")


# -- /show -----------------------------------------------------------------------------------


def show(client: Client, session: Session, what: str) -> None:
    """``/show ...``: the model as this session has it (its system and parameters applied)."""
    if not what:
        _err(HELP_SHOW)
        return
    body: dict[str, Any] = {"model": session.model}
    if session.system:
        body["system"] = session.system
    if session.options:
        body["options"] = session.options
    resp = client.post("/api/show", body) or {}
    if what == "info":
        _err(render_show_info(resp))
    elif what in {"license", "template"}:
        missing = f"No {'prompt template' if what == 'template' else 'license'} was specified"
        click.echo(resp.get(what) or f"{missing} for this model.")
    elif what == "modelfile":
        click.echo(resp.get("modelfile") or "")
    elif what == "parameters":
        click.echo("Model defined parameters:")
        params = str(resp.get("parameters") or "")
        lines = params.split("\n") if params else []
        for text in lines or ["No additional parameters were specified for this model."]:
            click.echo(f"  {text}")
        click.echo()
        if session.options:
            click.echo("User defined parameters:")
            for key, value in session.options.items():
                click.echo(f"  {key:<30} {value}")
            click.echo()
    elif what == "system":
        system = session.system or resp.get("system")
        click.echo(f"{system}\n" if system else "No system message was specified for this model.")
    else:
        click.echo(f"Unknown command '/show {what}'. Type /? for help")


# -- /load, /save ----------------------------------------------------------------------------


def load(client: Client, session: Session, args: list[str]) -> None:
    """``/load MODEL``: switch model; the conversation so far goes on with the new one."""
    if len(args) != 2:
        click.echo("Usage:\n  /load <modelname>")
        return
    name = args[1]
    click.echo(f"Loading model '{name}'")
    try:
        info = client.post("/api/show", {"model": name}) or {}
    except ResponseError as exc:
        if exc.status == 404:
            click.echo(f"Couldn't find model '{name}'")
        else:
            click.echo(f"error: {exc}")
        return
    previous = (session.model, session.vision, session.think, session.loaded_messages)
    adopt_model(session, name, info)
    try:
        load_model(client, session)
    except ResponseError as exc:
        session.model, session.vision, session.think, session.loaded_messages = previous
        click.echo(f"error: {exc}")


def save(client: Client, session: Session, args: list[str]) -> None:
    """``/save MODEL``: a model made of this one plus the session's system, parameters and
    messages (the model's own first), so that ``power run MODEL`` resumes the conversation.

    It is made ``from`` the running model, so its template and settings carry over, and the
    messages sent replace the ones it had (they are part of them).
    """
    if len(args) != 2:
        click.echo("Usage:\n  /save <modelname>")
        return
    body: dict[str, Any] = {"model": args[1], "from": session.model}
    if session.system:
        body["system"] = session.system
    if session.options:
        body["parameters"] = session.options
    messages = [*session.loaded_messages, *session.messages]
    if messages:
        body["messages"] = messages
    try:
        for _ in client.stream("/api/create", body):
            pass
    except ResponseError as exc:
        if "invalid" in str(exc) and "name" in str(exc):
            click.echo(f"error: The model name '{args[1]}' is invalid")
        else:
            click.echo(f"error: {exc}")
        return
    click.echo(f"Created new model '{args[1]}'")
