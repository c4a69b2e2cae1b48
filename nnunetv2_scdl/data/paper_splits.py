"""The semi-supervised splits of the papers (the lists published with the GA/SCDL and DHC/GenericSSL code), as split files for ``nnUNetv2_scdl_make_split``.

A split file is JSON with the keys ``labeled``, ``unlabeled`` and ``val`` (case identifiers of the nnU-Net raw
dataset's imagesTr), plus ``dataset``, ``protocol``, ``source`` and ``test`` (the test cases, which the converters put
in imagesTs; informational). It is the format of the project's shared split files.

Synapse (BTCV, the 30 labelled training scans img0001-0010 and img0021-0040). Case IDs are built from the scan number:
``synapse_0002`` for the datasets written by ``nnunetv2_scdl.data.conversion`` (style "synapse"), or ``btcv_01`` for
the "SABS" copy in the project's shared data, where btcv_NN is the NN-th of the 30 scans in sorted order (style
"sabs"). Built in, all lists as published with the papers' code:
- ``synapse_ga_20pct``: GA/SCDL 20 %: 4 labeled, 16 unlabeled, 4 val, 6 test.
- ``synapse_ga_10pct``: GA/SCDL 10 %: labeled {0023, 0028}; unlabeled = the other 18 of the same 20 training scans
  (the papers give only the labeled pair; the public DHC split files at xmed-lab/DHC 3a09c34 list the same 18).
- ``synapse_genericssl_20pct``: DHC/GenericSSL 20 % (GenericSSL's labeled file): 4 labeled, 16 unlabeled of DHC's 20
  training scans, 4 val, 6 test. (DHC itself draws its labeled cases at random; that is not reproducible.)

AMOS22 (the splits the DHC, GA and SCDL releases share): the papers give the counts (216 training = labeled +
unlabeled, 24 val, 120 test = the official validation set; 2 % = 4 labeled) and only one list, the 10 labeled cases of
5 % (``AMOS_5PCT_LABELED``). The unlabeled, val and test lists and the 2 %/10 % labeled lists are not in the papers, so
no AMOS split is built in and none is invented: ``amos_split_from_txt_dir`` builds them from the public split text
files (one ID per line: labeled_{P}p.txt, unlabeled_{P}p.txt, eval.txt, test.txt; e.g. the amos_data/splits folder
of the DHC repository) and checks them against what the papers do give.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

SYNAPSE_SCAN_NUMBERS: Tuple[int, ...] = tuple(range(1, 11)) + tuple(range(21, 41))
CASE_ID_STYLES = ("synapse", "sabs")


@dataclass(frozen=True)
class PaperSplit:
    """One protocol: case identifiers per role. ``test`` cases are held out entirely (imagesTs)."""
    name: str
    protocol: str
    source: str
    labeled: Tuple[str, ...]
    unlabeled: Tuple[str, ...]
    val: Tuple[str, ...]
    test: Tuple[str, ...] = ()

    def __post_init__(self):
        roles = {"labeled": self.labeled, "unlabeled": self.unlabeled, "val": self.val, "test": self.test}
        seen: Dict[str, str] = {}
        for role, cases in roles.items():
            if len(set(cases)) != len(cases):
                raise ValueError(f"Split {self.name}: duplicate case IDs in {role}.")
            for case in cases:
                if case in seen:
                    raise ValueError(f"Split {self.name}: case {case} is in both {seen[case]} and {role}.")
                seen[case] = role
        if not self.labeled:
            raise ValueError(f"Split {self.name}: no labeled cases.")

    @property
    def training_cases(self) -> Tuple[str, ...]:
        """Cases that must be in imagesTr: labeled, unlabeled and val."""
        return self.labeled + self.unlabeled + self.val

    def to_json_dict(self, dataset_name: str) -> dict:
        return {"dataset": dataset_name, "protocol": self.protocol, "source": self.source,
                "labeled": list(self.labeled), "unlabeled": list(self.unlabeled), "val": list(self.val),
                "test": list(self.test)}


def write_split_json(split: PaperSplit, dataset_name: str, path: Path) -> Path:
    """Write ``split`` for the nnU-Net dataset ``dataset_name`` (e.g. 'Dataset111_Synapse') to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(split.to_json_dict(dataset_name), handle, indent=1)
    return path


