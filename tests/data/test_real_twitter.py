"""The real Twitter-2015/2017 annotation files, in every public format (acceptance 2-4)."""

import json
import subprocess
import sys

import pytest

from iea.data.convert import convert, read_split

pytestmark = pytest.mark.real_data

EXPECTED = {
    "twitter2015": {
        "train": (2101, 3179, 928, 1883, 368),
        "dev": (727, 1122, 303, 670, 149),
        "test": (674, 1037, 317, 607, 113),
    },
    "twitter2017": {
        "train": (1746, 3562, 1508, 1638, 416),
        "dev": (577, 1176, 515, 517, 144),
        "test": (587, 1234, 493, 573, 168),
    },
}
FOLDERS = {"tombert": "tombert", "tombert_txt": "tombert", "vlp": "vlp_json", "conll": "cmmt_conll"}
IEA = [sys.executable, "-m", "flows.cli"]


def _iea(*args, check=True):
    return subprocess.run([*IEA, *args], capture_output=True, text=True, check=check)


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
@pytest.mark.parametrize("fmt", sorted(FOLDERS))
def test_stats_table(twitter_root, tmp_path, dataset, fmt):
    m = convert(fmt, twitter_root / dataset / FOLDERS[fmt], tmp_path)
    got = {
        s: tuple(c[k] for k in ("tweets", "aspects", "POS", "NEU", "NEG"))
        for s, c in m["counts"].items()
    }
    assert got == EXPECTED[dataset]
    assert m["rejects"]["count"] == 0
    dup_ids = [d["ids"] for d in m["duplicates"]]
    if dataset == "twitter2017":  # one tweet is in train twice: both kept, ids unique, listed
        assert len(dup_ids) == 1 and m["duplicates"][0]["image_id"] == "17_06_2136.jpg"
        assert len(set(dup_ids[0])) == 2
    else:
        assert dup_ids == []


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_all_formats_give_identical_records(twitter_root, dataset):
    for split in ("train", "dev", "test"):
        results = {
            fmt: read_split(fmt, twitter_root / dataset / folder, split)[0]
            for fmt, folder in FOLDERS.items()
        }
        reference = results["vlp"]
        assert len({t.id for t in reference}) == len(reference)
        for fmt, tweets in results.items():
            assert tweets == reference, f"{dataset}/{split}: {fmt} differs from vlp"


def test_cli_convert_stats_and_eval(twitter_root, tmp_path):
    out = tmp_path / "t15"
    _iea(
        "data",
        "convert",
        "--format",
        "conll",
        "--src",
        str(twitter_root / "twitter2015" / "cmmt_conll"),
        "--out",
        str(out),
    )
    stats = json.loads(_iea("data", "stats", str(out)).stdout)
    assert stats["test"] == {"tweets": 674, "aspects": 1037, "POS": 317, "NEU": 607, "NEG": 113}
    gold = out / "test.jsonl"
    same = json.loads(_iea("eval", "--gold", str(gold), "--pred", str(gold)).stdout)
    assert same["jmasa"]["f1"] == 1.0 and same["mate"]["f1"] == 1.0 and same["masc"]["acc"] == 1.0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    none = json.loads(_iea("eval", "--gold", str(gold), "--pred", str(empty)).stdout)
    assert none["jmasa"]["r"] == 0.0 and none["jmasa"]["gold"] == 1037
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"id": "nope", "aspects": []}\n')
    bad = _iea("eval", "--gold", str(gold), "--pred", str(unknown), check=False)
    assert bad.returncode == 1 and "unknown.jsonl:1: unknown id 'nope'" in bad.stderr


def test_cli_corrupted_line_fails_then_is_quarantined(twitter_root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for p in (twitter_root / "twitter2017" / "tombert").glob("*.tsv"):
        (src / p.name).write_bytes(p.read_bytes())
    lines = (src / "dev.tsv").read_text(encoding="utf-8").split("\n")
    lines[41] = "\t".join(lines[41].split("\t")[:3])  # line 42: a row cut short
    (src / "dev.tsv").write_text("\n".join(lines), encoding="utf-8")
    out = tmp_path / "out"
    r = _iea(
        "data", "convert", "--format", "tombert", "--src", str(src), "--out", str(out), check=False
    )
    assert r.returncode == 1
    assert f"{src / 'dev.tsv'}:42: expected 5 tab-separated columns, got 3" in r.stderr
    r = _iea(
        "data", "convert", "--format", "tombert", "--src", str(src), "--out", str(out), "--skip-bad"
    )
    assert json.loads(r.stdout)["rejects"] == 1
    (rej,) = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert rej["line"] == 42 and rej["raw"] == lines[41] and "got 3" in rej["reason"]
    assert "1 bad records quarantined" in r.stderr
