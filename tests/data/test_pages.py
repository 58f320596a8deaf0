import shutil
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from htr.data.documents import DocumentSample, clean_text, document_id
from htr.data.line_cut import baseline_angle, cut_line, read_page
from htr.data.lines import LINE_SUFFIX, LineFolderDataModule
from htr.data.page_xml import BadPageError, BadPagesError, PageLine, find_xml, parse_page
from htr.data.pages import PageDataModule
from htr.page_output import LinePrediction, line_records, transcribed_xml, write_page_xml
from htr.tracking import _fingerprint
from tests.data.page_fixtures import INK, PAPER, SLANT, make_pages, render_line
from tests.helpers import SHARED_DATA, blank_png, shared_dataset

POILUS = SHARED_DATA / "poilus" / "pages"
GOOD = ["doc1_p001", "doc1_p002", "doc2_p001", "doc2_p002", "doc3_p001"]


@pytest.fixture(scope="module")
def pages_dir(tmp_path_factory) -> Path:
    return make_pages(tmp_path_factory.mktemp("pages"))


@pytest.fixture
def good_pages(pages_dir: Path) -> list[str]:
    return [str(pages_dir / f"{stem}.xml") for stem in GOOD]


def _module(xml: list[str], cache: Path, **kwargs) -> PageDataModule:
    return PageDataModule(xml=xml, cache_dir=str(cache), split=(0.4, 0.3, 0.3), min_char_count=1, **kwargs)


def test_alto_lines_parse_into_records(pages_dir: Path):
    page = parse_page(pages_dir / "doc1_p001.xml")
    assert page.format == "alto" and page.size == (900, 700)
    assert page.image_path == pages_dir / "doc1_p001.png"
    by_id = {line.line_id: line for line in page.lines}
    assert [line.line_id for line in page.lines] == ["l1", "l2", "l3", "l5", "l4"]  # blocks in document order
    assert by_id["l1"].text == "Hello world"  # String, SP, String
    assert by_id["l3"].text is None
    assert by_id["l4"].line_type == "HeadingLine:title" and by_id["l4"].region_type == "MarginTextZone"
    assert by_id["l1"].line_type == "DefaultLine" and by_id["l1"].region_type == "MainZone"
    assert len(by_id["l1"].polygon) == 4 and by_id["l1"].baseline is not None
    assert by_id["l1"].polygon[0] == (40.0, 40.0)


def test_page_lines_take_the_lowest_index_reading(pages_dir: Path):
    page = parse_page(pages_dir / "doc2_p001.xml")
    assert page.format == "page" and page.size == (900, 700)
    assert [(line.line_id, line.text) for line in page.lines] == [("sa", "first line"), ("sb", "second one")]
    assert {(line.line_type, line.region_type) for line in page.lines} == {("DefaultLine", "MainZone")}


def test_page_image_falls_back_to_the_xml_stem(tmp_path: Path, pages_dir: Path):
    shutil.copy(pages_dir / "doc2_p001.png", tmp_path / "renamed.png")
    text = (pages_dir / "doc2_p001.xml").read_text().replace('imageFilename="doc2_p001.png"', 'imageFilename=""')
    (tmp_path / "renamed.xml").write_text(text)
    assert parse_page(tmp_path / "renamed.xml").image_path == tmp_path / "renamed.png"


@pytest.fixture
def alto_beside_jpg(pages_dir: Path, tmp_path: Path) -> Path:
    """Pages published as ``alto/`` beside ``jpg/``: the XML names its image, which is not in the XML's folder."""
    for folder in ("alto", "jpg"):
        (tmp_path / folder).mkdir()
    for stem in ("doc1_p001", "doc2_p001"):  # ALTO fileName, PAGE imageFilename
        shutil.copy(pages_dir / f"{stem}.xml", tmp_path / "alto")
        shutil.copy(pages_dir / f"{stem}.png", tmp_path / "jpg")
    return tmp_path


