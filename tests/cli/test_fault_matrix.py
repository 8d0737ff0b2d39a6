"""Bad inputs and faults through the real command line, each in its own process.

Every case starts from a copy of one tiny finished study (`_tiny_study`: a short story,
two small random 4D NIfTI runs, a mask, a custom atlas and its result folder), breaks
one thing, runs `python -m napari_brainorg.cli ...` and asserts

- the exit code (2 for a bad input, 0 where the run must succeed),
- for an error: ONE line on stderr, no traceback, naming the offending file or key,
- that no earlier result or user file changed (SHA-256 of every file before and after),
  except where the case is a successful rerun.

The cases run two at a time in a thread pool (the machine has 2 cores); almost all of
them fail in validation, before any model is loaded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _tiny_study as tiny  # noqa: E402
from _tiny_study import brainorg, cli_env, copy_study, tree_hashes  # noqa: E402

pytestmark = pytest.mark.slow

edit_config = tiny.edit_config


# ------------------------------------------------------------------------------ cases
@dataclass
class Case:
    name: str
    prepare: Callable[[Path], list | None]  # edits the copy; returns argv (default: run study.yaml)
    needles: tuple[str, ...] = ()           # what the message must name
    code: int = 2
    unchanged: bool = True                  # no file of the study or its result changes
    extra_check: Callable | None = None
    env: dict = field(default_factory=dict)
    preexec: Callable | None = None
    new_files_ok: bool = False              # a run that starts may create its new folder


def cfg_case(name, needles, **over):
    return Case(name, lambda s: edit_config(s, **over), needles)


def _write(rel, text=None, data=None):
    def prepare(s: Path):
        p = s / rel
        if data is not None:
            p.write_bytes(data)
        else:
            p.write_text(text)
    return prepare


def _story(text):
    return _write("story.tsv", text=text)


def _nifti(rel, array, affine=tiny.AFFINE):
    def prepare(s: Path):
        import nibabel as nib

        nib.save(nib.Nifti1Image(array, affine), s / rel)
    return prepare


def _truncate(rel, keep=0.5):
    def prepare(s: Path):
        p = s / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])
    return prepare


def _truncate_map(name, keep=0.5):
    """Truncate one of the result's ``encoding/minilm/`` maps, found by what it holds."""
    def prepare(s: Path):
        from napari_brainorg.io.results import find_map

        path = find_map(s / "result", "minilm", name)
        _truncate(path.relative_to(s), keep)(s)
    return prepare


def _then(*fns):
    def prepare(s: Path):
        argv = None
        for fn in fns:
            out = fn(s)
            argv = out if isinstance(out, list) else argv
        return argv
    return prepare


def _argv(*args):
    return lambda s: [a.format(s=s) if isinstance(a, str) else a for a in args]


def _nan_run(s: Path):
    import nibabel as nib

    img = nib.load(s / "sub-01_bold.nii.gz")
    data = np.asarray(img.dataobj, np.float32).copy()
    data[5, 5, 5, 3] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), s / "sub-01_bold.nii.gz")


def _textgrid(tiers: list[tuple[str, list[tuple[float, float, str]]]]) -> str:
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", "xmax = 60",
             "tiers? <exists>", f"size = {len(tiers)}", "item []:"]
    for i, (name, items) in enumerate(tiers, 1):
        lines += [f"    item [{i}]:", '        class = "IntervalTier"', f'        name = "{name}"',
                  "        xmin = 0", "        xmax = 60", f"        intervals: size = {len(items)}"]
        for j, (a, b, w) in enumerate(items, 1):
            lines += [f"        intervals [{j}]:", f"            xmin = {a}", f"            xmax = {b}",
                      f'            text = "{w}"']
    return "\n".join(lines) + "\n"


def _textgrid_story(tiers):
    def prepare(s: Path):
        (s / "story.TextGrid").write_text(_textgrid(tiers))
        edit_config(s, story__path="story.TextGrid")
    return prepare


PHONES = [(1.0 + 0.2 * i, 1.2 + 0.2 * i, p) for i, p in enumerate(["HH", "AH", "L", "OW"] * 20)]


