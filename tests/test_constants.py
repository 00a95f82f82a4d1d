"""One source of truth: the frame rate and the audio format are written only in dystream/config.py."""

import ast
from pathlib import Path

from dystream.config import FRAMES_PER_SECOND, SAMPLE_RATE, SAMPLES_PER_FRAME

PACKAGE = Path(__file__).resolve().parent.parent / "dystream"
RATES = {FRAMES_PER_SECOND, SAMPLE_RATE, SAMPLES_PER_FRAME}
# Literals that equal one of the rates but mean something else: (file, source line).
NOT_RATES = {
    ("motion.py", 'Channel("pitch", math.radians(-25), math.radians(25), 0.0, math.radians(15)),'),  # degrees
    ("motion.py", 'Channel("roll", math.radians(-25), math.radians(25), 0.0, math.radians(15)),'),
}


def rate_literals(path: Path) -> list[str]:
    """Numeric literals (in code and in f-string expressions, not in comments or plain text) that
    equal a frame rate, sample rate or samples per frame."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and node.value in RATES:
            line = lines[node.lineno - 1].strip()
            if (path.name, line) not in NOT_RATES:
                found.append(f"{path}:{node.lineno}: {line}")
    return found


def test_no_rate_is_written_outside_the_config():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path != PACKAGE / "config.py"
             for hit in rate_literals(path)]
    assert found == [], "use dystream.config (or the model's cfg) instead of:\n" + "\n".join(found)


def test_the_check_finds_a_literal_rate_in_code_and_in_f_strings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(f"# {SAMPLE_RATE} in a comment is text\n"
                      f"def seconds(frames):\n    return frames / {FRAMES_PER_SECOND}\n\n\n"
                      f"def note(n):\n    return f'{{n / {SAMPLE_RATE}}} s, not {SAMPLES_PER_FRAME}'\n")
    assert [hit.split(":")[1] for hit in rate_literals(sample)] == ["3", "7"]