# ---------------------------------------------------------------------------------------------------------- Synapse
def synapse_case_id(scan_number: int, style: str = "synapse") -> str:
    """Case ID of BTCV training scan ``scan_number`` (1-10, 21-40): 'synapse_0002', or 'btcv_01' in style 'sabs'."""
    if scan_number not in SYNAPSE_SCAN_NUMBERS:
        raise ValueError(f"{scan_number} is not a BTCV training scan number (1-10, 21-40).")
    if style == "synapse":
        return f"synapse_{scan_number:04d}"
    if style == "sabs":
        return f"btcv_{SYNAPSE_SCAN_NUMBERS.index(scan_number):02d}"
    raise ValueError(f"Unknown case ID style {style!r}; choose one of {CASE_ID_STYLES}.")


_GA_TRAIN = (1, 2, 3, 5, 8, 9, 21, 22, 23, 24, 27, 28, 29, 30, 31, 32, 34, 37, 38, 39)
_GA_VAL = (6, 25, 26, 40)
_GA_TEST = (4, 7, 10, 33, 35, 36)
_GENERICSSL_TRAIN = (2, 3, 4, 5, 6, 9, 10, 21, 22, 24, 25, 26, 28, 31, 32, 34, 35, 36, 38, 40)
_GENERICSSL_VAL = (1, 7, 23, 30)
_GENERICSSL_TEST = (8, 27, 29, 33, 37, 39)

# name: (protocol, labeled scan numbers, training scan numbers, val, test)
_SYNAPSE_PROTOCOLS = {
    "synapse_ga_20pct": ("Synapse 20% labeled (GA/SCDL): 4 labeled + 16 unlabeled training scans, 4 val, 6 test",
                         (2, 23, 34, 39), _GA_TRAIN, _GA_VAL, _GA_TEST),
    "synapse_ga_10pct": ("Synapse 10% labeled (GA/SCDL): 2 labeled + 18 unlabeled training scans, 4 val, 6 test",
                         (23, 28), _GA_TRAIN, _GA_VAL, _GA_TEST),
    "synapse_genericssl_20pct": ("Synapse 20% labeled (DHC/GenericSSL camp, GenericSSL's labeled file): 4 labeled + "
                                 "16 unlabeled training scans, 4 val, 6 test",
                                 (9, 21, 25, 34), _GENERICSSL_TRAIN, _GENERICSSL_VAL, _GENERICSSL_TEST),
}
SYNAPSE_SPLIT_NAMES: Tuple[str, ...] = tuple(_SYNAPSE_PROTOCOLS)
# which built-in splits hold out which test set (the converter's --test-set)
SYNAPSE_TEST_SETS: Dict[str, Tuple[int, ...]] = {"ga": _GA_TEST, "genericssl": _GENERICSSL_TEST, "none": ()}
SYNAPSE_SPLITS_BY_TEST_SET: Dict[str, Tuple[str, ...]] = {
    "ga": ("synapse_ga_20pct", "synapse_ga_10pct"), "genericssl": ("synapse_genericssl_20pct",),
    "none": SYNAPSE_SPLIT_NAMES}


def synapse_split(name: str, case_id_style: str = "synapse") -> PaperSplit:
    """A built-in Synapse split (see module docstring) with case IDs in ``case_id_style``."""
    if name not in _SYNAPSE_PROTOCOLS:
        raise ValueError(f"Unknown Synapse split {name!r}; choose one of {SYNAPSE_SPLIT_NAMES}.")
    protocol, labeled, train, val, test = _SYNAPSE_PROTOCOLS[name]
    unlabeled = tuple(n for n in train if n not in labeled)

    def ids(numbers):
        return tuple(synapse_case_id(n, case_id_style) for n in numbers)

    return PaperSplit(name, protocol, "the papers' published split lists", ids(labeled),
                      ids(unlabeled), ids(val), ids(test))


