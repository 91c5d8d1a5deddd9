"""Checks that the generated dataflow documents are valid reStructuredText.

docutils parses each file with warnings treated as errors (halt level 2); any problem is
printed with its file and line, and the script exits 1.
"""
import sys
from pathlib import Path

import docutils.core
import docutils.utils

failed = False
files = sorted(Path(arg) for arg in sys.argv[1:])
for path in files:
    try:
        docutils.core.publish_doctree(
            path.read_text(encoding="utf-8"),
            source_path=str(path),
            settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": sys.stderr},
        )
    except docutils.utils.SystemMessage as error:
        print(f"{path}: {error}", file=sys.stderr)
        failed = True
print(f"{len(files)} documents checked, {'errors found' if failed else 'all valid'}")
sys.exit(1 if failed else 0)
