"""docs/tutorial.md, followed as a new user would, verbatim, with the real processes it names.

Shared by tests/e2e/test_tutorial.py (page, socket, task) and
tests/browser/test_tutorial_page.py (the same page in Chromium).

Every fenced block of the tutorial is preceded by an HTML comment (invisible
on the rendered page) that says what a reader does with it:

* ``<!-- tutorial: install -->``: the install commands (not run: this
  environment is the one they install; the test checks they name the package);
* ``<!-- tutorial: shell -->``: commands run one per line, in order (``cd``
  changes the folder of the lines after it), each must succeed;
* ``<!-- tutorial: file PATH -->``: the block is the whole of PATH;
* ``<!-- tutorial: append PATH -->``: the block is added to the end of PATH;
* ``<!-- tutorial: replace PATH NAME -->``: the block replaces the top-level
  assignment ``NAME = ...`` of PATH;
* ``<!-- tutorial: process NAME -->``: a command that runs until stopped, in a
  terminal of its own (``web``, ``worker``, ``delay``, ``backend``);
* ``<!-- tutorial: up -->``: ``progrock up`` for the project, the one-terminal
  alternative to the processes (run by its own test, on a port of its own);
* ``<!-- tutorial: show -->``: shown, not followed here.

A file block's ``title="PATH"`` (what the reader sees) must name the same file
as its comment. The processes get only what a reader on a busy machine would
change: a free port on their command line (``runserver ADDRESS:PORT``,
``progrock-backend --port PORT``) and the environment variables the tutorial's
settings read (``REDIS_URL``: the tests' private Redis; ``PROGROCK_BACKEND_URL``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from progrock.local.stack import port_accepts
from progrock.local.supervisor import ChildSpec, Supervisor

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BIN = Path(sys.executable).parent
STEP_TIMEOUT = 120.0
READY_TIMEOUT = 60.0

BLOCK = re.compile(
    r"<!-- tutorial: (?P<action>[a-z]+)(?: (?P<args>[^>]*?))? -->\n"
    r"```(?P<lang>\w+)(?P<info>[^\n]*)\n(?P<body>.*?)\n```\n",
    re.DOTALL,
)
FENCE = re.compile(r"^```\w", re.MULTILINE)
TITLE = re.compile(r'title="([^"]*)"')
ACTIONS = {"install", "shell", "file", "append", "replace", "process", "up", "show"}

# How each process the tutorial names is told apart when it is ready.
READINESS: dict[str, dict[str, Any]] = {
    "backend": {"ready_line": re.compile(r"progrock-backend listening on ")},
    "delay": {"ready_line": re.compile(r"rundelay ready")},
    "worker": {
        "ready_line": re.compile(r"Running worker for channels"),
        "ready_after": 0.2,
        "ready_line_within": 3.0,
    },
}


@dataclass(frozen=True)
class Block:
    action: str
    args: list[str]
    title: str | None
    body: str


def tutorial_blocks(text: str) -> list[Block]:
    """The marked blocks of the tutorial, in order; every fenced block must be marked."""
    blocks = []
    for match in BLOCK.finditer(text):
        title = TITLE.search(match["info"])
        blocks.append(
            Block(
                match["action"],
                (match["args"] or "").split(),
                title.group(1) if title else None,
                match["body"] + "\n",
            )
        )
    fences = len(FENCE.findall(text))
    assert fences == len(blocks), (
        f"{fences} fenced blocks but {len(blocks)} with a <!-- tutorial: ... --> comment "
        "right before them: mark every block, so that none escapes this test"
    )
    return blocks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Followed:
    """The tutorial, followed: its project folder, live processes and what each step said."""

    project: Path
    url: str
    env: dict[str, str]
    supervisor: Supervisor
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    processes: list[str] = field(default_factory=list)


def replace_assignment(text: str, name: str, block: str, path: str) -> str:
    """``text`` with its top-level ``NAME = ...`` (up to the line closing it) replaced."""
    pattern = re.compile(rf"^{name} = (\[.*?^\]|\{{.*?^\}}|[^\n]*)\n", re.DOTALL | re.MULTILINE)
    found = pattern.findall(text)
    assert len(found) == 1, f"{path} has {len(found)} top-level assignments to {name}"
    return pattern.sub(lambda _: block, text, count=1)


class Reader:
    """Applies the tutorial's blocks in order, as a reader would."""

    def __init__(self, workdir: Path, env: dict[str, str], ports: dict[str, int]) -> None:
        self.cwd = workdir
        self.env = env
        self.ports = ports
        self.supervisor = Supervisor(echo=os.environ.get("PROGROCK_E2E_ECHO") == "1")
        self.outputs: dict[str, subprocess.CompletedProcess[str]] = {}
        self.started: list[str] = []
        self.ready: list[str] = []

    def apply(self, block: Block) -> None:
        assert block.action in ACTIONS, f"unknown tutorial action {block.action!r}"
        if block.action in ("up", "show"):
            return
        if block.action != "process":
            self.wait_started()  # what follows a group of terminals needs them running
        if block.action in ("file", "append", "replace"):
            path = block.args[0]
            assert block.title == path, f"the block for {path} is titled {block.title!r}"
            target = self.cwd / path
            if block.action == "file":
                target.write_text(block.body)
            elif block.action == "append":
                target.write_text(target.read_text() + "\n" + block.body)
            else:
                target.write_text(
                    replace_assignment(target.read_text(), block.args[1], block.body, path)
                )
        elif block.action == "shell":
            for line in block.body.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    self.run(line)
        elif block.action == "install":
            lines = block.body.splitlines()
            assert 'pip install "django-progrock[local]"' in lines, lines
        elif block.action == "process":
            self.start(block.args[0], block.body.strip())

    def run(self, line: str) -> None:
        argv = shlex.split(line)
        if argv[0] == "cd":
            self.cwd = self.cwd / argv[1]
            assert self.cwd.is_dir(), f"{line!r}: no such folder"
            return
        done = subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
            check=False,
        )
        self.outputs[line] = done
        assert done.returncode == 0, (
            f"{line!r} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )

    def start(self, name: str, line: str) -> None:
        argv = shlex.split(line)
        # As the terminal's shell finds it, on the activated environment's PATH.
        argv[0] = shutil.which(argv[0], path=self.env["PATH"]) or argv[0]
        options: dict[str, Any] = dict(READINESS.get(name, {}))
        if name == "web":
            argv.append(f"127.0.0.1:{self.ports['web']}")
            options["ready_check"] = functools.partial(port_accepts, "127.0.0.1", self.ports["web"])
        elif name == "backend":
            argv += ["--port", str(self.ports["backend"])]
        self.supervisor.add(
            ChildSpec(name, argv, env=self.env, cwd=str(self.cwd), restart=False, **options)
        )
        self.supervisor.spawn(name)
        self.started.append(name)

    def wait_started(self) -> None:
        waiting = [name for name in self.started if name not in self.ready]
        if waiting:
            self.supervisor.wait_ready(waiting, READY_TIMEOUT)
            self.ready += waiting


@contextlib.contextmanager
def follow(workdir: Path, redis_url: str, bin_dir: Path = BIN) -> Iterator[Followed]:
    """The tutorial followed to its end in ``workdir``, its processes running until exit,
    in the virtual environment of ``bin_dir`` (default: this one)."""
    ports = {"web": free_port(), "backend": free_port()}
    dropped = ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(
        # The activated virtual environment: `python`, `django-admin`, `progrock-backend`.
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(bin_dir.parent),
        PYTHONUNBUFFERED="1",
        REDIS_URL=redis_url,
        PROGROCK_BACKEND_URL=f"http://127.0.0.1:{ports['backend']}",
    )
    reader = Reader(workdir, env, ports)
    try:
        for block in tutorial_blocks(TUTORIAL.read_text()):
            reader.apply(block)
        reader.wait_started()
        yield Followed(
            reader.cwd,
            f"http://127.0.0.1:{ports['web']}",
            env,
            reader.supervisor,
            reader.outputs,
            reader.started,
        )
    finally:
        reader.supervisor.stop_all()