# ------------------------------------------------------------------------------------------------------------- AMOS
AMOS_5PCT_LABELED: Tuple[str, ...] = ("amos_0078", "amos_0158", "amos_0170", "amos_0192", "amos_0391", "amos_0396",
                                      "amos_0410", "amos_0514", "amos_0548", "amos_0578")
AMOS_PROTOCOL_COUNTS = {"training": 216, "val": 24, "test": 120}
AMOS_LABELED_COUNTS = {2: 4, 5: 10}  # percent -> labeled cases; the papers give no count for 10 %
AMOS_SPLIT_NAMES: Tuple[str, ...] = ("amos_2pct", "amos_5pct", "amos_10pct")
AMOS_NOT_BUILT_IN = ("The AMOS lists are not built in: the papers give only counts (216 training, 24 val, 120 test; 2% "
                     "= 4 labeled) and the 10 labeled cases of 5%. Build the splits from the papers' split text files "
                     "(labeled_{P}p.txt, unlabeled_{P}p.txt, eval.txt, test.txt; e.g. amos_data/splits in the DHC "
                     "repository) with 'nnUNetv2_scdl_convert_dataset split-from-txt' or "
                     "'nnUNetv2_scdl_convert_dataset amos --splits-txt-dir'.")


def read_case_list(path: Path) -> Tuple[str, ...]:
    """Case IDs from a text file, one per line; blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Split list not found: {path}")
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def split_from_txt_files(name: str, protocol: str, labeled_txt: Path, unlabeled_txt: Path, val_txt: Path,
                         test_txt: Optional[Path] = None,
                         case_id: Callable[[str], str] = lambda raw_id: raw_id) -> PaperSplit:
    """A split from one-ID-per-line text files; ``case_id`` maps each listed ID to the dataset's case identifier."""
    def load(path):
        return tuple(case_id(raw) for raw in read_case_list(path)) if path is not None else ()

    source = ", ".join(str(p) for p in (labeled_txt, unlabeled_txt, val_txt, test_txt) if p is not None)
    return PaperSplit(name, protocol, source, load(labeled_txt), load(unlabeled_txt), load(val_txt), load(test_txt))


def amos_split_from_txt_dir(txt_dir: Path, percent: int, verify: bool = True) -> PaperSplit:
    """The AMOS ``percent`` % split from a folder of the papers' split text files.

    With ``verify`` (the default) the lists must agree with the published AMOS facts: 216 training cases (labeled +
    unlabeled), 24 val, 120 test, 4 labeled for 2 %, and the 5 % labeled list ``AMOS_5PCT_LABELED``. Raises
    ValueError naming the disagreement.
    """
    txt_dir = Path(txt_dir)
    split = split_from_txt_files(
        f"amos_{percent}pct", f"AMOS22 {percent}% labeled (DHC/GA/SCDL split files)",
        txt_dir / f"labeled_{percent}p.txt", txt_dir / f"unlabeled_{percent}p.txt", txt_dir / "eval.txt",
        txt_dir / "test.txt" if (txt_dir / "test.txt").is_file() else None)
    if verify:
        problems = verify_amos_split(split, percent)
        if problems:
            raise ValueError(f"The AMOS {percent}% lists in {txt_dir} disagree with the papers' protocol: "
                             + "; ".join(problems) + ". Pass verify=False (--allow-non-paper-splits) to use them "
                                                     "anyway.")
    return split


