"""One module per `rrnx` sub-command. Each defines NAME, HELP, add_arguments(parser) and
run(args, overrides) -> int; rrnx.cli discovers them, so adding a command touches no other file."""
