"""The command line run in-process, and a config written as YAML: shared by the CLI tests."""

import yaml

from kdlab.cli.main import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path
