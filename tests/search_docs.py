"""Documents for the search tests: a folder of every supported format and every bad input, PDFs
written by hand (a real text layer), encrypted and scanned-like PDFs made with pypdf, and a tiny
random BERT (a real transformers folder) as the embedding model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def make_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    """A PDF whose pages hold ``pages`` as a real text layer (Helvetica, one line per line)."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    objects: list[bytes] = []
    page_ids = [4 + 2 * i for i in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{' '.join(f'{i} 0 R' for i in page_ids)}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i, text in enumerate(pages):
        lines = " ".join(f"({esc(line)}) '" for line in text.splitlines())
        stream = f"BT /F1 11 Tf 72 740 Td 14 TL {lines} ET".encode("latin-1")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >>"
                       f" /Contents {page_ids[i] + 1} 0 R >>".encode())
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info_id = None
    if title:
        objects.append(f"<< /Title ({esc(title)}) >>".encode())
        info_id = len(objects)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R" + (f" /Info {info_id} 0 R" if info_id else "") + " >>"
    out += f"trailer\n{trailer}\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def make_encrypted_pdf(path: Path, source: Path) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(source))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    with open(path, "wb") as f:
        writer.write(f)
    return path


def make_scanned_pdf(path: Path) -> Path:
    """Pages with no text layer, as a scanner without OCR makes them."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(612, 792)
    writer.add_blank_page(612, 792)
    with open(path, "wb") as f:
        writer.write(f)
    return path


GUIDE_MD = """# Kettle guide

How to use the electric kettle.

## Filling

Fill the kettle with fresh water up to the MAX line. Never fill it above the line.

## Descaling

Limescale builds up in hard water areas. Descale the kettle monthly with citric acid:
dissolve two spoons in water, boil, leave it for an hour, then rinse twice.
"""

SETUP_RST = """Garden pump
===========

The garden pump moves rainwater from the barrel to the beds.

Priming
-------

Before the first use, prime the pump: fill the housing with water and close the valve.
"""

PAGE_HTML = """<!doctype html>
<html><head><title>Bicycle care</title><style>.x{}</style></head>
<body>
<h1>Bicycle care</h1>
<p>Keep the chain clean.</p>
<h2>Tyres</h2>
<p>Inflate the tyres to the pressure printed on the sidewall &amp; check them weekly.</p>
<script>var ignored = "javascript text";</script>
</body></html>
"""

CODE_PY = '''def fibonacci(n):
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a
'''


def build_corpus(root: Path) -> Path:
    """A folder with every supported format and the bad inputs of the issue; returns it."""
    docs = root / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "guide.md").write_text(GUIDE_MD)
    (docs / "sub" / "pump.rst").write_text(SETUP_RST)
    (docs / "bike.html").write_text(PAGE_HTML)
    (docs / "notes.txt").write_text("Shopping list: flour, eggs, and saffron for the risotto.\n" * 3)
    (docs / "fib.py").write_text(CODE_PY)
    make_pdf(docs / "manual.pdf", ["Telescope manual\nAlign the finder scope in daylight.",
                                   "Collimation\nCollimate the primary mirror with a laser tool."],
             title="Telescope manual")
    make_encrypted_pdf(docs / "locked.pdf", docs / "manual.pdf")
    make_scanned_pdf(docs / "scan.pdf")
    (docs / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)))
    (docs / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    os.symlink(docs / "no-such-target.md", docs / "dangling.md")
    os.mkfifo(docs / "pipe.txt")
    (docs / ".hidden").mkdir()
    (docs / ".hidden" / "secret.md").write_text("# hidden\n")
    (docs / "image.png").write_bytes(b"\x89PNG\r\n")
    return docs


EXPECTED_PROBLEMS = {
    "locked.pdf": "encrypted PDF",
    "scan.pdf": "no text layer: needs OCR",
    "binary.txt": "not UTF-8 text",
    "latin1.txt": "not UTF-8 text",
    "dangling.md": "unreadable: broken link",
    "pipe.txt": "not a regular file",
}
GOOD_FILES = {"guide.md", "pump.rst", "bike.html", "notes.txt", "fib.py", "manual.pdf"}


def build_tiny_embedder(folder: Path, tokenizer_dir: Path) -> Path:
    """A tiny random BERT (a real transformers model folder) with the tests' tokenizer: vectors
    of no meaning, the same code path as all-MiniLM-L6-v2."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=260, pad_token_id=tokenizer.pad_token_id)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    for item in tokenizer_dir.iterdir():
        if item.is_file():
            shutil.copy(item, folder / item.name)
    return folder