def _hold_lock(s: Path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom napari_brainorg.io.results import RunLock\n"
         "with RunLock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(900)\n", str(s / "result")],
        env=cli_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    (s / "holder.pid").write_text(str(holder.pid))
    _HOLDERS.append(holder)


_HOLDERS: list = []


def _model_folder(kind: str):
    def prepare(s: Path):
        from napari_brainorg.features.models import resolve_model

        folder = s / "mymodel"
        folder.mkdir()
        src = Path(resolve_model("minilm").source)
        shutil.copy(src / "config.json", folder / "config.json")
        if kind == "truncated":
            for name in os.listdir(src):
                if name.endswith(".safetensors"):
                    data = (src / name).read_bytes()
                    (folder / name).write_bytes(data[: len(data) // 3])
                elif (src / name).is_file() and name != "config.json":
                    shutil.copy(src / name, folder / name)
        edit_config(s, features__models=["mymodel"])
    return prepare


def _gguf_100_bytes(s: Path):
    (s / "tiny.gguf").write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(92))
    edit_config(s, features__models=["tiny.gguf"])


def _real_gguf_cut(s: Path):
    from napari_brainorg.features.models import resolve_model

    with open(resolve_model("smollm2").path, "rb") as fh:
        (s / "cut.gguf").write_bytes(fh.read(100))
    edit_config(s, features__models=["cut.gguf"])


def _copy_run(s: Path):
    shutil.copy(s / "sub-01_bold.nii.gz", s / "sub-03_bold.nii.gz")
    edit_config(s, fmri__images=["sub-01_bold.nii.gz", "sub-03_bold.nii.gz"])


def _region_tables(make):
    """Region tables for the two subjects (``make(rng, subject) -> (text, name)``) as fmri.regions."""
    def prepare(s: Path):
        rng = np.random.default_rng(0)
        names = []
        for sub in (1, 2):
            text, name = make(rng, sub)
            (s / name).write_text(text)
            names.append(name)
        edit_config(s, fmri={"regions": names})
    return prepare


def _table(values, sep="\t") -> str:
    return "".join(sep.join(f"{v:.5e}" for v in row) + "\n" for row in values)


def _bids(layout, **bids):
    def prepare(s: Path):
        tiny.write_bids_tree(s / "bids", layout)
        edit_config(s, fmri={"bids": {"root": "bids", "task": "pieman", "derivative": None, **bids},
                             "mask": "mask.nii.gz"})
    return prepare


def _check(*fns):
    """Edit the study, then `brainorg config --check study.yaml` instead of `run`."""
    return _then(*fns, _argv("config", "--check", "study.yaml"))


TWO_BY_TWO = {sub: [(ses, "pieman", run) for ses in ("1", "2") for run in ("1", "2")] for sub in ("01", "02")}
EXTRACT = ("extract", "--story", "story.tsv", "--tr", "1.5", "--model", "minilm", "--device", "cpu", "--quiet")


def _cwd_decoy(s: Path):
    # the atlas is missing beside the config but exists in the working directory
    (s / "elsewhere").mkdir()
    shutil.copy(s / "custom_atlas.nii.gz", s / "elsewhere" / "only_here.nii.gz")
    edit_config(s, networks__atlases=["only_here.nii.gz"])


def _fsize_limit():
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))


STORY_HEAD = "word\tonset\toffset\n"
FAR_AFFINE = tiny.AFFINE.copy()
FAR_AFFINE[:3, 3] += 5000.0  # a mask 5 m away from the images


def story_text(shift=1.0, rows_=None) -> str:
    rows_ = rows_ or tiny.story_rows(shift=shift, duration=56.0 + shift)
    return STORY_HEAD + "".join(f"{w}\t{a}\t{b}\n" for w, a, b in rows_)


