"""Writes a corpus of many short English documents from the Debian changelogs of this machine.

Every installed package ships /usr/share/doc/PACKAGE/changelog.Debian.gz; each release entry
in it (the bullet points between the "package (version) ...; urgency=..." line and the
" -- maintainer <email>  date" line) becomes one document, its lines joined. Entries of
fewer than --min-words words are dropped, duplicates (identical text) kept once. The
documents go to one UTF-8 file, separated by blank lines (what `--corpus FILE` reads), in a
fixed order (package name, then entry), so the same machine gives the same file.

    python benchmarks/debian_changelogs.py --out runs/corpora/changelogs.txt [--max-documents 30000]

The text is real maintainers' prose about software changes: short (a median of a few
sentences), full of package names and version numbers, unlike the built-in corpus of
standard-library docstrings.
"""

import argparse
import glob
import gzip
import os
import re
import statistics

HEADER = re.compile(r"^\S.*\(.*\).*;\s*urgency=", re.IGNORECASE)
TRAILER = re.compile(r"^ -- ")


def changelog_entries(path):
    """The text of each release entry of one changelog.Debian.gz, in file order."""
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as file:
        lines = file.read().splitlines()
    entries, current = [], None
    for line in lines:
        if HEADER.match(line):
            current = []
        elif TRAILER.match(line):
            if current:
                entries.append(" ".join(current))
            current = None
        elif current is not None and line.strip():
            current.append(line.strip())
    return entries


def build(max_documents, min_words):
    documents, seen = [], set()
    for path in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        for entry in changelog_entries(path):
            if len(entry.split()) >= min_words and entry not in seen:
                seen.add(entry)
                documents.append(entry)
                if max_documents and len(documents) >= max_documents:
                    return documents
    return documents


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the corpus file to write")
    parser.add_argument("--max-documents", type=int, default=30000, help="stop after this many documents (0: all)")
    parser.add_argument("--min-words", type=int, default=8, help="drop entries shorter than this")
    args = parser.parse_args()
    documents = build(args.max_documents, args.min_words)
    if not documents:
        raise SystemExit("no /usr/share/doc/*/changelog.Debian.gz entries found on this machine")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as file:
        file.write("\n\n".join(documents) + "\n")
    words = [len(d.split()) for d in documents]
    print(f"wrote {len(documents):,} documents, {sum(words):,} words (median {statistics.median(words):.0f} "
          f"words a document) to {args.out}")


if __name__ == "__main__":
    main()
