"""An adversarial campaign against the `netdsl` command: every input class of issue 17, for a bounded time.

Each trial builds a fresh directory (a small model, a tiny MNIST-shaped dataset, weights and a
checkpoint from one real run), applies one hostile change, runs the real command in a subprocess
(`python -m netdsl ...`, its own process group, a time bound, an address-space bound) and judges:

  ok     exit 0, nothing lost;
  clean  exit 1 or 2 with a message on stderr and no traceback (a diagnostic);
  crash  a traceback, a signal (segfault, kill), a hang past the time bound, another exit code,
         generated code that does not parse or that contains the injected payload as code, or
         (training) a stale temp file of the killed run that the resume did not remove;
  lost   data lost: a file the command did not write changed (an input, an import, a FIFO or
         device node replaced), or a file it may write changed although it failed.

Classes:
  parser       hostile .net text (bench/fuzz.py generators and 1 MB shapes) -> `check`
  injection    payloads in strings, names and comments -> `compile` for every target
  weights      crafted .npz weight files -> `run --load W --eval-only`
  checkpoints  crafted checkpoints (arrays and metadata) -> `run --checkpoint C --resume`
  datasets     crafted IDX files (headers, counts, gzip) -> `run --limit-train 64`
  cli          misuse of check/compile/summary/ir: FIFOs as input, a full stdout, non-UTF-8
               files, hostile IR JSON, bad flags
  compile-o    `compile -o` at inputs, imports, symlinks to them, FIFOs, device nodes, directories,
               missing or unwritable places, existing files with their own modes
  run-paths    `run --save/--checkpoint/--load` at inputs, FIFOs, device nodes, directories
  training     kill -9 of a training run at a random moment, then resume: the checkpoint must load

Run:  python bench/hostile.py -n 2000 --seed 1 --time-limit 3600 [--mix parser=4,training=1] [--jobs 2]
Every trial i of a campaign is drawn from random.Random(f"{seed}:{i}"): `--replay i` reruns one and
keeps its directory. Exit 1 if any crash or loss was seen in the classes asked for.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import fuzz  # noqa: E402  (the generators of the front-end fuzzer)

CLASSES = ("parser", "injection", "weights", "checkpoints", "datasets", "cli", "compile-o", "run-paths", "training")
TARGETS = ("pytorch", "keras", "tf-estimator", "gluon", "cntk")
MODEL = (ROOT / "models" / "mlp_relu.net").read_text(encoding="utf-8").replace('"mnist"', '"tiny"')
SMALL = "model Small\nx = Input(784)\nh = Dense(8, activation=relu)(x)\nz = Dense(10)(h)\noutput z\n" \
        'train {\n dataset = "tiny"\n loss = cross_entropy_with_softmax\n optimizer = Adam(lr=0.01)\n' \
        " batch_size = 16\n epochs = 1\n}\n"
RUN = ["run", "m.net", "--data", "tiny", "--data-dir", ".", "--no-progress"]
NETDSL_ROOT = ROOT  # the checkout whose netdsl is attacked (--netdsl-root)
MEMORY_LIMIT = 6 << 30  # bytes of address space per command: a hostile header must not take the machine


@dataclass
class Trial:
    cls: str
    what: str  # one line saying what was tried
    argv: list
    files: dict = field(default_factory=dict)  # name -> bytes | "fifo" | "chardev" | "dir" | ("link", target)
    outputs: tuple = ()  # files the command may change when it succeeds
    stdout: str = "pipe"  # or "full": /dev/full
    timeout: float = 60.0
    payload_check: bool = False  # generated code (stdout or out.py) must parse and hold no payload


# ------------------------------------------------------------------ base material
def idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def tiny_dataset(n_train: int = 64, n_test: int = 32) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        out[f"tiny/{split}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        out[f"tiny/{split}-labels-idx1-ubyte"] = idx_bytes(rng.integers(0, 10, n, dtype=np.uint8))
    return out


class Base:
    """The files every trial starts from, made once: a model, a dataset, real weights and a checkpoint."""

    def __init__(self, workdir: Path, train: bool = True):
        self.files = {"m.net": SMALL.encode(), **tiny_dataset()}
        self.error = None
        if not train:
            return
        d = workdir / "base"
        write_files(d, self.files)
        r = run_netdsl(RUN + ["--save", "w.npz", "--checkpoint", "ck.npz", "--checkpoint-every", "2"], d, 300)
        if r[0] != 0 or not (d / "w.npz").exists() or not (d / "ck.npz").exists():
            self.error = f"the base run failed (rc {r[0]}): {r[2][-300:]}"
            return
        self.weights = (d / "w.npz").read_bytes()
        self.checkpoint = (d / "ck.npz").read_bytes()


def write_files(d: Path, files: dict) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if content == "fifo":
            os.mkfifo(p)
        elif content == "chardev":  # a private copy of /dev/null: if it is clobbered, nothing real is
            os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        elif content == "dir":
            p.mkdir(exist_ok=True)
        elif isinstance(content, tuple) and content[0] == "link":
            p.symlink_to(content[1])
        elif isinstance(content, tuple) and content[0] == "mode":
            p.write_bytes(content[2])
            p.chmod(content[1])
        else:
            p.write_bytes(content)


def snapshot(d: Path) -> dict:
    """What each entry under d is: its kind and, for a regular file, its mode and content hash."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = os.lstat(p)
        rel = str(p.relative_to(d))
        if stat.S_ISREG(st.st_mode):
            out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
        elif stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        else:
            out[rel] = (stat.S_IFMT(st.st_mode), st.st_rdev)
    return out