CASES: list[Case] = [
    # -- configuration values and keys
    cfg_case("n_atoms_bool", ("atoms.n_atoms", "boolean"), atoms__n_atoms=True),
    cfg_case("n_atoms_gt_volumes", ("atoms.n_atoms", "100", "(40)"), atoms__n_atoms=100),
    cfg_case("n_atoms_zero", ("atoms.n_atoms",), atoms__n_atoms=0),
    cfg_case("n_atoms_text", ("atoms.n_atoms", "many"), atoms__n_atoms="many"),
    Case("misspelt_key", _then(lambda s: edit_config(s, atoms={"n_atom": 4})), ("n_atom", "Did you mean 'n_atoms'")),
    Case("unknown_section", _then(lambda s: edit_config(s, atom={"n_atoms": 4})), ("'atom'", "Did you mean")),
    cfg_case("folds_too_many", ("encoding.n_folds", "41"), encoding__n_folds=41),
    cfg_case("gap_too_large", ("encoding.gap", "15"), encoding__gap=15),
    cfg_case("one_fold", ("encoding.n_folds",), encoding__n_folds=1),
    cfg_case("negative_alpha", ("encoding.alphas",), encoding__alphas=[-1.0]),
    cfg_case("unknown_encoder", ("encoding.models", "lasso"), encoding__models=["lasso"]),
    cfg_case("negative_delay", ("encoding.delays",), encoding__delays=[-2]),
    cfg_case("tr_zero", ("story.tr",), story__tr=0),
    cfg_case("tr_text", ("story.tr", "fast"), story__tr="fast"),
    cfg_case("n_volumes_negative", ("story.n_volumes",), story__n_volumes=-5),
    cfg_case("unknown_site", ("features.site", "ffn_hiden"), features__site="ffn_hiden"),
    cfg_case("unknown_dtype", ("features.dtype",), features__dtype="float8"),
    cfg_case("assoc_alpha_2", ("networks.alpha",), networks__alpha=2),
    cfg_case("unknown_score", ("networks.score",), networks__score="jaccard"),
    cfg_case("two_fmri_sources", ("fmri", "exactly one"),
             fmri={"images": ["sub-01_bold.nii.gz"], "regions": ["r.tsv"]}),
    cfg_case("no_fmri_source", ("fmri", "exactly one"), fmri={"mask": "mask.nii.gz"}),
    cfg_case("seed_bool", ("seed", "boolean"), seed=True),
    cfg_case("empty_out", ("out",), out=" "),
    cfg_case("too_few_subject_names", ("subjects",), fmri__subjects=["a"]),
    cfg_case("links_beyond_atoms", ("fmri.simulate.links",), fmri={"simulate": {"links": {9: ["auditory"]}}}),
    Case("config_not_yaml", _write("study.yaml", text="story: [unclosed\n  path: x"), ("study.yaml", "YAML")),
    Case("config_is_a_list", _write("study.yaml", text="- a\n- b\n"), ("study.yaml", "mapping")),
    Case("config_empty", _write("study.yaml", text=""), ("out", "required")),
    Case("config_missing", _argv("run", "nope.yaml"), ("nope.yaml", "does not exist")),
    # -- stories
    Case("story_missing", lambda s: (s / "story.tsv").unlink(), ("story.tsv",)),
    Case("story_empty", _story(""), ("story.tsv", "empty")),
    Case("story_extra_cell", _story(STORY_HEAD + "hello\t1.0\t1.2\nhi\tthere\t2.0\t2.2\n"),
         ("story.tsv", "line 3", "got 4")),
    Case("story_onset_text", _story(STORY_HEAD + "hello\tsoon\t1.2\n"), ("story.tsv", "line 2", "soon")),
    Case("story_offset_before_onset", _story(STORY_HEAD + "hello\t2.0\t1.0\n"), ("story.tsv", "line 2")),
    Case("story_after_scan", _story(story_text(shift=1000.0)), ("story.path", "story.tsv", "none of its")),
    Case("story_before_scan", lambda s: edit_config(s, story__onset=-500.0), ("story.path", "none of its")),
    Case("story_unknown_extension", _then(_write("story.docx", text="x"),
                                          lambda s: edit_config(s, story__path="story.docx")),
         ("story.docx", "extension")),
    Case("story_bundled_name_typo", lambda s: edit_config(s, story__path="pieman2"), ("pieman2",)),
    Case("story_events_missing", lambda s: edit_config(s, story__events="events.tsv"), ("events.tsv",)),
    Case("textgrid_only_phones", _textgrid_story([("phones", PHONES)]), ("story.TextGrid", "phones")),
    Case("textgrid_two_tiers_no_words", _textgrid_story([("phones", PHONES), ("syllables", PHONES)]),
         ("story.TextGrid", "'words' or 'word'")),
    Case("textgrid_binary", _then(_write("story.TextGrid", data=b"ooBinaryFile\x08TextGrid"),
                                  lambda s: edit_config(s, story__path="story.TextGrid")),
         ("story.TextGrid", "binary")),
    # -- fMRI
    Case("image_missing", lambda s: (s / "sub-02_bold.nii.gz").unlink(), ("sub-02_bold.nii.gz", "does not exist")),
    Case("image_3d", _nifti("sub-01_bold.nii.gz", np.ones(tiny.SHAPE, np.float32)),
         ("fmri.images[0]", "sub-01_bold.nii.gz", "4D")),
    Case("image_wrong_volume_count", lambda s: tiny.write_run(s / "sub-02_bold.nii.gz", 2, n_volumes=30),
         ("fmri.images[1]", "sub-02_bold.nii.gz", "30 volumes")),
    Case("image_truncated", _truncate("sub-01_bold.nii.gz", 0.5), ("sub-01_bold.nii.gz",)),
    Case("image_not_nifti", _write("sub-01_bold.nii.gz", text="not an image"), ("sub-01_bold.nii.gz", "NIfTI")),
    Case("image_nan_voxel", _nan_run, ("sub-01_bold.nii.gz", "NaN")),
    Case("mask_missing", lambda s: (s / "mask.nii.gz").unlink(), ("fmri.mask", "mask.nii.gz")),
    Case("mask_empty", _nifti("mask.nii.gz", np.zeros(tiny.SHAPE, np.uint8)), ("fmri.mask", "no non-zero")),
    Case("mask_elsewhere", _nifti("mask.nii.gz", np.ones(tiny.SHAPE, np.uint8), affine=FAR_AFFINE),
         ("fmri.mask", "does not overlap")),
    Case("mask_4d", _nifti("mask.nii.gz", np.ones((*tiny.SHAPE, 3), np.uint8)), ("fmri.mask", "3D")),
    Case("regions_missing", lambda s: edit_config(s, fmri={"regions": ["sub-01_regions.tsv"]}),
         ("fmri.regions[0]", "sub-01_regions.tsv")),
    Case("regions_wrong_rows", _then(_write("r.tsv", text="a\tb\n" + "1\t2\n3\t5\n" * 10),
                                     lambda s: edit_config(s, fmri={"regions": ["r.tsv"]})),
         ("r.tsv", "20 volumes")),
    # -- atlases
    cfg_case("atlas_unknown_name", ("networks.atlases[0]", "yeo8", "Did you mean"), networks__atlases=["yeo8"]),
    cfg_case("atlas_file_missing", ("networks.atlases[0]", "gone.nii.gz"), networks__atlases=["gone.nii.gz"]),
    Case("atlas_file_corrupt", _write("custom_atlas.nii.gz", data=b"\x1f\x8b" + b"0" * 50), ("custom_atlas.nii.gz",)),
    Case("atlas_relative_not_from_cwd", _then(_cwd_decoy, _argv("run", "{s}/study.yaml", "--quiet")), ("only_here.nii.gz", "does not exist"),
         extra_check=lambda s, r: str(s / "only_here.nii.gz") in r.stderr),
    # -- output folder
    Case("out_is_a_file", _then(_write("out.txt", text="mine"), lambda s: edit_config(s, out="out.txt")),
         ("out.txt", "is a file")),
    Case("out_under_a_file", _then(_write("out.txt", text="mine"), lambda s: edit_config(s, out="out.txt/result")),
         ("out.txt", "is a file")),
    Case("out_not_writable", lambda s: edit_config(s, out="/sys/fs/brainorg-result"), ("/sys/fs/brainorg-result",)),
    Case("out_holds_user_files", lambda s: edit_config(s, out="."), ("did not write",)),
    Case("out_in_use", _hold_lock, ("in use", "PID"),
         extra_check=lambda s, r: (s / "holder.pid").read_text() in r.stderr),
    Case("disk_full", lambda s: edit_config(s, out="fresh"), ("fresh",), preexec=_fsize_limit,
         new_files_ok=True),
    Case("demo_into_user_folder", _argv("demo", "--quick", "--out", "{s}"), ("did not write",)),
    # -- language models
    Case("model_folder_only_config", _model_folder("config_only"), ("features.models[0]", "mymodel", "tokenizer")),
    Case("model_weights_truncated", _model_folder("truncated"), ("features.models[0]", "model.safetensors", "truncated")),
    Case("gguf_100_bytes", _gguf_100_bytes, ("features.models[0]", "tiny.gguf")),
    cfg_case("model_name_typo", ("minilmm", "Did you mean 'minilm'"), features__models=["minilmm"]),
    # -- opening results
    Case("view_incomplete", _then(lambda s: (s / "result/summary.json").unlink(), _argv("view", "{s}/result")),
         ("result", "incomplete")),
    Case("view_missing_folder", _argv("view", "{s}/nothing"), ("nothing", "does not exist")),
    Case("view_a_file", _argv("view", "{s}/study.yaml"), ("study.yaml",)),
    Case("view_foreign_folder", _argv("view", "{s}"), ("not a napari-brainorg result",)),
    Case("view_truncated_nifti", _then(_truncate_map("atom_maps", 0.6),
                                       _argv("view", "{s}/result")), ("AtomMaps_statmap.nii.gz", "damaged")),
    Case("view_summary_not_json", _then(_write("result/summary.json", text="{"), _argv("view", "{s}/result")),
         ("summary.json", "not valid JSON")),
    Case("simulate_bad_atlas", _argv("simulate", "--model", "minilm", "--out", "{s}/sim", "--atlas", "smith11"),
         ("smith11",)),
    # -- `config --check` runs the pre-run validation of `run`, with the same messages
    Case("check_image_missing", _check(lambda s: (s / "sub-02_bold.nii.gz").unlink()),
         ("config", "sub-02_bold.nii.gz", "does not exist")),
    Case("check_image_3d", _check(_nifti("sub-01_bold.nii.gz", np.ones(tiny.SHAPE, np.float32))),
         ("fmri.images[0]", "sub-01_bold.nii.gz", "4D")),
    Case("check_n_atoms_gt_volumes", _check(lambda s: edit_config(s, atoms__n_atoms=100)),
         ("atoms.n_atoms", "100", "(40)")),
    Case("check_story_after_scan", _check(_story(story_text(shift=1000.0))), ("story.path", "none of its")),
    Case("check_nan_needs_the_data", _check(_nan_run), code=0,
         extra_check=lambda s, r: "a valid configuration" in r.stderr and "NaN" in r.stderr
         and "need the data" in r.stderr),
    # -- the same subject twice
    Case("image_listed_twice", lambda s: edit_config(s, fmri__images=["sub-01_bold.nii.gz"] * 2),
         ("fmri.images[1]", "sub-01_bold.nii.gz", "listed again")),
    Case("image_copied", _copy_run, ("fmri.images[1]", "sub-03_bold.nii.gz", "byte-identical", "sub-01_bold.nii.gz")),
    # -- stories a model cannot read as a story
    Case("story_three_words", _story(story_text(rows_=[("once", 1.0, 1.3), ("upon", 1.4, 1.7), ("time", 1.8, 2.1)])),
         ("story.path", "story.tsv", "only 3 word")),
    Case("story_all_emoji", _story(story_text(rows_=[("\U0001f600", 1.0 + i, 1.5 + i) for i in range(30)])),
         ("story.path", "story.tsv", "no letter or digit", "[UNK]")),
    # -- region tables
    Case("regions_constant_subject", _region_tables(
        lambda rng, sub: (_table(rng.normal(size=(40, 4)) * (sub == 1)), f"sub-0{sub}_regions.tsv")),
         ("sub-02_regions.tsv", "constant")),
    Case("regions_9_vs_10_columns", _region_tables(
        lambda rng, sub: (_table(rng.normal(size=(40, 11 - sub))), f"sub-0{sub}_regions.tsv")),
         ("sub-02_regions.tsv", "9 regions", "sub-01_regions.tsv", "has 10")),
    Case("regions_txt_whitespace_glob", _check(_region_tables(
        lambda rng, sub: ("A1 STG IFG\n" + _table(rng.normal(80, 5, size=(40, 3)), sep="   "), f"s{sub}.txt")),
        lambda s: edit_config(s, fmri={"regions": ["s*.txt"]})), code=0,
         extra_check=lambda s, r: "a valid configuration" in r.stderr and "s2.txt" in r.stdout),
    # -- BIDS
    Case("bids_two_sessions_two_runs", _bids(TWO_BY_TWO), ("sub-01 has 4 runs", "'sessions'", "'runs'")),
    Case("bids_sidecar_tr", _then(_bids(TWO_BY_TWO, sessions=["1"], runs=["2"]),
                                  lambda s: edit_config(s, story__tr=2.0)),
         ("sub-01_ses-1_task-pieman_run-2_bold.nii.gz", "RepetitionTime 1.5", "story.tr is 2")),
    # -- failing before the model runs
    Case("gguf_real_file_cut_at_100_bytes", _real_gguf_cut, ("features.models[0]", "cut.gguf", "truncated")),
    Case("run_unknown_subject", _argv("run", "study.yaml", "--quiet", "--subjects", "sub-09"),
         ("--subjects", "sub-09", "sub-01")),
    Case("extract_out_unwritable", _argv(*EXTRACT, "--n-volumes", "40", "--out", "/sys/fs/brainorg-an"),
         ("--out", "/sys/fs/brainorg-an", "not writable")),
    Case("extract_story_after_scan", _argv(*EXTRACT, "--n-volumes", "40", "--onset", "1000", "--out", "{s}/an"),
         ("--story", "story.tsv", "none of its", "--onset")),
    Case("extract_story_before_scan", _argv(*EXTRACT, "--n-volumes", "40", "--onset", "-30", "--out", "{s}/an"),
         code=0, new_files_ok=True,
         extra_check=lambda s, r: "StoryTimingWarning" in r.stderr and "before it starts" in r.stderr),
    Case("extract_scan_longer_than_story", _argv(*EXTRACT, "--n-volumes", "1000", "--out", "{s}/an"),
         code=0, new_files_ok=True,
         extra_check=lambda s, r: "StoryTimingWarning" in r.stderr and "hear no word" in r.stderr),
]


