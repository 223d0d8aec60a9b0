"""GLUE tasks: reading, tokenizing and partitioning the data of the fine-tuning runs.

Two sources, same result (a :class:`TaskData` of text pairs and labels):

* **offline** (``data_dir`` given): GLUE's original TSV files, the layout of ``glue_data/<TASK>/``
  written by the old ``download_glue_data.py`` (``../shared/data/glue/`` here). The files are
  read with ``csv.QUOTE_NONE`` (some sentences hold unbalanced ``"``), CoLA has no header, and
  MRPC's header starts with a UTF-8 byte-order mark. Every file with a header is checked
  against the expected column names, so a file of the wrong task or layout is refused with a
  message naming it instead of being silently misread.
* **online** (``data_dir=None``): Hugging Face ``datasets`` ``load_dataset("glue", task)``.

Labels follow the Hugging Face ``glue`` convention (RTE/QNLI: entailment = 0,
not_entailment = 1; MNLI: entailment = 0, neutral = 1, contradiction = 2; STS-B: a float
score in [0, 5], a regression target).

The training set is split i.i.d. over the ``K`` devices (paper Sec. II-A: "the localized
data is assumed to be i.i.d."): one seeded permutation cut into ``K`` near-equal shards.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loladeft.exceptions import InputError


@dataclass(frozen=True)
class TaskSpec:
    """How one GLUE task is stored and scored.

    Attributes
    ----------
    name
        Lower-case task name (``"mrpc"``).
    folder
        Folder name in ``glue_data/`` (``"MRPC"``).
    header
        Expected header columns of the TSV, or ``None`` if the file has none (CoLA).
    text_a, text_b
        Column (name, or index for header-less files) of the first and second text;
        ``text_b`` is ``None`` for single-sentence tasks.
    label
        Column of the label.
    label_names
        Names of the string labels in order of their class index, or ``None`` when the
        column already holds the class index (``"0"``/``"1"``) or a float score.
    num_labels
        Classifier outputs (1: regression).
    dev_files
        Evaluation file(s) in the folder; the first is the one the metric is read from.
    hf_fields
        Field names in Hugging Face ``glue/<task>`` (text_a, text_b or None).
    hf_dev
        Hugging Face evaluation split name(s), matching ``dev_files``.
    """

    name: str
    folder: str
    header: tuple[str, ...] | None
    text_a: str | int
    text_b: str | int | None
    label: str | int
    label_names: tuple[str, ...] | None
    num_labels: int
    dev_files: tuple[str, ...]
    hf_fields: tuple[str, str | None]
    hf_dev: tuple[str, ...]

    @property
    def is_regression(self) -> bool:
        """STS-B predicts a score."""
        return self.num_labels == 1


_NLI2 = ("entailment", "not_entailment")

#: The eight GLUE tasks of Table I.
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "cola",
            "CoLA",
            None,
            3,
            None,
            1,
            None,
            2,
            ("dev.tsv",),
            ("sentence", None),
            ("validation",),
        ),
        TaskSpec(
            "sst2",
            "SST-2",
            ("sentence", "label"),
            "sentence",
            None,
            "label",
            None,
            2,
            ("dev.tsv",),
            ("sentence", None),
            ("validation",),
        ),
        TaskSpec(
            "mrpc",
            "MRPC",
            ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
            "#1 String",
            "#2 String",
            "Quality",
            None,
            2,
            ("dev.tsv",),
            ("sentence1", "sentence2"),
            ("validation",),
        ),
        TaskSpec(
            "stsb",
            "STS-B",
            (
                "index",
                "genre",
                "filename",
                "year",
                "old_index",
                "source1",
                "source2",
                "sentence1",
                "sentence2",
                "score",
            ),
            "sentence1",
            "sentence2",
            "score",
            None,
            1,
            ("dev.tsv",),
            ("sentence1", "sentence2"),
            ("validation",),
        ),
        TaskSpec(
            "rte",
            "RTE",
            ("index", "sentence1", "sentence2", "label"),
            "sentence1",
            "sentence2",
            "label",
            _NLI2,
            2,
            ("dev.tsv",),
            ("sentence1", "sentence2"),
            ("validation",),
        ),
        TaskSpec(
            "qnli",
            "QNLI",
            ("index", "question", "sentence", "label"),
            "question",
            "sentence",
            "label",
            _NLI2,
            2,
            ("dev.tsv",),
            ("question", "sentence"),
            ("validation",),
        ),
        TaskSpec(
            "qqp",
            "QQP",
            ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            "question1",
            "question2",
            "is_duplicate",
            None,
            2,
            ("dev.tsv",),
            ("question1", "question2"),
            ("validation",),
        ),
        TaskSpec(
            "mnli",
            "MNLI",
            None,
            "sentence1",
            "sentence2",
            "gold_label",
            ("entailment", "neutral", "contradiction"),
            3,
            ("dev_matched.tsv", "dev_mismatched.tsv"),
            ("premise", "hypothesis"),
            ("validation_matched", "validation_mismatched"),
        ),
    )
}

#: Accepted spellings of task names (``"SST-2"``, ``"sts-b"``...).
_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def get_task(name: str) -> TaskSpec:
    """Look up a task by name (case-insensitive; ``SST-2`` and ``sst2`` both work)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise InputError(f"task: unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[key]


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a task: texts and labels, row-aligned."""

    text_a: list[str]
    text_b: list[str] | None
    labels: NDArray[Any]  # int64 class indices, or float64 scores for regression
    source: str

    def __len__(self) -> int:
        return len(self.text_a)


@dataclass(frozen=True, eq=False)
class TaskData:
    """Training split and evaluation split(s) of one task."""

    task: TaskSpec
    train: Split
    dev: tuple[Split, ...]


# ------------------------------------------------------------------------------ TSV files
def _read_tsv(path: Path) -> list[list[str]]:
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return [row for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
    except UnicodeDecodeError as exc:
        raise InputError(f"data: {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"data: cannot read {path}: {exc.strerror}") from None


def _column(path: Path, header: list[str], name: str | int) -> int:
    if isinstance(name, int):
        return name
    if name not in header:
        raise InputError(
            f"data: {path} has no column {name!r} (wrong TSV layout for this task? "
            f"its header is: {', '.join(header)})"
        )
    return header.index(name)


def read_tsv_split(task: TaskSpec, path: Path) -> Split:
    """Read one GLUE TSV file of ``task`` (see the module docstring for the layout rules).

    Raises
    ------
    InputError
        The file is missing, unreadable, or not in this task's layout (header, column count,
        or a label that is not one of the task's labels).
    """
    if not path.is_file():
        raise InputError(f"data: {path} does not exist")
    rows = _read_tsv(path)
    if not rows:
        raise InputError(f"data: {path} is empty")
    if task.header is not None or task.name == "mnli":
        header = [h.strip() for h in rows[0]]
        if task.header is not None and tuple(header[: len(task.header)]) != task.header:
            raise InputError(
                f"data: {path} does not have the {task.folder} header "
                f"({', '.join(task.header)}); got: {', '.join(header[:6])} - wrong TSV layout"
            )
        rows = rows[1:]
    else:
        header = []
    ia = _column(path, header, task.text_a)
    ib = None if task.text_b is None else _column(path, header, task.text_b)
    il = _column(path, header, task.label)
    # MNLI's label is its last column; header-less CoLA has exactly 4 columns.
    width = len(header) if header else 4
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[Any] = []
    for n, row in enumerate(rows, start=2 if header else 1):
        if len(row) < width or (not header and len(row) != width):
            raise InputError(
                f"data: {path} line {n} has {len(row)} columns, expected {width} "
                f"(wrong TSV layout for {task.folder}?)"
            )
        raw = row[-1] if task.name == "mnli" else row[il]
        labels.append(_parse_label(task, raw.strip(), path, n))
        text_a.append(row[ia])
        if ib is not None:
            text_b.append(row[ib])
    if not labels:
        raise InputError(f"data: {path} has no data rows")
    dtype = np.float64 if task.is_regression else np.int64
    return Split(
        text_a, text_b if ib is not None else None, np.asarray(labels, dtype=dtype), str(path)
    )


def _parse_label(task: TaskSpec, raw: str, path: Path, line: int) -> Any:
    if task.label_names is not None:
        if raw not in task.label_names:
            raise InputError(
                f"data: {path} line {line}: label {raw!r} is not one of "
                f"{', '.join(task.label_names)} (wrong TSV layout?)"
            )
        return task.label_names.index(raw)
    try:
        value = float(raw) if task.is_regression else int(raw)
    except ValueError:
        raise InputError(
            f"data: {path} line {line}: label {raw!r} is not "
            f"{'a number' if task.is_regression else 'a class index'} (wrong TSV layout?)"
        ) from None
    if not task.is_regression and not 0 <= value < task.num_labels:
        raise InputError(f"data: {path} line {line}: label {value} out of range")
    if task.is_regression and not abs(value) <= MAX_REGRESSION_LABEL:  # also nan, inf
        raise InputError(f"data: {path} line {line}: label {raw!r} {_NOT_FINITE}")
    return value


#: Largest regression label: its squared error must stay finite in float32 (max 3.4e38).
MAX_REGRESSION_LABEL = 1e18
_NOT_FINITE = f"is not a finite number of magnitude <= {MAX_REGRESSION_LABEL:g}"


def load_task(task: str | TaskSpec, data_dir: str | Path | None = None) -> TaskData:
    """Load the training and evaluation splits of a GLUE task.

    Parameters
    ----------
    task
        Task name (``"mrpc"``) or :class:`TaskSpec`.
    data_dir
        Folder holding ``<TASK>/train.tsv`` and ``<TASK>/dev.tsv`` (e.g. ``../shared/data/glue``),
        or the task folder itself. ``None``: download ``glue/<task>`` with Hugging Face
        ``datasets`` (needs the network).

    Raises
    ------
    InputError
        Unknown task, missing folder or file, or a file in the wrong layout.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if data_dir is None:
        return _load_hf(spec)
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"data-dir: {root} is not a folder")
    folder = root / spec.folder
    if not folder.is_dir():
        if (root / "train.tsv").is_file():
            folder = root
        else:
            raise InputError(f"data-dir: {root} has no {spec.folder}/ folder for task {spec.name}")
    train = read_tsv_split(spec, folder / "train.tsv")
    dev = tuple(read_tsv_split(spec, folder / name) for name in spec.dev_files)
    return TaskData(spec, train, dev)