# the bounds are set by a small launcher that then execs netdsl: a preexec_fn is unsafe with --jobs threads
LAUNCHER = ("import os, resource, sys\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))\n"
            "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
            "os.execv(sys.executable, [sys.executable, '-m', 'netdsl', *sys.argv[1:]])\n")


def run_netdsl(argv, cwd: Path, timeout: float, stdout: str = "pipe", kill_after: float | None = None):
    """(returncode or "hang", stdout, stderr) of `python -m netdsl argv` in cwd.

    kill_after: send SIGKILL to the whole process group after that many seconds (training faults)."""
    env = dict(os.environ, PYTHONPATH=str(NETDSL_ROOT), NETDSL_DATA=str(cwd), PYTHONHASHSEED="0")
    out = open("/dev/full", "w") if stdout == "full" else tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, start_new_session=True)
        try:
            rc = proc.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "killed" if kill_after is not None else "hang"
        if stdout == "full":
            text = ""
        else:
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        err.seek(0)
        return rc, text, err.read().decode("utf-8", "replace")
    finally:
        out.close()
        err.close()


# ------------------------------------------------------------------ judging
def judge(trial: Trial, d: Path, before: dict, rc, out: str, errtext: str) -> tuple[str, str]:
    """(verdict, reason): verdict is ok, clean, crash or lost."""
    if rc == "hang":
        return "crash", f"no answer in {trial.timeout:.0f} s"
    if "Traceback (most recent call last)" in errtext:
        return "crash", "traceback: " + errtext.strip().splitlines()[-1][:200]
    if isinstance(rc, int) and rc < 0:
        return "crash", f"killed by signal {-rc}"
    if rc not in (0, 1, 2):
        return "crash", f"exit code {rc}"
    after = snapshot(d)
    for name, was in before.items():
        now = after.get(name)
        if now == was:
            continue
        if name in trial.outputs and rc == 0 and (now is None or now[0] == was[0] == "file"):
            continue
        if now is not None and now[:2] == was[:2]:
            return "lost", f"{name}: its content changed"
        return "lost", f"{name} changed from {was[:2]} to {now[:2] if now else 'nothing'}"
    if rc != 0 and not errtext.strip():
        return "crash", f"exit {rc} without a message"
    if rc == 0 and trial.payload_check:
        code = (d / "out.py").read_text(encoding="utf-8") if (d / "out.py").exists() else out
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            return "crash", f"generated code does not parse: {e}"
        for node in ast.walk(tree):
            ident = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", None)
            if isinstance(ident, str) and "PWNED" in ident:
                return "crash", f"payload became code: {ident}"
    return ("ok" if rc == 0 else "clean"), ""


