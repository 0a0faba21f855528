"""Bad files of every kind (the generated corpus of ``corpus.py``): check-data names each one with its problem;
``fcnseg train`` stops on the first with one line that names it and the check-data command, or, with
``--skip-bad-samples``, trains on the rest and lists the skipped pairs in the run folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus import write_corpus

from fcnseg.cli.main import main
from fcnseg.data import build_dataset, check_dataset


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root)


def test_check_data_names_every_bad_file_with_its_problem(corpus) -> None:
    root, expected = corpus
    report = check_dataset("folder", root, ["all"], progress=False, classes=root / "classes.txt")
    found = {Path(p.file).stem: p.message for p in report.problems}
    bad = {stem: problem for stem, problem in expected.items() if problem is not None}
    assert set(found) == set(bad)
    for stem, problem in bad.items():
        assert problem in found[stem], (stem, found[stem])
        assert "\n" not in found[stem]
    split = report.splits["all"]
    assert (split.num_items, split.num_ok) == (len(expected), len(expected) - len(bad))


def test_palette_and_16_bit_masks_decode_like_the_rgb_ones(corpus) -> None:
    root, _ = corpus
    classes = root / "classes.txt"
    rgb = build_dataset("folder", root, "all", classes=classes, verify=False)
    by_stem = {m.stem: i for i, (_, m) in enumerate(rgb.files)}
    from corpus import _labels

    for stem, seed in (("good_palette", 11), ("good_gray16", 12), ("good3", 3)):
        np.testing.assert_array_equal(rgb[by_stem[stem]][1].numpy(), _labels(seed), err_msg=stem)


def _train_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "fcn32s_mobilenet_v2", "--dataset", "folder", "--data-root", str(root),
            "--classes", str(root / "classes.txt"), "--out", str(out), "--iters", "2", "--batch-size", "4",
            "--crop-size", "32", "32", "--val-every", "2", "--workers", "0", "--device", "cpu",
            "--precision", "fp32", "--train-split", "all", "--val-split", "", *extra]  # fmt: skip


def _error_line(err: str) -> str:
    assert "Traceback" not in err
    return next(line for line in err.splitlines() if line.startswith("fcnseg train: error:"))


def test_train_stops_on_a_bad_file_with_one_line(corpus, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, expected = corpus
    hint = f"fcnseg check-data --dataset folder --data-root {root} --classes {root / 'classes.txt'}"
    assert main(_train_args(root, tmp_path / "a")) == 1  # a missing file is found before training
    line = _error_line(capsys.readouterr().err)
    assert "missing_mask.png: missing mask" in line and hint in line and "--skip-bad-samples" in line

    readable = tmp_path / "present.txt"  # without the missing mask: the first unreadable file stops the run
    readable.write_text("".join(f"{stem}\n" for stem in expected if stem != "missing_mask"))
    args = _train_args(root, tmp_path / "b", "--iters", "50")
    args[args.index("all")] = str(readable)
    assert main(args) == 1
    line = _error_line(capsys.readouterr().err)
    assert any(f"{stem}." in line and problem in line for stem, problem in expected.items() if problem), line
    assert hint in line and "--skip-bad-samples" in line


def test_skip_bad_samples_trains_on_the_rest_and_lists_them(corpus, tmp_path: Path) -> None:
    root, expected = corpus
    out = tmp_path / "run"
    assert main([*_train_args(root, out, "--skip-bad-samples", "--val-fraction", "0.25")]) == 0
    rows = [line.split("\t") for line in (out / "skipped.tsv").read_text().splitlines()[1:]]
    skipped = {Path(file).stem: (split, problem) for split, file, problem in rows}
    assert set(skipped) == {stem for stem, problem in expected.items() if problem}
    for stem, (_, problem) in skipped.items():
        assert expected[stem] in problem
    train = set((out / "splits" / "train.txt").read_text().split())
    val = set((out / "splits" / "val.txt").read_text().split())
    assert not train & val and train | val == set(expected)
    assert {split for split, _ in skipped.values()} <= {"train", "val"}
    assert (out / "last.pt").is_file()


def test_folder_without_split_lists_says_so(corpus, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, _ = corpus
    args = [a for a in _train_args(root, tmp_path / "run") if a not in ("--train-split", "all", "--val-split", "")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has no split list train.txt, val.txt" in err and "--val-fraction" in err