def _load_hf(spec: TaskSpec) -> TaskData:  # pragma: no cover - needs the network
    try:
        import datasets
    except ImportError:
        raise InputError(
            "data-dir: not given and the 'datasets' package is not installed; pass --data-dir "
            "with GLUE TSV files (e.g. ../shared/data/glue)"
        ) from None
    try:
        ds = datasets.load_dataset("glue", spec.name)
    except Exception as exc:
        raise InputError(
            f"data-dir: could not download glue/{spec.name} ({type(exc).__name__}); pass "
            "--data-dir with GLUE TSV files to run offline"
        ) from None
    fa, fb = spec.hf_fields

    def split(name: str) -> Split:
        part = ds[name]
        dtype = np.float64 if spec.is_regression else np.int64
        labels = np.asarray(part["label"], dtype=dtype)
        if spec.is_regression and not np.all(np.abs(labels) <= MAX_REGRESSION_LABEL):
            row = int(np.argmin(np.abs(labels) <= MAX_REGRESSION_LABEL))
            raise InputError(f"data: hf:glue/{spec.name}/{name} row {row}: label {_NOT_FINITE}")
        return Split(
            list(part[fa]),
            None if fb is None else list(part[fb]),
            labels,
            f"hf:glue/{spec.name}/{name}",
        )

    return TaskData(spec, split("train"), tuple(split(n) for n in spec.hf_dev))


