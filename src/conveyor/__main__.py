from conveyor.cli.main import app

app(prog_name="conveyor")
