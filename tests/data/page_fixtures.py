"""Tiny transcribed pages in ALTO v4 and PAGE 2019, with rendered page images and one planted problem of each kind.

Documents and pages (document id = stem without the page number)::

    doc1_p001  ALTO, 8-bit PNG: two words joined by SP, a line slanted by 8 degrees, a line without text,
               a heading in a margin block, a decomposed (NFD) "café"
    doc1_p002  PAGE, JPEG stored on its side with EXIF orientation 6 (viewers turn it upright)
    doc2_p001  PAGE, 16-bit PNG
    doc2_p002  ALTO, RGBA PNG with a transparent background
    doc3_p001  ALTO, 8-bit PNG, plus a line whose polygon has no area
    doc4_p001  ALTO whose image is missing
    broken_p001  not well-formed XML
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAGE_SIZE = (900, 700)  # (width, height)
PAPER, INK = 225, 30
FONT_SIZE = 28
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
SLANT = 8.0  # degrees, counter-clockwise on screen: the baseline rises to the right


@dataclass
class FakeLine:
    """A line to render and describe: its text (None: drawn but not transcribed) and where it ends up."""

    line_id: str
    text: str | None
    drawn: str  # what is drawn on the page
    origin: tuple[int, int]
    angle: float = 0.0
    line_type: str = "DefaultLine"
    region: str = "MainZone"
    polygon: list[tuple[float, float]] | None = None
    baseline: list[tuple[float, float]] | None = None


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=FONT_SIZE)


def render_line(text: str) -> Image.Image:
    """``text`` in ink on paper with an 8 px margin; the baseline is at 80% of the height."""
    font = _font()
    image = Image.new("L", (int(font.getlength(text)) + 16, FONT_SIZE + 16), PAPER)
    ImageDraw.Draw(image).text((8, 8), text, fill=INK, font=font)
    return image


def draw_page(lines: list[FakeLine]) -> np.ndarray:
    """Render the lines on an (H, W) uint8 page and fill in each line's polygon and baseline."""
    page = Image.new("L", PAGE_SIZE, PAPER)
    for line in lines:
        strip = render_line(line.drawn)
        w, h = strip.size
        corners = [(0, 0), (w, 0), (w, h), (0, h)]
        base = [(4, 0.8 * h), (w - 4, 0.8 * h)]
        if line.angle:
            turned = strip.rotate(line.angle, expand=True, fillcolor=PAPER, resample=Image.BICUBIC)
            theta = math.radians(line.angle)
            centres = ((w / 2, h / 2), (turned.width / 2, turned.height / 2))
            corners = [_turn(p, *centres, theta) for p in corners]
            base = [_turn(p, *centres, theta) for p in base]
            strip = turned
        x0, y0 = line.origin
        page.paste(strip, (x0, y0))
        line.polygon = line.polygon or [(x0 + x, y0 + y) for x, y in corners]
        line.baseline = [(round(x0 + x), round(y0 + y)) for x, y in base]
    return np.asarray(page)


def _turn(point: tuple[float, float], centre, new_centre, theta: float) -> tuple[float, float]:
    """Where ``point`` lands when PIL turns the image by ``theta`` radians counter-clockwise on screen with
    ``expand=True`` (image y points down, so the signs differ from the textbook rotation)."""
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    return (
        new_centre[0] + math.cos(theta) * dx + math.sin(theta) * dy,
        new_centre[1] - math.sin(theta) * dx + math.cos(theta) * dy,
    )


def _points(points: list[tuple[float, float]], sep: str) -> str:
    return " ".join(f"{round(x)}{sep}{round(y)}" for x, y in points)


def alto_xml(image_name: str, lines: list[FakeLine]) -> str:
    """ALTO v4 as eScriptorium writes it: Tags for types, words as String/SP, Shape/Polygon, BASELINE points."""
    tags = {"DefaultLine": "LT1", "HeadingLine:title": "LT2", "MainZone": "BT1", "MarginTextZone": "BT2"}
    tag_xml = "".join(f'<OtherTag ID="{i}" LABEL="{label}"/>' for label, i in tags.items())
    blocks: dict[str, list[str]] = {}
    for line in lines:
        assert line.polygon is not None and line.baseline is not None
        xs, ys = [p[0] for p in line.polygon], [p[1] for p in line.polygon]
        words = "<SP/>".join(f'<String CONTENT="{w}"/>' for w in line.text.split(" ")) if line.text else ""
        blocks.setdefault(line.region, []).append(
            f'\n        <TextLine ID="{line.line_id}" TAGREFS="{tags[line.line_type]}" '
            f'BASELINE="{_points(line.baseline, " ")}" HPOS="{round(min(xs))}" VPOS="{round(min(ys))}" '
            f'WIDTH="{round(max(xs) - min(xs))}" HEIGHT="{round(max(ys) - min(ys))}">\n'
            f'          <Shape><Polygon POINTS="{_points(line.polygon, " ")}"/></Shape>\n          {words}\n'
            "        </TextLine>"
        )
    block_xml = "".join(
        f'\n      <TextBlock ID="block_{i}" TAGREFS="{tags[region]}">{"".join(body)}\n      </TextBlock>'
        for i, (region, body) in enumerate(blocks.items())
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<alto xmlns="{ALTO_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <Description><MeasurementUnit>pixel</MeasurementUnit>\n"
        f"    <sourceImageInformation><fileName>{image_name}</fileName></sourceImageInformation>\n"
        f"  </Description>\n  <Tags>{tag_xml}</Tags>\n  <!-- layout below -->\n  <Layout>\n"
        f'    <Page WIDTH="{PAGE_SIZE[0]}" HEIGHT="{PAGE_SIZE[1]}" ID="page_1"><PrintSpace>{block_xml}\n'
        "    </PrintSpace></Page>\n  </Layout>\n</alto>\n"
    )