# ------------------------------------------------------------------ generators, one per class
ONE_MB = 1_000_000


def gen_parser(rng: random.Random, base: Base) -> Trial:
    shapes = {
        "assignments": lambda: "a = 1\n" * (ONE_MB // 6),
        "tuple": lambda: "t = (" + "1," * (ONE_MB // 2 - 10) + ")\n",
        "escaped-quotes": lambda: '"' + '\\"' * (ONE_MB // 2 - 1),
        "brackets": lambda: "a = " + "(" * 100 + "()" * (ONE_MB // 2 - 200) + ")" * 100,
        "deep-brackets": lambda: "a = " + "(" * 5000 + "1" + ")" * 5000,
        "nul-bytes": lambda: "model M\x00\n" * 1000,
    }
    if rng.random() < 0.05:
        name = rng.choice(sorted(shapes))
        text = shapes[name]()
    else:
        gen = rng.choice([fuzz.gen_mutation, fuzz.gen_crossover, fuzz.gen_deep, fuzz.gen_recursion,
                          fuzz.gen_program, fuzz.gen_token_stream])
        name, text = gen.__name__, gen(rng)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data) + 1)] + bytes([rng.randrange(128, 256)])  # not UTF-8
    return Trial("parser", f"check: {name}", ["check", "m.net"], {"m.net": data}, timeout=60)


PAYLOADS = ['"""; PWNED() #', "'; PWNED(); '", "\\n PWNED()", "\\u2028PWNED()", "\\r\\nimport PWNED",
            "{{ PWNED }}", "{% PWNED %}", "${PWNED}", "\\\\'); PWNED('", "\\x00PWNED", "%(PWNED)s", "`PWNED`"]


def gen_injection(rng: random.Random, base: Base) -> Trial:
    p = rng.choice(PAYLOADS)
    quoted = '"' + p.replace('"', '\\"') + '"'
    places = [
        lambda: MODEL.replace('"tiny"', quoted),
        lambda: MODEL.replace("output z", f"# {p}\noutput z"),
        lambda: MODEL.replace("h = Dense(200", f"h = Dense(200, name={quoted}"),
        # a model name is an identifier: ones the generated code uses itself must be refused
        lambda: MODEL.replace("model MlpRelu", "model " + rng.choice(["__import__", "torch", "os", "self", "eval",
                                                                      "build_model", "class", "Model"])),
        lambda: MODEL.replace("activation=relu", f"activation={quoted}"),
        lambda: MODEL.replace("metrics = [accuracy]", f"metrics = [{quoted}]"),
    ]
    text = rng.choice(places)()
    target = rng.choice(TARGETS)
    argv = ["compile", "m.net", "--target", target] + (["-o", "out.py"] if rng.random() < 0.5 else [])
    return Trial("injection", f"compile {target}: payload {p!r}", argv, {"m.net": text.encode()},
                 outputs=("out.py",), payload_check=True, timeout=120)


def _npz(arrays: dict, pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    if pickle:
        np.savez(buf, **{k: np.asarray(v, dtype=object) if k.endswith("!") else v for k, v in arrays.items()})
    else:
        np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(data: bytes) -> dict:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _huge_npy_header() -> bytes:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64


def mutate_arrays(rng: random.Random, arrays: dict, keys: list) -> tuple[dict, str]:
    arrays = dict(arrays)
    k = rng.choice(keys)
    a = arrays[k]
    kinds = {
        "short": lambda: np.zeros(1, a.dtype),
        "empty": lambda: np.zeros((0,), a.dtype),
        "transposed": lambda: a.T.copy() if a.ndim > 1 else a.reshape(-1)[:-1],  # 0-d: an empty one
        "int8": lambda: a.astype(np.int8),
        "float64": lambda: a.astype(np.float64),
        "nan": lambda: np.full_like(a, np.nan) if a.dtype.kind == "f" else a,
        "inf": lambda: np.full_like(a, np.inf) if a.dtype.kind == "f" else a,
        "strings": lambda: np.array(["x"] * max(a.size, 1)),
        "bool": lambda: a.astype(bool),
        "complex": lambda: a.astype(np.complex64),
        "datetime": lambda: np.zeros(a.shape, "datetime64[s]"),
        "scalar": lambda: np.float32(1.0),
        "huge-value": lambda: np.full_like(a, 3e38) if a.dtype.kind == "f" else a,
        "3d": lambda: a.reshape((1,) + a.shape),
    }
    kind = rng.choice(sorted(kinds) + ["missing", "extra"])
    if kind == "missing":
        del arrays[k]
    elif kind == "extra":
        arrays[k + "_extra"] = np.zeros(3, np.float32)
    else:
        arrays[k] = kinds[kind]()
    return arrays, f"{k}: {kind}"


def raw_npz_damage(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    kind = rng.choice(["truncated", "random-bytes", "empty", "flipped", "huge-header", "not-zip", "pickle"])
    if kind == "truncated":
        return data[: rng.randrange(len(data))], kind
    if kind == "random-bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096))), kind
    if kind == "empty":
        return b"", kind
    if kind == "flipped":
        b = bytearray(data)
        for _ in range(rng.randrange(1, 20)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        return bytes(b), kind
    if kind == "huge-header":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for name in zipfile.ZipFile(io.BytesIO(data)).namelist():
                z.writestr(name, _huge_npy_header())
        return buf.getvalue(), kind
    if kind == "pickle":
        buf = io.BytesIO()
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for name in zipfile.ZipFile(io.BytesIO(data)).namelist():
                z.writestr(name, buf.getvalue())
        return out.getvalue(), kind
    return b"PK\x03\x04" + data[4:64], kind


def gen_weights(rng: random.Random, base: Base) -> Trial:
    if rng.random() < 0.3:
        data, what = raw_npz_damage(rng, base.weights)
    else:
        arrays = _load_npz(base.weights)
        arrays, what = mutate_arrays(rng, arrays, sorted(arrays))
        data = _npz(arrays)
    return Trial("weights", f"--load: {what}", RUN + ["--load", "w.npz", "--eval-only"],
                 {**base.files, "w.npz": data}, timeout=120)


META_CHANGES = {
    "drop-key": None, "list-meta": None, "batch-0": ("batch_size", 0), "batch-neg": ("batch_size", -4),
    "step-neg": ("step", -1), "epoch-huge": ("epoch", 10 ** 12), "seed-str": ("seed", "x"),
    "n-train-0": ("n_train", 0), "format-2": ("format", 2), "model-other": ("model", "Other"),
    "optimizer-other": ("optimizer", "SGD"), "rng-bad": ("rng_state", {"bit_generator": "nope"}),
    "lr-nan": ("lr", float("nan")), "step-float": ("step", 1.5),
}


def gen_checkpoints(rng: random.Random, base: Base) -> Trial:
    arrays = _load_npz(base.checkpoint)
    r = rng.random()
    if r < 0.2:
        data, what = raw_npz_damage(rng, base.checkpoint)
    elif r < 0.55 and "meta" in arrays:
        meta = json.loads(str(arrays["meta"][()]))
        kind = rng.choice(sorted(META_CHANGES))
        if kind == "drop-key" and meta:
            meta.pop(rng.choice(sorted(meta)))
        elif kind == "list-meta":
            meta = [meta]
        else:
            key, value = META_CHANGES[kind]
            meta[key] = value
        arrays["meta"] = np.array(json.dumps(meta))
        data, what = _npz(arrays), f"meta: {kind}"
    else:
        keys = sorted(k for k in arrays if k != "meta")
        arrays, what = mutate_arrays(rng, arrays, keys)
        data = _npz(arrays)
    return Trial("checkpoints", f"--resume: {what}", RUN + ["--checkpoint", "ck.npz", "--resume", "--epochs", "2"],
                 {**base.files, "ck.npz": data}, outputs=("ck.npz",), timeout=120)


def gen_datasets(rng: random.Random, base: Base) -> Trial:
    files = dict(base.files)
    key = rng.choice(sorted(k for k in files if k.startswith("tiny/")))
    data = files[key]
    kind = rng.choice(["huge-count-gz", "zero-dims", "bad-magic", "truncated", "labels-out-of-range",
                       "count-mismatch", "dtype-code", "corrupt-gz", "ndim-0", "empty", "huge-dim"])
    ndim = data[3]
    if kind == "huge-count-gz":  # a small gzip that claims 2.7 million images
        header = struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 2_700_000, 28, 28)
        data = gzip.compress(header + bytes(28 * 28 * 1000), compresslevel=1)
        key += ".gz"
        files.pop(key[:-3])
    elif kind == "zero-dims":
        data = struct.pack(">BBBB", 0, 0, 8, 255) + b"\x00" * (4 * 255)
    elif kind == "bad-magic":
        data = b"\x01\x02" + data[2:]
    elif kind == "truncated":
        data = data[: rng.randrange(len(data))]
    elif kind == "labels-out-of-range":
        data = data[: 4 + 4 * ndim] + bytes([200]) * (len(data) - 4 - 4 * ndim)
    elif kind == "count-mismatch":
        data = data[:4] + struct.pack(">I", struct.unpack(">I", data[4:8])[0] - 1) + data[8:]
    elif kind == "dtype-code":
        data = data[:2] + bytes([rng.choice([0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x42])]) + data[3:]
    elif kind == "corrupt-gz":
        gz = bytearray(gzip.compress(data))
        gz[len(gz) // 2] ^= 0xFF
        data = bytes(gz)
        files.pop(key)
        key += ".gz"
    elif kind == "ndim-0":
        data = data[:3] + b"\x00"
    elif kind == "empty":
        data = b""
    elif kind == "huge-dim":
        data = data[:4] + struct.pack(">I", 0xFFFFFFFF) + data[8:]
    files[key] = data
    return Trial("datasets", f"{key}: {kind}", RUN + ["--epochs", "1", "--limit-train", "64"], files, timeout=120)


def gen_cli(rng: random.Random, base: Base) -> Trial:
    m = {"m.net": SMALL.encode()}
    cases = [
        ("check a FIFO", ["check", "f.net"], {"f.net": "fifo"}),
        ("summary a FIFO", ["summary", "f.net"], {"f.net": "fifo"}),
        ("ir a FIFO", ["ir", "f.net"], {"f.net": "fifo"}),
        ("compile a FIFO", ["compile", "f.net", "--target", rng.choice(TARGETS)], {"f.net": "fifo"}),
        ("ir --load a FIFO", ["ir", "--load", "f.json"], {"f.json": "fifo"}),
        ("check a directory", ["check", "d.net"], {"d.net": "dir"}),
        ("check a missing file", ["check", "nope.net"], {}),
        ("check non-UTF-8", ["check", "m.net"], {"m.net": SMALL.encode()[:40] + b"\xff\xfe" + SMALL.encode()[40:]}),
        ("compile --check non-UTF-8", ["compile", "m.net", "--target", "pytorch", "--check", "old.py"],
         {**m, "old.py": b"\xff\xfe\x00 not text"}),
        ("compile --check a FIFO", ["compile", "m.net", "--target", "keras", "--check", "old.py"], {**m, "old.py": "fifo"}),
        ("compile to a full disk", ["compile", "m.net", "--target", rng.choice(TARGETS)], m, "full"),
        ("ir to a full disk", ["ir", "m.net"], m, "full"),
        ("summary to a full disk", ["summary", "m.net"], m, "full"),
        ("ir --load deep JSON", ["ir", "--load", "g.json"], {"g.json": b"[" * 200_000 + b"]" * 200_000}),
        ("ir --load NaN", ["ir", "--load", "g.json"], {"g.json": b'{"_type": "Graph", "name": NaN}'}),
        ("ir --load garbage", ["ir", "--load", "g.json"],
         {"g.json": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))}),
        ("ir --load wrong types", ["ir", "--load", "g.json"], {"g.json": b'{"_type": "Graph", "layers": {"_type": 1}}'}),
        ("bad flag", ["compile", "m.net", "--target", "fortran"], m),
        ("-o with --check", ["compile", "m.net", "--target", "pytorch", "-o", "a.py", "--check", "b.py"], m),
        ("no command", [], {}),
        ("run --resume without --checkpoint", RUN + ["--resume"], base.files),
    ]
    case = rng.choice(cases)
    what, argv, files = case[:3]
    return Trial("cli", what, argv, files, stdout=case[3] if len(case) > 3 else "pipe", timeout=60)


def gen_compile_o(rng: random.Random, base: Base) -> Trial:
    lib = b"def Block(n) = Dense(n, activation=relu)\n"
    main = b'import "lib.net"\n' + SMALL.encode()
    target = rng.choice(TARGETS)
    is_root = os.geteuid() == 0
    cases = [
        ("onto the model", "m.net", {}),
        ("onto an import", "lib.net", {}),
        ("onto a symlink to the model", "link.py", {"link.py": ("link", "m.net")}),
        ("onto a FIFO", "f.py", {"f.py": "fifo"}),
        ("onto a directory", "d", {"d": "dir"}),
        ("into a missing directory", "no/such/out.py", {}),
        ("into /proc", "/proc/netdsl-hostile.py", {}),
        ("a new file", "out.py", {}),
        ("over an existing file, mode 0640", "out.py", {"out.py": ("mode", 0o640, b"old\n")}),
        ("over an existing file, mode 0755", "out.py", {"out.py": ("mode", 0o755, b"old\n")}),
        ("over a read-only file", "out.py", {"out.py": ("mode", 0o444, b"old\n")}),
    ]
    if is_root:
        cases.append(("onto a device node", "null", {"null": "chardev"}))
    else:
        cases.append(("into a read-only directory", "ro/out.py", {"ro": "dir"}))
    what, out, extra = rng.choice(cases)
    files = {"m.net": main, "lib.net": lib, **extra}
    return Trial("compile-o", f"{target}: {what}", ["compile", "m.net", "--target", target, "-o", out], files,
                 outputs=("out.py",), timeout=120)


def gen_run_paths(rng: random.Random, base: Base) -> Trial:
    is_root = os.geteuid() == 0
    cases = [
        ("--save onto the model", ["--save", "m.net"], {}),
        ("--checkpoint onto the model", ["--checkpoint", "m.net"], {}),
        ("--checkpoint onto the model, --resume", ["--checkpoint", "m.net", "--resume"], {}),
        ("--save onto a FIFO", ["--save", "f.npz"], {"f.npz": "fifo"}),
        ("--load a FIFO", ["--load", "f.npz"], {"f.npz": "fifo"}),
        ("--checkpoint a FIFO, --resume", ["--checkpoint", "f.npz", "--resume"], {"f.npz": "fifo"}),
        ("--save onto a directory", ["--save", "d"], {"d": "dir"}),
        ("--save into a missing directory", ["--save", "no/w.npz"], {}),
        ("--save onto its --load", ["--load", "w.npz", "--save", "w.npz"], {"w.npz": base.weights}),
        ("--checkpoint over an existing one, no --resume", ["--checkpoint", "ck.npz"], {"ck.npz": base.checkpoint}),
        ("--save onto a dataset file", ["--save", "tiny/train-labels-idx1-ubyte"], {}),
    ]
    if is_root:
        cases.append(("--save onto a device node", ["--save", "null"], {"null": "chardev"}))
    what, extra_argv, extra = rng.choice(cases)
    return Trial("run-paths", what, RUN + ["--epochs", "1"] + extra_argv, {**base.files, **extra}, timeout=120)


def gen_training(rng: random.Random, base: Base) -> Trial:
    # run_trial handles this class: train with --checkpoint-every 1, SIGKILL after `delay`, resume.
    delay = round(rng.uniform(0.3, 5.0), 2)  # start-up takes about 1.5 s: some kills land before training
    trial = Trial("training", f"kill -9 after {delay} s, then resume",
                  RUN + ["--checkpoint", "ck.npz", "--resume", "--epochs", "150", "--checkpoint-every", "1"],
                  {**base.files, "ck.npz": base.checkpoint}, outputs=("ck.npz",), timeout=180)
    trial.kill_after = delay
    return trial


GENERATORS = {"parser": gen_parser, "injection": gen_injection, "weights": gen_weights,
              "checkpoints": gen_checkpoints, "datasets": gen_datasets, "cli": gen_cli,
              "compile-o": gen_compile_o, "run-paths": gen_run_paths, "training": gen_training}
NEEDS_BASE = {"weights", "checkpoints", "training"}


# ------------------------------------------------------------------ running
def run_trial(trial: Trial, d: Path) -> tuple[str, str]:
    write_files(d, trial.files)
    before = snapshot(d)
    if trial.cls == "training":
        rc, out, err = run_netdsl(trial.argv, d, trial.timeout, kill_after=trial.kill_after)
        if rc != "killed":  # finished before the kill: judge it as a normal run
            verdict, why = judge(trial, d, before, rc, out, err)
            return verdict, why or "finished before the kill"
        # the kill may leave a temp file mid-write: age it past fsutil's 60 s guard (which spares a live
        # concurrent writer), as if the resume came later; the resume must then remove it
        for p in d.iterdir():
            if p.name.endswith(".netdsl-tmp"):
                os.utime(p, (time.time() - 120, time.time() - 120))
        rc, out, err = run_netdsl(trial.argv, d, trial.timeout)  # resume after the kill
        if rc == 1 and "checkpoint" in err.lower():
            return "lost", "the checkpoint left by kill -9 does not load: " + err.strip()[-200:]
        verdict, why = judge(trial, d, before, rc, out, err)
        temps = [p.name for p in d.iterdir() if p.name.endswith(".netdsl-tmp")]
        if verdict in ("ok", "clean") and temps:
            return "crash", f"the resume left stale temp files: {temps}"
        return verdict, why
    rc, out, err = run_netdsl(trial.argv, d, trial.timeout, trial.stdout)
    verdict, why = judge(trial, d, before, rc, out, err)
    if trial.cls == "compile-o" and verdict == "ok" and "mode" in trial.what:
        want = int(trial.what.rsplit("mode ", 1)[1], 8)
        got = stat.S_IMODE(os.stat(d / "out.py").st_mode)
        if got != want:
            return "lost", f"out.py mode changed from {want:o} to {got:o}"
    if trial.cls == "compile-o" and verdict == "ok" and trial.what.endswith("a new file"):
        mask = os.umask(0)
        os.umask(mask)
        got = stat.S_IMODE(os.stat(d / "out.py").st_mode)
        if got != 0o666 & ~mask:
            return "lost", f"new out.py has mode {got:o}, not {0o666 & ~mask:o} (umask {mask:o})"
    return verdict, why


def schedule(classes, mix: dict | None = None) -> list:
    """The cycle of classes trial i is drawn from (trial i gets cycle[i % len]): mix gives each class a
    weight (default 1), and the weights are interleaved so that any prefix of a campaign covers every class."""
    weights = {c: (mix or {}).get(c, 1) for c in classes}
    return [c for r in range(max(weights.values())) for c in classes if weights[c] > r]


def campaign(n: int, seed: str, time_limit: float, classes, workdir: Path, log=print, replay=None, mix=None,
             jobs: int = 1) -> dict:
    """Run up to n trials, classes weighted by mix, on `jobs` threads, for at most time_limit seconds."""
    totals = {c: {"tried": 0, "ok": 0, "clean": 0, "crash": 0, "lost": 0, "seconds": 0.0} for c in classes}
    findings = []
    base = Base(workdir, train=bool(NEEDS_BASE & set(classes)))
    if base.error:
        log(f"note: {base.error}; classes {sorted(NEEDS_BASE & set(classes))} are skipped")
        classes = [c for c in classes if c not in NEEDS_BASE]
        if not classes:
            return {"totals": totals, "findings": findings}
    cycle = schedule(classes, mix)
    t0 = time.monotonic()

    def one(i):
        if time.monotonic() - t0 > time_limit:
            return None
        rng = random.Random(f"{seed}:{i}")
        cls = cycle[i % len(cycle)]
        trial = GENERATORS[cls](rng, base)
        d = workdir / f"t{i}"
        start = time.monotonic()
        try:
            verdict, why = run_trial(trial, d)
        finally:
            if replay is None:
                _remove(d)
        if verdict in ("crash", "lost"):
            log(f"[{i}] {cls}: {trial.what}: {verdict.upper()}: {why}")
        elif why:
            log(f"[{i}] {cls}: {trial.what}: {verdict}, note: {why}")
        if i % 100 == 99:
            log(f"... trial {i + 1} of {n}, {time.monotonic() - t0:.0f} s")
        return i, cls, trial.what, verdict, why, time.monotonic() - start

    indices = [replay] if replay is not None else range(n)
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        results = list(pool.map(one, indices))
    skipped = sum(r is None for r in results)
    if skipped:
        log(f"time limit reached: {skipped} of {len(results)} trials not run")
    for i, cls, what, verdict, why, seconds in filter(None, results):
        t = totals[cls]
        t["tried"] += 1
        t[verdict] += 1
        t["seconds"] += seconds
        if verdict in ("crash", "lost"):
            findings.append((i, cls, what, verdict, why))
    return {"totals": totals, "findings": findings}


def _remove(d: Path) -> None:
    for p in [d, *d.rglob("*")]:
        try:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        except OSError:
            pass
    shutil.rmtree(d, ignore_errors=True)


def table(totals: dict) -> str:
    rows = ["| class | tried | ok | clean diagnostic | crash | data lost | seconds (sum of trials) |",
            "|---|---|---|---|---|---|---|"]
    for c, t in totals.items():
        rows.append(f"| {c} | {t['tried']} | {t['ok']} | {t['clean']} | {t['crash']} | {t['lost']} | "
                    f"{t['seconds']:.0f} |")
    s = {k: sum(t[k] for t in totals.values()) for k in ("tried", "ok", "clean", "crash", "lost", "seconds")}
    rows.append(f"| all | {s['tried']} | {s['ok']} | {s['clean']} | {s['crash']} | {s['lost']} | "
                f"{s['seconds']:.0f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="number of trials (default 200)")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--time-limit", type=float, default=600.0, metavar="T", help="stop after T seconds (default 600)")
    ap.add_argument("--classes", default=",".join(CLASSES), help="comma-separated subset of: " + ", ".join(CLASSES))
    ap.add_argument("--mix", default="", metavar="C=W,...",
                    help="weight of each class in the round-robin (default 1 each), e.g. parser=4,training=1")
    ap.add_argument("--jobs", type=int, default=1, help="trials run at once (default 1)")
    ap.add_argument("--replay", type=int, metavar="I", help="run only trial I and keep its directory")
    ap.add_argument("--netdsl-root", metavar="DIR", help="attack the netdsl of this checkout (default: this one)")
    args = ap.parse_args(argv)
    if args.netdsl_root:
        global NETDSL_ROOT
        NETDSL_ROOT = Path(args.netdsl_root).resolve()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        mix = {c.strip(): int(w) for c, w in (x.split("=") for x in args.mix.split(",") if x.strip())}
    except ValueError:
        ap.error("--mix wants class=weight pairs, e.g. parser=4,training=1")
    if any(w < 1 for w in mix.values()):
        ap.error("--mix weights are whole numbers >= 1")
    unknown = sorted((set(classes) | set(mix)) - set(CLASSES))
    if unknown:
        ap.error(f"unknown classes: {', '.join(unknown)}")
    workdir = Path(tempfile.mkdtemp(prefix="netdsl-hostile-"))
    t0 = time.monotonic()
    try:
        result = campaign(args.n, args.seed, args.time_limit, classes, workdir, replay=args.replay, mix=mix,
                          jobs=args.jobs)
    finally:
        if args.replay is None:
            _remove(workdir)
        else:
            print(f"kept {workdir}")
    print(f"\n{' '.join(['python', 'bench/hostile.py', *(argv if argv is not None else sys.argv[1:])])}")
    print(f"seed {args.seed}, {time.monotonic() - t0:.0f} s\n")
    print(table(result["totals"]))
    bad = sum(t["crash"] + t["lost"] for t in result["totals"].values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