def test_page_image_in_another_folder_is_found_via_image_dirs(
    alto_beside_jpg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    xml, image = alto_beside_jpg / "alto" / "doc1_p001.xml", alto_beside_jpg / "jpg" / "doc1_p001.png"
    assert parse_page(xml, ["../jpg"]).image_path.resolve() == image  # from the XML's folder
    assert parse_page(xml, [alto_beside_jpg / "jpg"]).image_path == image
    monkeypatch.chdir(alto_beside_jpg)
    assert parse_page(Path("alto/doc2_p001.xml"), ["jpg"]).image_path == Path("jpg/doc2_p001.png")  # from here
    module = _module([str(alto_beside_jpg / "alto")], tmp_path / "cache", image_dirs=["../jpg"])
    assert sum(map(len, module.split_samples().values())) == 6


def test_page_image_found_nowhere_gives_one_message_naming_page_and_folders(alto_beside_jpg: Path):
    xml = alto_beside_jpg / "alto" / "doc1_p001.xml"
    with pytest.raises(BadPageError) as caught:
        parse_page(xml, ["../scans", "/nowhere"])
    message = str(caught.value)
    assert message.startswith(f"{xml}: page image not found: 'doc1_p001.png' (named in the XML)")
    assert message.endswith(f"in {xml.parent}, {xml.parent / '../scans'}, ../scans, /nowhere")
    with pytest.raises(BadPageError, match=r"in .*alto \(image_dirs, --image-dir: other folders to look in\)$"):
        parse_page(xml)


@pytest.mark.parametrize(("stem", "reason"), [("doc4_p001", "page image not found"), ("broken_p001", "malformed XML")])
def test_bad_pages_name_the_file_and_reason(pages_dir: Path, stem: str, reason: str):
    with pytest.raises(BadPageError, match=reason) as caught:
        parse_page(pages_dir / f"{stem}.xml")
    assert caught.value.path == pages_dir / f"{stem}.xml"


def test_find_xml_takes_folders_globs_and_lists(pages_dir: Path, tmp_path: Path):
    listing = tmp_path / "pages.txt"
    listing.write_text(f"# two pages\n{pages_dir / 'doc1_p001.xml'}\n\n{pages_dir / 'doc2_p001.xml'}\n")
    assert len(find_xml([pages_dir])) == 7
    assert find_xml([str(pages_dir / "doc1_*.xml")]) == [pages_dir / "doc1_p001.xml", pages_dir / "doc1_p002.xml"]
    assert [p.name for p in find_xml([listing])] == ["doc1_p001.xml", "doc2_p001.xml"]
    with pytest.raises(FileNotFoundError, match="nothing"):
        find_xml([str(tmp_path / "nothing*.xml")])


def _ink_rows(image: np.ndarray) -> int:
    """How many rows hold ink: a level line spans about the text height, a slanted one much more."""
    return int(((image < (PAPER + INK) / 2).sum(axis=1) > 0).sum())


def test_cut_line_masks_crops_and_keeps_the_paper(pages_dir: Path):
    page = parse_page(pages_dir / "doc1_p001.xml")
    gray = read_page(page.image_path)
    line = next(line for line in page.lines if line.line_id == "l1")
    cut = cut_line(gray, line, page.size)
    reference = np.asarray(render_line("Hello world"))
    assert cut.shape == reference.shape  # the polygon is the rendered strip's box
    assert abs(int(np.median(cut)) - PAPER) <= 2
    # The mask: a polygon over only the left half leaves the right half of the box as paper.
    half = PageLine(line.xml_path, line.image_path, "half", ((40, 40), (120, 40), (40, 84)), None, "x", None, None)
    masked = cut_line(gray, half, page.size)
    assert masked.shape == (44, 80)
    assert masked[-5:, -20:].min() >= PAPER - 2  # below the diagonal: outside the triangle


def test_cut_line_levels_a_slanted_baseline(pages_dir: Path):
    page = parse_page(pages_dir / "doc1_p001.xml")
    line = next(line for line in page.lines if line.line_id == "l2")
    assert baseline_angle(np.asarray(line.baseline)) == pytest.approx(-SLANT, abs=0.5)
    cut = cut_line(read_page(page.image_path), line, page.size)
    reference = np.asarray(render_line("Slanted line here"))
    box_height = max(y for _, y in line.polygon) - min(y for _, y in line.polygon)
    assert box_height > reference.shape[0] + 30  # the slant adds ~w*sin(8 degrees) rows
    assert _ink_rows(cut) <= _ink_rows(reference) + 4
    assert cut.shape[1] == pytest.approx(reference.shape[1], abs=6)


def test_cut_line_scales_coordinates_to_the_image(pages_dir: Path):
    page = parse_page(pages_dir / "doc1_p001.xml")
    gray = read_page(page.image_path)
    half = np.asarray(Image.fromarray(gray).resize((450, 350)))
    line = next(line for line in page.lines if line.line_id == "l1")
    assert cut_line(half, line, page.size).shape == pytest.approx(
        tuple(s / 2 for s in cut_line(gray, line).shape), abs=1
    )


@pytest.mark.parametrize("stem", ["doc1_p002", "doc2_p001", "doc2_p002"])
def test_exif_16_bit_and_rgba_pages_cut_like_plain_ones(pages_dir: Path, stem: str):
    page = parse_page(pages_dir / f"{stem}.xml")
    gray = read_page(page.image_path)
    assert gray.shape == (700, 900) and gray.dtype == np.uint8
    cut = cut_line(gray, page.lines[0], page.size)
    assert cut.shape == np.asarray(render_line("first line")).shape
    assert _ink_rows(cut) >= 15 and np.median(cut) > 200  # upright text on light paper


def test_page_images_pass_the_image_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    a4_300_dpi = read_page(blank_png(tmp_path / "a4.png", 2480, 3508))  # 8.7 M pixels: a usual scan
    assert a4_300_dpi.shape == (3508, 2480)
    bomb = blank_png(tmp_path / "bomb.png", 8000, 6000)  # 48 M pixels declared, 12 kB on disk
    with pytest.raises(BadPageError, match=r"bomb.png: page image 8000x6000 pixels is over the limit of 40,000,000"):
        read_page(bomb)
    monkeypatch.setenv("HTR_MAX_IMAGE_PIXELS", str(8000 * 6000))
    assert read_page(bomb).shape == (6000, 8000)


@pytest.mark.parametrize(
    ("polygon", "reason"),
    [
        (((60, 400), (200, 400), (300, 400)), "zero-area"),
        (((1, 1), (1, 1)), "degenerate"),
        ((), "degenerate"),
        (((950, 10), (990, 10), (990, 60), (950, 60)), "polygon lies outside"),
    ],
)
def test_unusable_polygons_are_rejected_with_the_line(pages_dir: Path, polygon, reason: str):
    page = parse_page(pages_dir / "doc3_p001.xml")
    line = PageLine(page.xml_path, page.image_path, "bad", polygon, None, "x", None, None)
    with pytest.raises(BadPageError, match=f"line 'bad': {reason}"):
        cut_line(read_page(page.image_path), line, page.size)


def test_polygon_partly_off_the_page_is_clipped(pages_dir: Path):
    page = parse_page(pages_dir / "doc3_p001.xml")
    line = PageLine(
        page.xml_path, page.image_path, "edge", ((850, 10), (990, 10), (990, 60), (850, 60)), None, "", None, None
    )
    assert cut_line(read_page(page.image_path), line, page.size).shape == (50, 50)


def test_document_ids_keep_sibling_pages_together():
    assert document_id("TestamentsDePoilus_will_AD78_0064-3") == "TestamentsDePoilus_will_AD78_0064"
    assert {document_id(s) for s in ("reg_p003", "reg-0003", "reg_1", "reg_page12")} == {"reg"}
    assert document_id("a01-000u-00", LINE_SUFFIX) == "a01-000u"
    assert document_id("will_0006-1_l03", LINE_SUFFIX) == "will_0006"


def test_bad_pages_are_listed_together(pages_dir: Path, tmp_path: Path):
    with pytest.raises(BadPagesError) as caught:
        _module([str(pages_dir)], tmp_path).split_samples()
    reasons = {p.path.name: p.reason for p in caught.value.problems}
    assert reasons.keys() == {"broken_p001.xml", "doc3_p001.xml", "doc4_p001.xml"}
    assert reasons["broken_p001.xml"].startswith("malformed XML")
    assert reasons["doc3_p001.xml"] == "line 'flat': zero-area polygon"
    assert reasons["doc4_p001.xml"].startswith("page image not found: 'doc4_p001.png'")
    assert "3 unusable page(s) or line(s)" in str(caught.value)


def test_split_keeps_documents_whole_and_counts_dropped_lines(pages_dir: Path, tmp_path: Path):
    for seed in range(4):
        module = _module([str(pages_dir)], tmp_path, skip_bad=True, seed=seed)
        splits = module.split_samples()
        stages_of = {}
        for stage, samples in splits.items():
            for sample in samples:
                assert isinstance(sample, DocumentSample)
                stages_of.setdefault(sample.document, set()).add(stage)
        assert stages_of.keys() == {"doc1", "doc2", "doc3"}
        assert all(len(stages) == 1 for stages in stages_of.values()), stages_of
        assert sum(map(len, splits.values())) == 4 + 2 * 4  # l3 has no text, "flat" no area
        assert module.counts == {"no_text": 1, "bad": 3}


def test_listed_documents_go_to_their_stage(good_pages: list[str], tmp_path: Path):
    splits = _module(good_pages, tmp_path, test_documents=["doc2"], skip_bad=True).split_samples()
    assert {s.document for s in splits["test"]} == {"doc2"}
    assert not {s.document for s in splits["train"] + splits["val"]} & {"doc2"}
    with pytest.raises(ValueError, match="no samples: \\['doc9'\\]"):
        _module(good_pages, tmp_path, val_documents=["doc9"], skip_bad=True).split_samples()


def test_line_and_region_type_filters(good_pages: list[str], tmp_path: Path):
    def texts(**kwargs) -> set[str]:
        splits = _module(good_pages, tmp_path, skip_bad=True, **kwargs).split_samples()
        return {s.text for samples in splits.values() for s in samples}

    assert texts(line_types=["HeadingLine"]) == {"Title"}
    assert "Title" not in texts(region_types=["MainZone"])


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_texts_are_normalized(good_pages: list[str], tmp_path: Path, form: str):
    splits = _module(good_pages, tmp_path, skip_bad=True, normalization=form).split_samples()
    cafe = next(s.text for samples in splits.values() for s in samples if s.text.startswith("caf"))
    assert cafe == unicodedata.normalize(form, "café au lait")
    assert clean_text("  ſo  long ", char_map={"ſ": "s"}) == "so long"


def test_cut_lines_are_cached_and_reused(good_pages: list[str], tmp_path: Path):
    first = _module(good_pages, tmp_path, skip_bad=True).split_samples()
    paths = sorted(s.path for samples in first.values() for s in samples)
    assert all(p.is_relative_to(tmp_path) and p.suffix == ".png" for p in paths)
    stamps = [p.stat().st_mtime_ns for p in paths]
    second = _module(good_pages, tmp_path, skip_bad=True).split_samples()
    assert sorted(s.path for samples in second.values() for s in samples) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamps


def test_the_val_fingerprint_is_the_same_wherever_the_pages_and_cache_lie(pages_dir: Path, tmp_path: Path):
    """A registered model's val/cer is compared with the champion's only on the same val set (htr.registry)."""
    moved = Path(shutil.copytree(pages_dir, tmp_path / "elsewhere"))
    here = _module([str(pages_dir)], tmp_path / "cache-a", skip_bad=True).split_samples()["val"]
    there = _module([str(moved)], tmp_path / "cache-b", skip_bad=True).split_samples()["val"]
    assert {s.path.name for s in here}.isdisjoint(s.path.name for s in there)  # cut images named by their paths
    assert _fingerprint(here) == _fingerprint(there)


def test_setup_builds_datasets_from_the_cut_lines(good_pages: list[str], tmp_path: Path):
    module = _module(good_pages, tmp_path, skip_bad=True, height=32, augment=False)
    module.setup("fit")
    assert sum(len(d) for d in module.datasets.values()) == 12
    image, text = module.datasets["train"][0]
    assert image.shape[-2] == 32 and text


def test_line_folder_and_manifest(tmp_path: Path):
    folder = tmp_path / "lines"
    folder.mkdir()
    for stem, text in [("will_01_l1", "one"), ("will_01_l2", "two"), ("letter_02_l1", "three")]:
        render_line(text).save(folder / f"{stem}.png")
        (folder / f"{stem}.gt.txt").write_text(f"{text}\n")
    render_line("orphan").save(folder / "orphan_1.png")
    manifest = tmp_path / "more.tsv"
    manifest.write_text("path\ttext\nlines/will_01_l1.png\tuno\tdos\n")
    module = LineFolderDataModule(lines=[str(folder), str(manifest)], split=(0.5, 0.5, 0.0))
    splits = module.split_samples()
    samples = sorted((s.path.name, s.text, s.document) for v in splits.values() for s in v)
    assert samples == [
        ("letter_02_l1.png", "three", "letter"),
        ("will_01_l1.png", "one", "will"),
        ("will_01_l1.png", "uno dos", "will"),  # tabs in a TSV text are whitespace, collapsed
        ("will_01_l2.png", "two", "will"),
    ]
    assert module.counts == {"no_gt_txt": 1}


def _ground_truth(path: Path) -> dict[str, LinePrediction]:
    return {
        line.line_id: LinePrediction(line.text.upper(), 0.9, [0.5] * len(line.text))
        for line in parse_page(path).lines
        if line.text
    }


@pytest.mark.parametrize("stem", ["doc1_p001", "doc2_p001"])
def test_page_output_round_trip(pages_dir: Path, tmp_path: Path, stem: str):
    source = pages_dir / f"{stem}.xml"
    predictions = _ground_truth(source)
    out = write_page_xml(source, predictions, tmp_path)
    shutil.copy(parse_page(source).image_path, tmp_path)
    before, after = parse_page(source), parse_page(out)

    def geometry(page):
        return [(line.line_id, line.polygon, line.baseline, line.line_type, line.region_type) for line in page.lines]

    assert geometry(after) == geometry(before)
    texts = {line.line_id: line.text for line in after.lines if line.line_id in predictions}
    assert texts == {line_id: prediction.text for line_id, prediction in predictions.items()}
    old, new = source.read_bytes(), out.read_bytes()
    first_line = old.index(b"TextLine")
    assert new[:first_line] == old[:first_line]  # header, namespaces, comments untouched
    assert new.endswith(old[-40:])
    records = list(line_records(after, predictions))
    assert [r.line_id for r in records] == [line.line_id for line in before.lines if line.line_id in predictions]


def test_alto_output_words_carry_confidences(pages_dir: Path):
    data = (pages_dir / "doc1_p001.xml").read_bytes()
    out = transcribed_xml(data, {"l1": LinePrediction("ab cd", 0.7, [1.0, 0.8, 0.0, 0.2, 0.4])})
    ns = {"a": "http://www.loc.gov/standards/alto/ns-v4#"}
    line = next(e for e in ET.fromstring(out).iterfind(".//a:TextLine", ns) if e.get("ID") == "l1")
    words = [(e.tag.split("}")[1], e.get("CONTENT"), e.get("WC")) for e in line if "Shape" not in e.tag]
    assert words == [("String", "ab", "0.9000"), ("SP", None, None), ("String", "cd", "0.3000")]
    assert line.get("HPOS") == "40" and line.find("a:Shape/a:Polygon", ns) is not None
    with pytest.raises(BadPageError, match="nope"):
        transcribed_xml(data, {"nope": LinePrediction("x", 1.0)})


def test_page_output_adds_text_equiv_where_there_was_none(pages_dir: Path):
    source = (pages_dir / "doc2_p001.xml").read_text()
    bare = source.replace('<pc:TextEquiv index="2"><pc:Unicode>alternative</pc:Unicode></pc:TextEquiv>', "")
    bare = bare.replace('<pc:TextEquiv index="1"><pc:Unicode>first line</pc:Unicode></pc:TextEquiv>', "")
    out = transcribed_xml(bare.encode(), {"sa": LinePrediction("a < b & c", 0.25)}).decode()
    assert '<pc:TextEquiv conf="0.2500"><pc:Unicode>a &lt; b &amp; c</pc:Unicode></pc:TextEquiv></pc:TextLine>' in out
    assert out.count("<pc:TextEquiv") == 2  # the new one and sb's ground truth


ALTO_NS = {"a": "http://www.loc.gov/standards/alto/ns-v4#"}


def _alto_line(xml: bytes, line_id: str) -> ET.Element:
    return next(e for e in ET.fromstring(xml).iterfind(".//a:TextLine", ALTO_NS) if e.get("ID") == line_id)


def test_alto_words_take_their_own_confidences(pages_dir: Path):
    data = (pages_dir / "doc1_p001.xml").read_bytes()
    out = transcribed_xml(data, {"l1": LinePrediction("ab  cd", 0.7, [1.0] * 6, [0.25, 0.75])})
    words = [(e.get("CONTENT"), e.get("WC")) for e in _alto_line(out, "l1") if e.tag.endswith("String")]
    assert words == [("ab", "0.2500"), ("cd", "0.7500")]  # not the characters' mean


def test_alto_lines_under_the_threshold_are_tagged_for_review(pages_dir: Path, tmp_path: Path):
    source = pages_dir / "doc1_p001.xml"
    predictions = {"l1": LinePrediction("low", 0.5), "l2": LinePrediction("high", 0.95)}
    out = transcribed_xml(source.read_bytes(), predictions, source, mark_below=0.8)
    tags = {e.get("ID"): e for e in ET.fromstring(out).iterfind("a:Tags/a:OtherTag", ALTO_NS)}
    assert tags["htrLowConfidence"].get("LABEL") == "lowConfidence" and "0.8" in tags["htrLowConfidence"].get(
        "DESCRIPTION"
    )
    assert {"LT1", "LT2", "BT1", "BT2"} <= set(tags)  # eScriptorium's types stay
    assert _alto_line(out, "l1").get("TAGREFS") == "LT1 htrLowConfidence"  # after the type, which is read first
    assert _alto_line(out, "l2").get("TAGREFS") == "LT1"
    (tmp_path / source.name).write_bytes(out)
    shutil.copy(parse_page(source).image_path, tmp_path)
    assert [line.line_type for line in parse_page(tmp_path / source.name).lines] == [
        line.line_type for line in parse_page(source).lines
    ]  # a review mark is not a line type
    # read again, better: the mark goes; the tag definition stays
    again = transcribed_xml(out, {"l1": LinePrediction("low", 0.9)}, source, mark_below=0.8)
    assert _alto_line(again, "l1").get("TAGREFS") == "LT1"
    assert again.count(b'ID="htrLowConfidence"') == 1
    assert transcribed_xml(source.read_bytes(), predictions, source) == transcribed_xml(
        source.read_bytes(), predictions, source, mark_below=0.1
    )  # nothing under it: nothing marked, no tag defined


def test_alto_without_tags_gets_them_before_the_layout():
    alto = (
        '<alto xmlns="http://www.loc.gov/standards/alto/ns-v4#"><Description/><Layout><Page><PrintSpace><TextBlock>'
        '<TextLine ID="x"/><TextLine ID="y" HPOS="1"><String CONTENT="old"/></TextLine>'
        "</TextBlock></PrintSpace></Page></Layout></alto>"
    )
    out = transcribed_xml(alto.encode(), {"x": LinePrediction("a b", 0.1), "y": LinePrediction("c", 0.2)}, "t", 0.5)
    root = ET.fromstring(out)
    assert [child.tag.split("}")[1] for child in root] == ["Description", "Tags", "Layout"]
    assert _alto_line(out, "x").get("TAGREFS") == "htrLowConfidence"
    assert [e.get("CONTENT") for e in _alto_line(out, "x")] == ["a", None, "b"]
    assert _alto_line(out, "y").get("TAGREFS") == "htrLowConfidence" and _alto_line(out, "y").get("HPOS") == "1"


def _page_line(xml: bytes, line_id: str) -> ET.Element:
    ns = {"pc": "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"}
    return next(e for e in ET.fromstring(xml).iterfind(".//pc:TextLine", ns) if e.get("id") == line_id)


def test_page_lines_under_the_threshold_get_a_custom_tag(pages_dir: Path):
    source = pages_dir / "doc2_p001.xml"
    out = transcribed_xml(source.read_bytes(), {"sa": LinePrediction("x", 0.61234), "sb": LinePrediction("y", 0.9)},
                          source, mark_below=0.8)  # fmt: skip
    assert _page_line(out, "sa").get("custom") == "structure {type:DefaultLine;} lowConfidence {conf:0.6123;}"
    assert _page_line(out, "sb").get("custom") == "structure {type:DefaultLine;}"
    assert [line.line_type for line in parse_page(source).lines][:2] == ["DefaultLine", "DefaultLine"]
    again = transcribed_xml(out, {"sa": LinePrediction("x", 0.95)}, source, mark_below=0.8)
    assert _page_line(again, "sa").get("custom") == "structure {type:DefaultLine;}"


def test_page_words_get_their_text_and_confidence_when_they_match_the_line():
    ns = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
    word = '<Word id="w{0}"><Coords points="0,0 1,1"/><TextEquiv><Unicode>old{0}</Unicode></TextEquiv></Word>'
    page = (
        f'<PcGts xmlns="{ns}"><Page><TextRegion id="r"><TextLine id="l"><Coords points="0,0 1,1"/>'
        f"{word.format(1)}{word.format(2)}<TextEquiv><Unicode>old1 old2</Unicode></TextEquiv></TextLine>"
        "</TextRegion></Page></PcGts>"
    ).encode()
    out = transcribed_xml(page, {"l": LinePrediction("new text", 0.5, None, [0.3, 0.7])}, mark_below=0.4)
    line = _page_line(out, "l")
    words = [(w.findtext(f"{{{ns}}}TextEquiv/{{{ns}}}Unicode"), w.find(f"{{{ns}}}TextEquiv").get("conf"))
             for w in line.iterfind(f"{{{ns}}}Word")]  # fmt: skip
    assert words == [("new", "0.3000"), ("text", "0.7000")]
    assert line.find(f"{{{ns}}}TextEquiv").get("conf") == "0.5000" and line.get("custom") is None  # 0.5 >= 0.4
    out = transcribed_xml(page, {"l": LinePrediction("three new words", 0.5)})
    kept = [w.findtext(f"{{{ns}}}TextEquiv/{{{ns}}}Unicode") for w in _page_line(out, "l").iterfind(f"{{{ns}}}Word")]
    assert kept == ["old1", "old2"]  # words that no longer match are left as they were


@pytest.mark.slow
def test_real_poilus_pages(tmp_path: Path):
    shared_dataset("poilus")
    pages = [parse_page(path) for path in find_xml([POILUS])]
    assert len(pages) == 105
    assert sum(len(page.lines) for page in pages) == 1555
    assert len({document_id(page.xml_path.stem) for page in pages}) == 68
    page = pages[0]
    gray = read_page(page.image_path)
    for line in page.lines[:3]:
        cut = cut_line(gray, line, page.size)
        assert 40 < cut.shape[0] < 300 and cut.shape[1] > cut.shape[0]
