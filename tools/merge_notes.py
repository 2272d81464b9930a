"""Folds a docs/notes-NAME.md written by a service into docs/API.md as one section."""
import sys

notes, title = sys.argv[1], sys.argv[2]
body = open(notes).read().split("\n", 1)[1]
api = open("docs/API.md").read()
section = "## " + title + "\n" + body.replace("\n### ", "\n#### ").replace("\n## ", "\n### ").rstrip() + "\n\n"
api = api.replace("## sextant-cli", section + "## sextant-cli", 1)
open("docs/API.md", "w").write(api)