def _run_case(case: Case, finished: Path, base: Path):
    study = copy_study(finished, base / case.name)
    argv = case.prepare(study)
    argv = argv if isinstance(argv, list) else ["run", "study.yaml", "--quiet"]
    before = tree_hashes(study)
    cwd = study / "elsewhere" if (study / "elsewhere").is_dir() else study
    t = time.perf_counter()
    result = brainorg(argv, cwd=cwd, env=cli_env(**case.env), preexec_fn=case.preexec)
    return study, before, result, time.perf_counter() - t


@pytest.fixture(scope="module")
def matrix(finished_study, tmp_path_factory):
    base = tmp_path_factory.mktemp("matrix")
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {c.name: pool.submit(_run_case, c, finished_study, base) for c in CASES}
            results = {name: f.result() for name, f in futures.items()}
    finally:
        for holder in _HOLDERS:
            holder.kill()
            holder.wait()
    return results


def test_the_matrix_has_at_least_sixty_cases():
    assert len({c.name for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_clear_line_and_changes_nothing(case, matrix):
    study, before, result, _ = matrix[case.name]
    err = result.stderr
    assert "Traceback" not in err, err[-3000:]
    assert result.returncode == case.code, (result.returncode, err[-3000:])
    if case.code == 2:
        lines = [ln for ln in err.splitlines() if ln.startswith("brainorg ")]
        assert len(lines) == 1, err[-3000:]
        assert ": error: " in lines[0] or lines[0].startswith("brainorg run: features"), lines[0]
        for needle in case.needles:
            assert needle in lines[0], (needle, lines[0])
    if case.extra_check is not None:
        assert case.extra_check(study, result), err[-3000:]
    if case.unchanged:
        after = tree_hashes(study)
        paths = set(before) if case.new_files_ok else set(before) | set(after)
        changed = sorted(p for p in paths if before.get(p) != after.get(p))
        # a run refused before writing leaves no new file either (the lock file aside)
        assert not changed, changed