def page_xml(image_name: str, lines: list[FakeLine]) -> str:
    """PAGE 2019 with the ``pc:`` prefix, eScriptorium-style ``custom`` types and a second TextEquiv reading."""
    body = []
    for line in lines:
        assert line.polygon is not None and line.baseline is not None
        text = (
            f'<pc:TextEquiv index="2"><pc:Unicode>alternative</pc:Unicode></pc:TextEquiv>'
            f'<pc:TextEquiv index="1"><pc:Unicode>{line.text}</pc:Unicode></pc:TextEquiv>'
            if line.text is not None
            else ""
        )
        body.append(
            f'\n      <pc:TextLine id="{line.line_id}" custom="structure {{type:{line.line_type};}}">'
            f'<pc:Coords points="{_points(line.polygon, ",")}"/>'
            f'<pc:Baseline points="{_points(line.baseline, ",")}"/>{text}</pc:TextLine>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<pc:PcGts xmlns:pc="{PAGE_NS}">\n  <pc:Metadata><pc:Creator>test</pc:Creator></pc:Metadata>\n'
        f'  <pc:Page imageFilename="{image_name}" imageWidth="{PAGE_SIZE[0]}" imageHeight="{PAGE_SIZE[1]}">\n'
        f'    <pc:TextRegion id="r1" type="paragraph" custom="structure {{type:MainZone;}}">'
        f'<pc:Coords points="0,0 10,0 10,10"/>{"".join(body)}\n    </pc:TextRegion>\n  </pc:Page>\n</pc:PcGts>\n'
    )


def doc1_p001_lines() -> list[FakeLine]:
    return [
        FakeLine("l1", "Hello world", "Hello world", (40, 40)),
        FakeLine("l2", "Slanted line here", "Slanted line here", (40, 150), angle=SLANT),
        FakeLine("l3", None, "not transcribed", (40, 330)),
        FakeLine("l4", "Title", "Title", (600, 40), line_type="HeadingLine:title", region="MarginTextZone"),
        FakeLine("l5", "cafe\u0301 au lait", "café au lait", (40, 430)),
    ]


def simple_lines(prefix: str) -> list[FakeLine]:
    return [
        FakeLine(f"{prefix}a", "first line", "first line", (60, 60)),
        FakeLine(f"{prefix}b", "second one", "second one", (60, 200)),
    ]


def _save_exif_rotated(gray: np.ndarray, path: Path) -> None:
    """Store the page turned on its side, with EXIF orientation 6 saying how to turn it back upright."""
    stored = Image.fromarray(gray).rotate(90, expand=True)  # orientation 6 = turn 90 degrees clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, quality=95, exif=exif)


def make_pages(root: Path) -> Path:
    """Write the pages of the module docstring into ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    lines = doc1_p001_lines()
    Image.fromarray(draw_page(lines)).save(root / "doc1_p001.png")
    (root / "doc1_p001.xml").write_text(alto_xml("doc1_p001.png", lines), encoding="utf-8")

    lines = simple_lines("e")
    _save_exif_rotated(draw_page(lines), root / "doc1_p002.jpg")
    (root / "doc1_p002.xml").write_text(page_xml("doc1_p002.jpg", lines), encoding="utf-8")

    lines = simple_lines("s")
    deep = draw_page(lines).astype(np.uint16) * 257  # full 16-bit range
    Image.fromarray(deep).save(root / "doc2_p001.png")
    (root / "doc2_p001.xml").write_text(page_xml("doc2_p001.png", lines), encoding="utf-8")

    lines = simple_lines("t")
    gray = draw_page(lines)
    rgba = np.zeros((*gray.shape, 4), np.uint8)  # ink opaque, paper fully transparent: shows as white
    rgba[..., 3] = np.where(gray < 128, 255, 0)
    Image.fromarray(rgba, "RGBA").save(root / "doc2_p002.png")
    (root / "doc2_p002.xml").write_text(alto_xml("doc2_p002.png", lines), encoding="utf-8")

    lines = [
        *simple_lines("z"),
        FakeLine("flat", "no area", "no area", (60, 400), polygon=[(60, 400), (200, 400), (300, 400)]),
    ]
    Image.fromarray(draw_page(lines)).save(root / "doc3_p001.png")
    (root / "doc3_p001.xml").write_text(alto_xml("doc3_p001.png", lines), encoding="utf-8")

    lines = simple_lines("m")
    draw_page(lines)
    (root / "doc4_p001.xml").write_text(alto_xml("doc4_p001.png", lines), encoding="utf-8")

    (root / "broken_p001.xml").write_text('<?xml version="1.0"?>\n<alto><Layout><Page></Layout></alto>\n')
    return root