def verify_amos_split(split: PaperSplit, percent: int) -> List[str]:
    """Disagreements between ``split`` and the published AMOS facts (empty when none)."""
    problems = []
    counts = {"training": len(split.labeled) + len(split.unlabeled), "val": len(split.val), "test": len(split.test)}
    for role, expected in AMOS_PROTOCOL_COUNTS.items():
        if counts[role] != expected:
            problems.append(f"{counts[role]} {role} cases instead of {expected}")
    if percent in AMOS_LABELED_COUNTS and len(split.labeled) != AMOS_LABELED_COUNTS[percent]:
        problems.append(f"{len(split.labeled)} labeled cases instead of {AMOS_LABELED_COUNTS[percent]}")
    if percent == 5 and sorted(split.labeled) != sorted(AMOS_5PCT_LABELED):
        problems.append(f"labeled cases {sorted(split.labeled)} instead of {list(AMOS_5PCT_LABELED)}")
    return problems


def synapse_split_from_txt_dir(txt_dir: Path, percent: int, case_id_style: str = "synapse") -> PaperSplit:
    """A Synapse split from split text files listing scan numbers ('0002'), as in the DHC repository."""
    txt_dir = Path(txt_dir)
    return split_from_txt_files(
        f"synapse_{percent}pct_txt", f"Synapse {percent}% labeled (split text files)",
        txt_dir / f"labeled_{percent}p.txt", txt_dir / f"unlabeled_{percent}p.txt", txt_dir / "eval.txt",
        txt_dir / "test.txt" if (txt_dir / "test.txt").is_file() else None,
        case_id=lambda raw_id: synapse_case_id(int(raw_id), case_id_style))


def percents_in_txt_dir(txt_dir: Path) -> List[int]:
    """The P of every labeled_{P}p.txt in ``txt_dir`` that has a matching unlabeled_{P}p.txt, sorted."""
    percents = []
    for path in Path(txt_dir).glob("labeled_*p.txt"):
        text = path.name[len("labeled_"):-len("p.txt")]
        if text.isdigit() and (Path(txt_dir) / f"unlabeled_{text}p.txt").is_file():
            percents.append(int(text))
    return sorted(percents)


# ---------------------------------------------------------------------------------------------------------- Lookup
def paper_split(name: str, case_id_style: str = "synapse") -> PaperSplit:
    """A built-in split by name. AMOS names raise ValueError explaining how to build them (``AMOS_NOT_BUILT_IN``)."""
    if name in _SYNAPSE_PROTOCOLS:
        return synapse_split(name, case_id_style)
    if name in AMOS_SPLIT_NAMES:
        raise ValueError(f"{name}: {AMOS_NOT_BUILT_IN}")
    raise ValueError(f"Unknown split {name!r}; built in: {SYNAPSE_SPLIT_NAMES}; AMOS ({AMOS_SPLIT_NAMES}) from text "
                     f"files only.")


def missing_cases(split: PaperSplit, training_cases: Iterable[str], test_cases: Iterable[str]) -> List[str]:
    """Cases of ``split`` absent from a dataset's imagesTr (``training_cases``) or imagesTs (``test_cases``)."""
    training, test = set(training_cases), set(test_cases)
    return [c for c in split.training_cases if c not in training] + [c for c in split.test if c not in test]


def describe_splits() -> str:
    """Human-readable list of what can and cannot be reproduced."""
    lines = [f"{name}: {_SYNAPSE_PROTOCOLS[name][0]}" for name in SYNAPSE_SPLIT_NAMES]
    lines += [f"{name}: not built in" for name in AMOS_SPLIT_NAMES]
    return "\n".join(lines) + "\n" + AMOS_NOT_BUILT_IN


__all__: Sequence[str] = (
    "PaperSplit", "write_split_json", "synapse_case_id", "synapse_split", "SYNAPSE_SPLIT_NAMES", "SYNAPSE_TEST_SETS",
    "SYNAPSE_SPLITS_BY_TEST_SET", "AMOS_5PCT_LABELED", "AMOS_PROTOCOL_COUNTS", "AMOS_LABELED_COUNTS",
    "AMOS_SPLIT_NAMES", "read_case_list", "split_from_txt_files", "amos_split_from_txt_dir", "verify_amos_split",
    "synapse_split_from_txt_dir", "percents_in_txt_dir", "paper_split", "missing_cases", "describe_splits")