# ------------------------------------------------------------------------------ tokenizing
@dataclass(frozen=True, eq=False)
class Encoded:
    """A tokenized split: variable-length token lists (padding happens per batch)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: NDArray[Any]

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split: Split, tokenizer: Any, max_length: int) -> Encoded:
    """Tokenize a split without padding (dynamic padding happens in :func:`collate`)."""
    args = (split.text_a,) if split.text_b is None else (split.text_a, split.text_b)
    enc = tokenizer(*args, truncation=True, max_length=max_length, padding=False)
    types = enc.get("token_type_ids")
    return Encoded(list(enc["input_ids"]), None if types is None else list(types), split.labels)


def collate(data: Encoded, rows: Sequence[int] | NDArray[np.intp], pad_id: int) -> dict[str, Any]:
    """A padded batch (to the longest row in it) as torch tensors, with ``labels``."""
    import torch

    rows = [int(r) for r in rows]
    width = max(len(data.input_ids[r]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    types = None if data.token_type_ids is None else torch.zeros_like(ids)
    for i, r in enumerate(rows):
        seq = data.input_ids[r]
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
        if types is not None:
            types[i, : len(seq)] = torch.tensor(data.token_type_ids[r], dtype=torch.long)
    labels = torch.as_tensor(data.labels[rows])
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels.float() if labels.is_floating_point() else labels,
    }
    if types is not None:
        batch["token_type_ids"] = types
    return batch


# ------------------------------------------------------------------------------ partition
def partition_iid(n_rows: int, num_devices: int, seed: int) -> list[NDArray[np.intp]]:
    """Split ``range(n_rows)`` i.i.d. into ``num_devices`` near-equal shards (seeded)."""
    perm = np.random.default_rng([seed, 0xDA7A]).permutation(n_rows)
    return [np.sort(s) for s in np.array_split(perm, num_devices)]


class BatchStream:
    """Minibatches of one data holder: epochs over its rows, reshuffled each epoch.

    The ``j``-th batch is a pure function of ``(seed, key, j)``, so the stream's whole state
    is the counter :attr:`consumed`, which a checkpoint stores. Each epoch is a fresh seeded
    permutation cut into full batches (the last partial batch of an epoch is dropped, so
    every step averages over exactly ``batch`` samples, as the centralized baseline does).
    """

    def __init__(self, rows: NDArray[np.intp], batch: int, seed: int, key: int) -> None:
        if len(rows) < batch:
            raise InputError(
                f"batch: {batch} samples per batch but a shard holds only {len(rows)} rows; "
                "use fewer devices or a smaller batch"
            )
        self.rows = np.asarray(rows, dtype=np.intp)
        self.batch = batch
        self.seed = seed
        self.key = key
        self.per_epoch = len(rows) // batch
        self.consumed = 0
        self._epoch = -1
        self._perm: NDArray[np.intp] = self.rows

    def next(self) -> NDArray[np.intp]:
        """Rows of the next batch."""
        epoch, j = divmod(self.consumed, self.per_epoch)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, self.key, epoch]).permutation(self.rows)
            self._epoch = epoch
        self.consumed += 1
        return self._perm[j * self.batch : (j + 1) * self.batch]
