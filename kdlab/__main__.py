from kdlab.cli.main import entry

entry()
