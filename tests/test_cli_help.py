"""`tfnas --help` and `tfnas <command> --help`: command-specific help, as a user runs it."""

import os
import subprocess
import sys

from absl import flags

from tfnas import cli, cli_help

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tfnas(*args):
    return subprocess.run([sys.executable, "-m", "tfnas.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, check=False)


def test_help_lists_the_commands():
    result = tfnas("--help")
    assert result.returncode == 0, result.stderr
    assert "Try --helpfull" not in result.stdout
    for command in cli_help.COMMANDS:
        assert f"\n  {command} " in result.stdout


def test_a_commands_help_shows_its_flags_only_with_examples():
    result = tfnas("race", "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("tfnas race: ") and "tfnas benchmark-search" in out
    assert "Examples:\n  tfnas race --table" in out
    assert "--warm_start_candidates (default: 500)" in out
    assert "--android_binary" not in out and "--config" not in out
    # The alias's help is the command's.
    assert tfnas("benchmark-search", "-h").stdout == out
    search = tfnas("search", "--help").stdout
    assert "--config" in search and "--set" in search and "--table" not in search


def test_help_of_an_unknown_command_is_an_error_naming_it():
    result = tfnas("serach", "--help")
    assert result.returncode == 2
    assert result.stderr.startswith("tfnas: unknown command 'serach'.")
    assert "Commands:" in result.stderr


def test_every_flag_of_tfnas_belongs_to_a_command():
    """A flag no command lists would be missing from every command's help."""
    listed = {name for _, names, _ in cli_help.COMMANDS.values() for name in names}
    ours = {flag.name for flag in flags.FLAGS.get_key_flags_for_module(cli)}
    assert "table" in ours and ours <= listed, sorted(ours - listed)
    assert listed <= set(flags.FLAGS), sorted(listed - set(flags.FLAGS))
