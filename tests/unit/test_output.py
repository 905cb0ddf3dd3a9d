import io

from agentainer.cli.output import Output, printable


def test_control_characters_are_shown_not_sent_to_the_terminal():
    assert printable("a\x1b[2Jb\rc\x07\x9b\x7f") == "a\\x1b[2Jb\\x0dc\\x07\\x9b\\x7f"
    assert printable("line\n\ttabbed é") == "line\n\ttabbed é"


def test_lines_tables_and_errors_are_escaped():
    out, err = io.StringIO(), io.StringIO()
    output = Output(as_json=False, stdout=out, stderr=err)
    output.line("body: \x1b]0;owned\x07")
    output.table(("PATH",), [("/x\x1b[31m\nred",)])
    output.error("agent said \x1b[2J")
    assert "\x1b" not in out.getvalue() + err.getvalue()
    assert "/x\\x1b[31m\\nred" in out.getvalue()
